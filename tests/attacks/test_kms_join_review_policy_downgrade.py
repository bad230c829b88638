"""Attack: the host of a joining replica weakens the policies that replica will enforce.

The joiner is genuine (attested code, evidence the donor's peer policy admits), but its
command line, and the policy files it names, come from the host, which is untrusted. The
host starts it with ``--peer-policy`` admitting SIMULATED evidence of any key (or with a
release policy such as ``--allow-sim-any``). The donor checked only the joiner's code,
so it handed over the root key; from then on the joiner gave the root key (or every
model key, by release) to any process that signs sim evidence with a key of its own.
So the holder of the root key can be no weaker than the donor: the joiner's evidence
binds the release and peer policies it will enforce, and the donor refuses (and audits)
a joiner whose policies admit anything its own do not.

In process, as in ``test_kms_join_forged_answer``: the donor is a real ``KmsService``
with the real ``Joins``; the joiner runs the real ``_join_at`` against it.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import pytest

from tests.attacks.join_fixtures import service, sim_policy
from tests.attacks.test_kms_join_forged_answer import Relay
from trustserve.attestation import Policy, VerifierSources, make_provider
from trustserve.crypto import hpke
from trustserve.crypto.rootkey import KeyFileProtector, create_key_file
from trustserve.encoding import b64, unb64
from trustserve.errors import BadRequest, Forbidden
from trustserve.kms import join
from trustserve.kms.service import KmsService

__all__ = ["service"]  # the fixture


@pytest.fixture
def strict(tmp_path: Path, service: KmsService) -> Policy:
    """The deployment's peer policy: the donor's and the genuine joiner's sim keys."""
    return sim_policy(service.home, tmp_path / "joiner")


def _refusals(service: KmsService) -> list[str]:
    lines = (service.state.dir / "audit.jsonl").read_text().splitlines()
    return [e["claim"] for e in map(json.loads, lines) if e["event"] == "replica-join-refused"]


def _genuine_join(
    service: KmsService, strict: Policy, peer: Policy, release: Policy, tmp_path: Path
) -> join.Joined:
    relay = Relay(service, forge=False)
    relay.policy = strict  # what the donor enforces
    provider = make_provider("sim", tmp_path / "joiner")  # admitted by the donor
    return join._join_at(relay, peer, provider, VerifierSources(), release)  # type: ignore[arg-type]


def test_a_joiner_whose_host_weakened_its_peer_policy_gets_no_root_key(
    service: KmsService, strict: Policy, tmp_path: Path
) -> None:
    weak = Policy.development(None)  # simulated evidence of ANY platform key
    with pytest.raises(Forbidden, match="replica join refused"):
        _genuine_join(service, strict, weak, service.policy, tmp_path)
    assert _refusals(service) == ["joiner_peer_policy.sim_platform_keys"]


def test_a_joiner_whose_host_weakened_its_release_policy_gets_no_root_key(
    service: KmsService, strict: Policy, tmp_path: Path
) -> None:
    weak = Policy.development(None)  # would release model keys to any sim evidence
    with pytest.raises(Forbidden, match="replica join refused"):
        _genuine_join(service, strict, strict, weak, tmp_path)
    assert _refusals(service) == ["joiner_release_policy.sim_platform_keys"]


def test_a_joiner_as_strict_as_the_donor_still_joins(
    service: KmsService, strict: Policy, tmp_path: Path
) -> None:
    narrower = replace(strict, max_evidence_age_s=strict.max_evidence_age_s / 2)
    joined = _genuine_join(service, strict, narrower, service.policy, tmp_path)
    assert joined.identity == service.state.identity_public_key()
    assert _refusals(service) == []


def test_a_join_request_without_the_joiner_s_policies_is_a_400(
    service: KmsService, strict: Policy
) -> None:
    body = {
        "nonce": b64(unb64(service.challenge()["nonce"], "nonce")),
        "public_key": b64(hpke.generate_keypair()[1]),
        "evidence": {"kind": "sim", "data": {}},
        "release_policy": service.policy.to_json(),
        "peer_policy": {"allow_everything": True},
    }
    with pytest.raises(BadRequest, match=r"peer_policy .*unknown policy key"):
        join.Joins(service, strict).grant(body, "127.0.0.9")
    with pytest.raises(BadRequest, match=r"release_policy .*must be a mapping"):
        join.Joins(service, strict).grant({**body, "release_policy": None}, "127.0.0.9")


def test_a_joiner_may_not_name_code_where_the_donor_names_none(tmp_path: Path) -> None:
    """A client with no measurements leaves the choice of code to the KMS; a KMS with none
    releases to no code at all, so a joiner naming some (the host's own TDX image) admits
    more than it does."""
    key_file = tmp_path / "operator.key"
    create_key_file(key_file)
    home = tmp_path / "kms0"
    donor = KmsService(home, KeyFileProtector(key_file), Policy.default())
    strict = sim_policy(home, tmp_path / "joiner")
    hosts_image = {
        "tee": "tdx",
        **{k: os.urandom(48).hex() for k in ("mrtd", "rtmr1", "rtmr2", "rtmr3")},
    }
    weak = Policy.from_mapping({"measurements": [hosts_image]})
    with pytest.raises(Forbidden, match="replica join refused"):
        _genuine_join(donor, strict, strict, weak, tmp_path)
    assert _refusals(donor) == ["joiner_release_policy.measurements"]
