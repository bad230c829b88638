"""Evidence JSON of every kind: a refusal is AttestationRefused or BadRequest, never a crash.

Random evidence data goes through the real verifier of each kind (sim, tpm, sgx, tdx,
sev-snp) with a policy that admits that kind; nothing here is genuine, so nothing may pass.
"""

from __future__ import annotations

import base64
import json
import os
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.properties.own_errors import json_values, refused_cleanly
from trustserve.attestation import Evidence, Policy, make_provider, verify_evidence
from trustserve.attestation.policy import MeasurementSet

KINDS = ["sim", "tpm", "sgx", "tdx", "sev-snp"]
NOW = 1_800_000_000.0
FIELDS = [
    "quote",
    "report",
    "statement",
    "signature",
    "issued_at",
    "attest",
    "public_key",
    "ak_certificate",
    "report_data",
    "vcek",
]


def _policy(kind: str) -> Policy:
    return Policy(allow_simulated=True, measurements=(MeasurementSet(kind),))


blobs = st.binary(max_size=200).map(lambda b: base64.b64encode(b).decode())
field_values = json_values | blobs | st.floats() | st.integers()


@pytest.mark.parametrize("kind", KINDS)
@given(
    data=st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=8), field_values, max_size=6)
)
def test_random_evidence_is_refused_cleanly(kind: str, data: dict[str, object]) -> None:
    evidence = Evidence(kind, data)
    error = refused_cleanly(lambda: verify_evidence(evidence, os.urandom(64), _policy(kind), NOW))
    assert error is not None, "random evidence was accepted"


@given(json_values)
def test_any_json_is_evidence_or_bad_request(value: object) -> None:
    refused_cleanly(lambda: Evidence.from_json(value))


@given(st.text(max_size=30), st.dictionaries(st.text(max_size=8), json_values, max_size=4))
def test_evidence_json_round_trip(kind: str, data: dict[str, object]) -> None:
    evidence = Evidence(kind, data)
    assert Evidence.from_json(json.loads(json.dumps(evidence.to_json()))) == evidence


@given(st.data())
def test_genuine_sim_evidence_damaged_is_refused_cleanly(
    sim_home: tuple[Path, object], data: st.DataObject
) -> None:
    """Real sim evidence with one field replaced by any JSON value is refused, never a crash."""
    home, evidence = sim_home
    assert isinstance(evidence, Evidence)
    policy = Policy.development(home)
    key = data.draw(st.sampled_from(sorted(evidence.data)))
    broken = Evidence("sim", {**evidence.data, key: data.draw(field_values)})
    error = refused_cleanly(lambda: verify_evidence(broken, REPORT_DATA, policy, time.time()))
    assert error is not None or broken.data[key] == evidence.data[key]


REPORT_DATA = bytes(range(64))


@pytest.fixture(scope="module")
def sim_home(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Evidence]:
    home = tmp_path_factory.mktemp("sim-home")
    evidence = make_provider("sim", home).make(REPORT_DATA)
    verify_evidence(evidence, REPORT_DATA, Policy.development(home), time.time())  # undamaged: ok
    return home, evidence
