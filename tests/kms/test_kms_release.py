from __future__ import annotations

import base64
import logging
import time
from pathlib import Path

import pytest

from tests.kms.conftest import MakeService
from tests.support import tiny_manifest
from trustserve.attestation import EvidenceProvider, Policy
from trustserve.crypto import hpke
from trustserve.crypto.keys import ServingKeySet
from trustserve.errors import ConfigError, Forbidden, NotFound
from trustserve.keyrelease.bundle import verify_bundle
from trustserve.keyrelease.protocol import Released, make_request, open_keys
from trustserve.kms.service import KmsService


def _honest(kms: KmsService, key_ids: list[str]) -> dict[str, str]:
    """The archive digests an honest requester holds: those the KMS recorded."""
    records = kms.state.model_keys()
    return {k: records[k]["digest"] for k in key_ids if k in records}


def _identity(kms: KmsService) -> bytes:
    return kms.state.identity_public_key()


def _release(kms: KmsService, provider: EvidenceProvider, key_ids: list[str]) -> Released:
    nonce = base64.b64decode(kms.challenge()["nonce"])
    private, request = make_request(nonce, provider, key_ids, _honest(kms, key_ids))
    return open_keys(private, nonce, kms.release(request.to_json()), _identity(kms))


def _audit_events(home: Path) -> list[str]:
    lines = (home / "kms" / "audit.jsonl").read_text().splitlines()
    return [line for line in lines if '"event":"refusal"' in line or '"event":"release"' in line]


def test_sim_evidence_gets_keys_under_a_policy_that_allows_sim(
    make_service: MakeService, sim: EvidenceProvider
) -> None:
    kms = make_service(Policy.development())
    key_id = kms.create_model_key(tiny_manifest("m", "1"))
    keys = _release(kms, sim, [key_id, "serving", "broker"])
    assert keys[key_id] == kms.model_key(key_id)
    assert keys["broker"] == kms.state.broker_key()[1]
    serving = ServingKeySet.from_bytes(keys["serving"])
    assert serving.current.key_id == kms.serving_public_keys()[0]["key_id"]
    assert serving.current.private_key is not None
    assert hpke.public_key_of(serving.current.private_key) == serving.current.public_key


def test_sim_evidence_is_refused_by_the_strict_policy_with_a_generic_403(
    make_service: MakeService, sim: EvidenceProvider, home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    kms = make_service(Policy.default())
    key_id = kms.create_model_key(tiny_manifest("m", "1"))
    with caplog.at_level(logging.WARNING, "trustserve.kms"), pytest.raises(Forbidden) as refused:
        _release(kms, sim, [key_id])
    assert str(refused.value) == "key release refused"
    assert "claim tee" in caplog.text and "allow_simulated" in caplog.text
    [event] = _audit_events(home)
    assert '"claim":"tee"' in event and '"event":"refusal"' in event


def test_a_nonce_is_good_once(make_service: MakeService, sim: EvidenceProvider) -> None:
    kms = make_service()
    key_id = kms.create_model_key(tiny_manifest("m", "1"))
    nonce = base64.b64decode(kms.challenge()["nonce"])
    private, request = make_request(nonce, sim, [key_id], _honest(kms, [key_id]))
    open_keys(private, nonce, kms.release(request), _identity(kms))
    with pytest.raises(Forbidden, match="key release refused"):
        kms.release(request)


def test_an_expired_or_unknown_nonce_is_refused(
    make_service: MakeService, sim: EvidenceProvider, home: Path
) -> None:
    now = [1_000_000.0]
    kms = make_service(clock=lambda: now[0], challenge_ttl=60.0)
    key_id = kms.create_model_key(tiny_manifest("m", "1"))
    nonce = base64.b64decode(kms.challenge()["nonce"])
    now[0] += 61
    _, request = make_request(nonce, sim, [key_id])
    with pytest.raises(Forbidden):
        kms.release(request)
    _, forged = make_request(hpke.generate_keypair()[1], sim, [key_id])
    with pytest.raises(Forbidden):
        kms.release(forged)
    events = _audit_events(home)
    assert '"detail":"expired"' in events[0]
    assert '"detail":"unknown or already used"' in events[1]


def test_evidence_bound_to_another_key_is_refused(
    make_service: MakeService, sim: EvidenceProvider, caplog: pytest.LogCaptureFixture
) -> None:
    kms = make_service()
    key_id = kms.create_model_key(tiny_manifest("m", "1"))
    nonce = base64.b64decode(kms.challenge()["nonce"])
    _, honest = make_request(nonce, sim, [key_id], _honest(kms, [key_id]))
    swapped = {**honest.to_json(), "public_key": base64.b64encode(hpke.generate_keypair()[1])}
    swapped["public_key"] = swapped["public_key"].decode()
    with caplog.at_level(logging.WARNING, "trustserve.kms"), pytest.raises(Forbidden):
        kms.release(swapped)
    assert "report_data" in caplog.text


def test_unknown_key_id_is_404(make_service: MakeService, sim: EvidenceProvider) -> None:
    kms = make_service()
    with pytest.raises(NotFound):
        _release(kms, sim, ["model-nope-1-00000000"])


def test_released_keys_open_only_with_the_ephemeral_key(
    make_service: MakeService, sim: EvidenceProvider
) -> None:
    kms = make_service()
    key_id = kms.create_model_key(tiny_manifest("m", "1"))
    nonce = base64.b64decode(kms.challenge()["nonce"])
    private, request = make_request(nonce, sim, [key_id], _honest(kms, [key_id]))
    answer = kms.release(request)
    with pytest.raises(Forbidden, match="not signed by the trusted KMS"):
        open_keys(hpke.generate_keypair()[0], nonce, answer, _identity(kms))
    assert open_keys(private, nonce, answer, _identity(kms))[key_id] == kms.model_key(key_id)


def test_rotation_keeps_the_previous_serving_key_until_it_expires(
    make_service: MakeService, sim: EvidenceProvider
) -> None:
    now = [time.time()]
    kms = make_service(clock=lambda: now[0], rotation_grace=3600.0)
    old = kms.serving_public_keys()[0]["key_id"]
    new = kms.rotate_serving_key()["key_id"]
    keys = ServingKeySet.from_bytes(_release(kms, sim, ["serving"])["serving"])
    assert [k.key_id for k in keys.keys] == [new, old]
    assert keys.find(old, now[0]).private_key is not None
    now[0] += 3601
    assert [k["key_id"] for k in kms.serving_public_keys()] == [new]


def test_attestation_bundle_verifies_and_binds_the_policy(
    make_service: MakeService, sim: EvidenceProvider, home: Path
) -> None:
    kms = make_service()
    bundle = kms.attestation_bundle(sim)
    checked = verify_bundle(bundle, Policy.development(home), kms.clock())
    assert checked.claims.tee == "sim"
    assert checked.keys[0]["key_id"] == kms.serving_public_keys()[0]["key_id"]
    assert checked.release_policy == kms.policy.to_json()
    lying = {**bundle, "release_policy": Policy.default().to_json()}
    with pytest.raises(Forbidden):
        verify_bundle(lying, Policy.development(home), kms.clock())


def test_the_answer_carries_the_configured_lease_and_a_key_lease_ends_with_the_key(
    make_service: MakeService, sim: EvidenceProvider
) -> None:
    kms = make_service(Policy.development(), key_lease=900.0)
    keys = _release(kms, sim, ["serving"])
    assert keys.lease == pytest.approx(900.0) and keys.issued_at <= time.time()
    assert keys.key_lease(keys.issued_at + 60) == pytest.approx(60)  # the key's end first
    assert keys.key_lease(keys.issued_at + 10_000) == pytest.approx(900.0)
    assert keys.key_lease(keys.issued_at - 5) == 0  # a key already past its end


@pytest.mark.parametrize("lease", [0.0, -1.0, float("nan"), 31 * 86400.0])
def test_an_unusable_key_lease_is_a_configuration_error(
    make_service: MakeService, lease: float
) -> None:
    with pytest.raises(ConfigError, match="key lease"):
        make_service(Policy.development(), key_lease=lease)
