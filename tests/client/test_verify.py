"""The client's checks of a bundle from a real KMS (simulated evidence: no TEE hardware here)."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.support import tiny_manifest
from trustserve.attestation import EvidenceProvider, Policy, make_provider
from trustserve.client.verify import ClientPolicy, default_version, verify
from trustserve.crypto.keys import sign_serving_keys
from trustserve.crypto.rootkey import KeyFileProtector, create_key_file
from trustserve.errors import (
    AttestationRefused,
    BadRequest,
    ConfigError,
    TooManyRequests,
    Unavailable,
)
from trustserve.keyrelease.bundle import encode_nonce, parse_nonce
from trustserve.kms.budgets import FreshEvidenceBudgets, FreshEvidenceOptions
from trustserve.kms.bundle import model_list
from trustserve.kms.peers import Requester
from trustserve.kms.service import KmsService


@pytest.fixture
def kms(tmp_path: Path) -> KmsService:
    key_file = tmp_path / "kms.key"
    create_key_file(key_file)
    home = tmp_path / "home"
    service = KmsService(home, KeyFileProtector(key_file), Policy.development(home))
    for model, version in (("digits", "1"), ("digits", "2"), ("digits", "10"), ("resnet", "b")):
        service.create_model_key(tiny_manifest(model, version))
    return service


@pytest.fixture
def sim(kms: KmsService) -> EvidenceProvider:
    return make_provider("sim", kms.home)


def policy(kms: KmsService, **options: Any) -> ClientPolicy:
    return ClientPolicy.development(kms.home, **options)


def test_a_bundle_made_for_the_clients_nonce_verifies(
    kms: KmsService, sim: EvidenceProvider
) -> None:
    nonce = os.urandom(32)
    bundle = kms.attestation_bundle(sim, nonce)
    assert bundle["nonce"] == encode_nonce(nonce)
    target = verify(bundle, policy(kms), nonce=nonce)
    assert target.key_id == kms.serving_public_keys()[0]["key_id"]
    with pytest.raises(AttestationRefused) as refused:
        verify(bundle, policy(kms), nonce=os.urandom(32))
    assert refused.value.claim == "nonce"


def test_the_evidence_binds_the_model_list(kms: KmsService, sim: EvidenceProvider) -> None:
    bundle = kms.attestation_bundle(sim)
    fewer = {**bundle, "models": bundle["models"][1:]}
    with pytest.raises(AttestationRefused) as refused:
        verify(fewer, policy(kms))
    assert refused.value.claim == "report_data"


def test_the_evidence_binds_the_key_list_even_one_the_kms_signed(
    kms: KmsService, sim: EvidenceProvider
) -> None:
    bundle = kms.attestation_bundle(sim)
    keys = kms.state.serving_keys(kms.clock(), private=False)
    other = sign_serving_keys(kms.state.identity_key(), keys, kms.clock() - 10)
    with pytest.raises(AttestationRefused) as refused:
        verify({**bundle, "serving_keys": other}, policy(kms))
    assert refused.value.claim == "report_data"


def test_a_list_signed_in_the_future_is_refused(kms: KmsService, sim: EvidenceProvider) -> None:
    bundle = kms.attestation_bundle(sim)
    issued = json.loads(base64.b64decode(bundle["serving_keys"]["payload"]))["issued_at"]
    with pytest.raises(AttestationRefused) as refused:
        verify(bundle, policy(kms), now=issued - 120)
    assert refused.value.claim == "issued_at"


def test_the_age_limit_is_the_clients(kms: KmsService, sim: EvidenceProvider) -> None:
    bundle = kms.attestation_bundle(sim)
    issued = json.loads(base64.b64decode(bundle["serving_keys"]["payload"]))["issued_at"]
    verify(bundle, policy(kms, max_bundle_age_s=30), now=issued + 20)
    with pytest.raises(AttestationRefused):
        verify(bundle, policy(kms, max_bundle_age_s=10), now=issued + 20)
    for bad in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ConfigError):
            policy(kms, max_bundle_age_s=bad)


def test_the_version_is_resolved_from_the_bundles_model_list(
    kms: KmsService, sim: EvidenceProvider
) -> None:
    target = verify(kms.attestation_bundle(sim), policy(kms))
    assert [(m["name"], m["version"]) for m in target.models] == [
        ("digits", "1"),
        ("digits", "10"),
        ("digits", "2"),
        ("resnet", "b"),
    ]
    assert target.resolve("digits", None) == "10"
    assert target.resolve("digits", "2") == "2"
    for model, version in (("digits", "3"), ("mnist", None)):
        with pytest.raises(AttestationRefused) as refused:
            target.resolve(model, version)
        assert refused.value.claim == "models"


def test_default_version_is_the_greatest_number_else_the_greatest_name() -> None:
    assert default_version(["9", "10", "2"]) == "10"
    assert default_version(["alpha", "beta"]) == "beta"
    assert default_version(["zeta", "1"]) == "1"


def test_model_list_carries_the_pinned_digest_or_null() -> None:
    records = {
        "k2": {"model": "m", "version": "2", "digest": "sha256:" + "ab" * 32},
        "k1": {"model": "m", "version": "1", "created_at": 0},
    }
    assert model_list(records) == [
        {"name": "m", "version": "1", "digest": None},
        {"name": "m", "version": "2", "digest": "sha256:" + "ab" * 32},
    ]


@pytest.mark.parametrize(
    "text", ["", "abc", "A" * 80, "!" * 43, base64.urlsafe_b64encode(os.urandom(31)).decode()]
)
def test_a_bad_nonce_is_a_400_naming_it(text: str) -> None:
    with pytest.raises(BadRequest, match="nonce"):
        parse_nonce(text)


def test_a_nonce_reads_with_or_without_padding() -> None:
    nonce = os.urandom(32)
    assert parse_nonce(encode_nonce(nonce)) == nonce
    assert parse_nonce(base64.urlsafe_b64encode(nonce).decode()) == nonce


def test_fresh_evidence_is_rate_limited_per_client_and_in_all() -> None:
    options = FreshEvidenceOptions(per_client_rate=0.001, per_client_burst=3, total_rate=2.5)
    budgets = FreshEvidenceBudgets(options, clock=lambda: 1000.0)
    for _ in range(3):
        budgets.take(Requester("a"))
    with pytest.raises(TooManyRequests):
        budgets.take(Requester("a"))
    budgets.take(Requester("b"))
    budgets.take(Requester("c"))
    with pytest.raises(Unavailable):  # 5 in all: the total's burst is spent
        budgets.take(Requester("d"))
    budgets.take(Requester("frontend", reserved=True))


def test_a_full_client_table_drops_only_idle_buckets() -> None:
    now = [1000.0]
    options = FreshEvidenceOptions(per_client_rate=1, per_client_burst=2, max_clients=2)
    budgets = FreshEvidenceBudgets(options, clock=lambda: now[0])
    for _ in range(2):
        budgets.take(Requester("spender"))
    budgets.take(Requester("other"))
    budgets.take(Requester("new"))  # the table is busy: "new" shares the overflow bucket
    with pytest.raises(TooManyRequests):
        budgets.take(Requester("spender"))  # its spending was not reset by newcomers
    now[0] += 10  # everyone idle and refilled: a newcomer takes an idle slot
    budgets.take(Requester("newer"))


def test_a_client_without_a_nonce_can_read_a_bundle_made_for_another(
    kms: KmsService, sim: EvidenceProvider
) -> None:
    """It relies on the signed issued_at then, as for the cached nonce-less bundle."""
    bundle = kms.attestation_bundle(sim, os.urandom(32))
    assert verify(bundle, policy(kms, send_nonce=False)).key_id
    with pytest.raises(AttestationRefused) as refused:
        verify({**bundle, "nonce": None}, policy(kms, send_nonce=False))
    assert refused.value.claim == "report_data"
