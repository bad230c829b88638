"""OHTTP key configs in the KMS-signed, attested key list (issue 24 item 2): each serving key
has a 1-byte key config id from the rotation counter, and a client trusts a config only
when the verified bundle holds it, naming its own serving key."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import pytest

from trustserve.attestation import EvidenceProvider, Policy, make_provider
from trustserve.client.verify import ClientPolicy, verify
from trustserve.crypto import hpke, ohttp
from trustserve.crypto.rootkey import KeyFileProtector, create_key_file
from trustserve.encoding import b64
from trustserve.errors import AttestationRefused
from trustserve.keyrelease.bundle import bundle_report_data, canonical
from trustserve.kms.bundle import make_bundle
from trustserve.kms.service import KmsService


@pytest.fixture
def kms(tmp_path: Path) -> KmsService:
    key_file = tmp_path / "kms.key"
    create_key_file(key_file)
    home = tmp_path / "home"
    return KmsService(home, KeyFileProtector(key_file), Policy.development(home))


@pytest.fixture
def sim(kms: KmsService) -> EvidenceProvider:
    return make_provider("sim", kms.home)


def policy(kms: KmsService) -> ClientPolicy:
    return ClientPolicy.development(kms.home)


def listed(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    keys: list[dict[str, Any]] = json.loads(base64.b64decode(bundle["serving_keys"]["payload"]))[
        "keys"
    ]
    return keys


def test_each_key_carries_its_config_and_rotation_moves_the_id(
    kms: KmsService,
    sim: EvidenceProvider,
) -> None:
    first = verify(kms.attestation_bundle(sim), policy(kms))
    assert first.ohttp_config == ohttp.KeyConfig(0, first.public_key)
    for _ in range(2):
        kms.rotate_serving_key()
    bundle = kms.attestation_bundle(sim)
    keys = listed(bundle)
    assert [k["ohttp_key_id"] for k in keys] == [2, 1]  # current, previous: never the same
    for k in keys:
        config = ohttp.KeyConfig.decode(base64.b64decode(k["ohttp_key_config"]))
        assert config == ohttp.KeyConfig(k["ohttp_key_id"], base64.b64decode(k["public_key"]))
    target = verify(bundle, policy(kms))
    assert [c.key_id for c in target.ohttp_configs] == [2, 1]
    released = kms.state.serving_keys(kms.clock())  # what a worker gets: the ids too
    assert [k.ohttp_key_id for k in released.keys] == [2, 1]
    assert released.find_ohttp(1, kms.clock()).key_id == keys[1]["key_id"]


def test_the_counter_wraps_at_256_and_a_state_without_it_still_has_distinct_ids(
    kms: KmsService,
) -> None:
    def set_rotation(state: dict[str, Any]) -> None:
        state["serving"][0]["rotation"] = 255

    kms.state.update(set_rotation)
    kms.rotate_serving_key()
    assert [k.ohttp_key_id for k in kms.state.serving_keys(kms.clock()).keys] == [0, 255]

    def forget(state: dict[str, Any]) -> None:  # as a KMS before issue 24 wrote it
        for entry in state["serving"]:
            entry.pop("rotation", None)

    kms.state.update(forget)
    assert [k.ohttp_key_id for k in kms.state.serving_keys(kms.clock()).keys] == [1, 0]
    kms.rotate_serving_key()
    assert [k.ohttp_key_id for k in kms.state.serving_keys(kms.clock()).keys] == [2, 1]


def test_a_caller_config_is_used_only_if_the_bundle_holds_it(
    kms: KmsService,
    sim: EvidenceProvider,
) -> None:
    target = verify(kms.attestation_bundle(sim), policy(kms))
    assert target.ohttp_config is not None
    assert target.attested_ohttp_config(None) == target.ohttp_config
    assert target.attested_ohttp_config(target.ohttp_config.encode()) == target.ohttp_config
    _, other = hpke.generate_keypair()
    for bad in (ohttp.KeyConfig(0, other).encode(), b"", b"\x00" * 41):
        with pytest.raises(AttestationRefused) as refused:
            target.attested_ohttp_config(bad)
        assert refused.value.claim == "ohttp_key_config"


def attested(kms: KmsService, sim: EvidenceProvider, keys: list[dict[str, Any]]) -> Any:
    """A bundle the KMS signed and attested, over ``keys`` (as a buggy KMS might list them)."""
    identity = kms.state.identity_key()
    public = identity.public_key().public_bytes_raw()
    payload = canonical({"issued_at": time.time(), "keys": keys})
    signed = {"payload": b64(payload), "signature": b64(identity.sign(payload))}
    policy_json = kms.policy.to_json()
    data = bundle_report_data(public, policy_json, payload, [], None)
    return make_bundle(public, sim.make(data), signed, policy_json, [])


def test_a_config_that_does_not_name_its_key_is_refused(
    kms: KmsService,
    sim: EvidenceProvider,
) -> None:
    key = listed(kms.attestation_bundle(sim))[0]
    _, other = hpke.generate_keypair()
    for change in (
        {"ohttp_key_config": b64(ohttp.KeyConfig(0, other).encode())},  # another key
        {"ohttp_key_id": 9},  # another id than the config's
        {"ohttp_key_config": b64(b"\x00\x00\x20")},  # malformed
    ):
        bundle = attested(kms, sim, [{**key, **change}])
        with pytest.raises(AttestationRefused) as refused:
            verify(bundle, policy(kms))
        assert refused.value.claim == "ohttp_key_config"
    legacy = {k: v for k, v in key.items() if not k.startswith("ohttp")}
    target = verify(attested(kms, sim, [legacy]), policy(kms))  # a KMS without OHTTP
    assert target.ohttp_config is None
    with pytest.raises(AttestationRefused):
        target.attested_ohttp_config(None)
