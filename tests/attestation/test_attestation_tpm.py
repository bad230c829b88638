"""TPM quotes from a real software TPM (swtpm, started by the ``swtpm`` fixture)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from tpm2_pytss import ESAPI
from tpm2_pytss.constants import ESYS_TR

from trustserve.attestation import Evidence, Policy, make_provider, verify_evidence
from trustserve.attestation.tpm import ak_public_pem
from trustserve.errors import AttestationRefused

PCRS = [0, 1, 2, 3, 4, 5, 6, 7, 23]  # a tpm set must pin the boot chain, 0-7


def quote(tcti: str, home: Path, nonce: bytes) -> Evidence:
    return make_provider("tpm", home, tcti=tcti, pcrs=PCRS).make(nonce)


def golden_policy(evidence: Evidence, *, pin_ak: bool = True) -> Policy:
    """What an operator writes after measuring a known-good machine: its AK and PCRs."""
    raw = {
        "measurements": [{"tee": "tpm", "pcrs": evidence.data["pcrs"]}],
        "tpm_ak_public_keys": [ak_public_pem(evidence)] if pin_ak else [],
    }
    return Policy.from_yaml(json.dumps(raw))


def extend(tcti: str, pcr: int) -> None:
    esapi = ESAPI(tcti)
    try:
        esapi.pcr_event(ESYS_TR.parse(f"pcr{pcr}"), os.urandom(32))
    finally:
        esapi.close()


def refused(evidence: Evidence, nonce: bytes, policy: Policy) -> AttestationRefused:
    with pytest.raises(AttestationRefused) as info:
        verify_evidence(evidence, nonce, policy, time.time())
    return info.value


def test_swtpm_quote_is_accepted(swtpm: str, tmp_path: Path) -> None:
    nonce = os.urandom(64)
    evidence = quote(swtpm, tmp_path, nonce)
    claims = verify_evidence(evidence, nonce, golden_policy(evidence), time.time())
    assert claims.tee == "tpm"
    assert claims.report_data == nonce
    assert set(claims.measurements) == {f"pcr{i}" for i in PCRS}


def test_swtpm_quote_for_a_wrong_nonce_is_refused(swtpm: str, tmp_path: Path) -> None:
    evidence = quote(swtpm, tmp_path, os.urandom(64))
    assert refused(evidence, os.urandom(64), golden_policy(evidence)).claim == "report_data"


def test_swtpm_quote_after_a_pcr_is_extended_is_refused(swtpm: str, tmp_path: Path) -> None:
    golden = quote(swtpm, tmp_path, os.urandom(64))
    policy = golden_policy(golden)
    extend(swtpm, 23)
    nonce = os.urandom(64)
    assert refused(quote(swtpm, tmp_path, nonce), nonce, policy).claim == "pcr23"


def test_pcr_values_that_do_not_match_the_quote_are_refused(swtpm: str, tmp_path: Path) -> None:
    nonce = os.urandom(64)
    evidence = quote(swtpm, tmp_path, nonce)
    policy = golden_policy(evidence)
    # The PCR changes after the quote; a provider that reported the new value would lie.
    extend(swtpm, 23)
    esapi = ESAPI(swtpm)
    _, _, digests = esapi.pcr_read("sha256:23")
    esapi.close()
    lying = Evidence(
        "tpm", {**evidence.data, "pcrs": {**evidence.data["pcrs"], "23": bytes(digests[0]).hex()}}
    )
    assert refused(lying, nonce, policy).claim == "pcrs"


def test_swtpm_quote_by_an_unpinned_key_is_refused(swtpm: str, tmp_path: Path) -> None:
    nonce = os.urandom(64)
    evidence = quote(swtpm, tmp_path, nonce)
    assert refused(evidence, nonce, golden_policy(evidence, pin_ak=False)).claim == "ak"


def test_swtpm_quote_with_a_forged_signature_is_refused(swtpm: str, tmp_path: Path) -> None:
    nonce = os.urandom(64)
    evidence = quote(swtpm, tmp_path, nonce)
    other = quote(swtpm, tmp_path, os.urandom(64))
    forged = Evidence("tpm", {**evidence.data, "signature": other.data["signature"]})
    assert refused(forged, nonce, golden_policy(evidence)).claim == "signature"


def test_the_attestation_key_is_the_same_for_every_quote(swtpm: str, tmp_path: Path) -> None:
    first = quote(swtpm, tmp_path, os.urandom(64))
    second = quote(swtpm, tmp_path, os.urandom(64))
    assert ak_public_pem(first) == ak_public_pem(second)
