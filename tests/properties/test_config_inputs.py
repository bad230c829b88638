"""Operator inputs: policy YAML, Redis and KMS URLs. Valid ones round trip exactly; any other
text is a ConfigError naming the problem (never a bare ValueError from a parser below)."""

from __future__ import annotations

import string

import yaml
from hypothesis import given
from hypothesis import strategies as st

from tests.properties.own_errors import json_values, refused_cleanly
from trustserve.attestation import Policy
from trustserve.attestation.policy import MeasurementSet
from trustserve.broker.redis_config import parse_redis_url
from trustserve.errors import ConfigError
from trustserve.keyrelease.client import parse_kms_url

hosts = st.from_regex(r"[a-z][a-z0-9-]{0,20}(\.[a-z][a-z0-9-]{0,10}){0,2}", fullmatch=True)
url_text = st.text(alphabet=string.printable + "é\x00[]@:/?#%", max_size=60)


def _config_error(call: object) -> None:
    error = refused_cleanly(call, client_fault=False)  # type: ignore[arg-type]
    assert error is None or isinstance(error, ConfigError), type(error)


policies = st.builds(
    Policy,
    allow_simulated=st.booleans(),
    allow_debug=st.booleans(),
    accepted_tcb_statuses=st.lists(
        st.sampled_from(["UpToDate", "SWHardeningNeeded"]), min_size=1, unique=True
    ).map(tuple),
    max_evidence_age_s=st.floats(1, 1e6),
    measurements=st.lists(st.just(MeasurementSet("sim")), max_size=3).map(tuple),
)


@given(policies)
def test_policy_round_trips_through_yaml(policy: Policy) -> None:
    assert Policy.from_yaml(yaml.safe_dump(policy.to_json())) == policy
    assert Policy.from_json(policy.to_json()) == policy


@given(st.text(max_size=200))
def test_any_text_is_a_policy_or_config_error(text: str) -> None:
    _config_error(lambda: Policy.from_yaml(text))


@given(
    st.dictionaries(
        st.sampled_from(list(Policy.development().to_json())) | st.text(max_size=6),
        json_values,
        max_size=6,
    )
)
def test_any_mapping_is_a_policy_or_config_error(raw: dict[str, object]) -> None:
    _config_error(lambda: Policy.from_yaml(yaml.safe_dump(raw)))


@given(st.sampled_from(["redis", "rediss"]), hosts, st.integers(1, 65535), st.integers(0, 15))
def test_redis_url_round_trip(scheme: str, host: str, port: int, db: int) -> None:
    config = parse_redis_url(f"{scheme}://{host}:{port}/{db}", env={})
    assert (config.host, config.port, config.db, config.tls) == (host, port, db, scheme == "rediss")


@given(url_text)
def test_any_text_is_a_redis_url_or_config_error(url: str) -> None:
    _config_error(lambda: parse_redis_url(url, env={}))
    _config_error(lambda: parse_redis_url("rediss://" + url, env={}))


@given(st.sampled_from(["https", "http"]), hosts, st.integers(1, 65535))
def test_kms_url_round_trip(scheme: str, host: str, port: int) -> None:
    assert parse_kms_url(f"{scheme}://{host}:{port}/") == f"{scheme}://{host}:{port}"


@given(url_text)
def test_any_text_is_a_kms_url_or_config_error(url: str) -> None:
    _config_error(lambda: parse_kms_url(url))
    _config_error(lambda: parse_kms_url("https://" + url))
