"""TPM quotes from a real software TPM (swtpm, started by the ``swtpm`` fixture)."""

from __future__ import annotations

import base64
import json
import os
import time
from pathlib import Path

import pytest
from tpm2_pytss import ESAPI, TPMT_PUBLIC
from tpm2_pytss.constants import ESYS_TR

from trustserve.attestation import Evidence, Policy, make_provider, verify_evidence
from trustserve.attestation.registry import parse_options
from trustserve.attestation.verifiers.tpm.verifier import ak_name_of
from trustserve.errors import AttestationRefused, ConfigError

PCRS = [0, 1, 2, 3, 4, 5, 6, 7, 23]  # a tpm set must pin the boot chain, 0-7


def quote(tcti: str, home: Path, nonce: bytes) -> Evidence:
    return make_provider("tpm", home, tcti=tcti, pcrs=PCRS).make(nonce)


def golden_policy(evidence: Evidence, *, pin_ak: bool = True) -> Policy:
    """What an operator writes after measuring a known-good machine: its AK and PCRs."""
    raw = {
        "measurements": [{"tee": "tpm", "pcrs": evidence.data["pcrs"]}],
        "tpm_ak_names": [ak_name_of(evidence)] if pin_ak else [],
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
    assert ak_name_of(first) == ak_name_of(second)


def test_the_claims_name_the_pinned_ak(swtpm: str, tmp_path: Path) -> None:
    nonce = os.urandom(64)
    evidence = quote(swtpm, tmp_path, nonce)
    claims = verify_evidence(evidence, nonce, golden_policy(evidence), time.time())
    assert claims.extra["ak_name"] == ak_name_of(evidence)
    assert claims.extra["ak_name"].startswith("000b")  # SHA-256 Name of the default AK
    assert claims.extra["ak_trust"] == "pinned-name"


@pytest.mark.parametrize(
    ("names", "complaint"),
    [
        (["zz"], "not hex"),
        (["000b" + "00" * 31], "TPM Name"),  # one byte short
        (["0004" + "00" * 20], "TPM Name"),  # SHA-1 Names are not accepted
        ([7], "list of strings"),
    ],
)
def test_malformed_ak_names_are_configuration_errors(names: list[object], complaint: str) -> None:
    with pytest.raises(ConfigError, match=complaint):
        Policy.from_mapping({"tpm_ak_names": names})


def test_the_removed_public_key_pin_is_a_configuration_error(swtpm: str, tmp_path: Path) -> None:
    """A bare public key does not pin the key's attributes (tests/attacks shows why)."""
    evidence = quote(swtpm, tmp_path, os.urandom(64))
    ak, _ = TPMT_PUBLIC.unmarshal(base64.b64decode(evidence.data["ak_public"]))
    with pytest.raises(ConfigError, match="tpm_ak_names"):
        Policy.from_mapping({"tpm_ak_public_keys": [ak.to_pem().decode()]})


def test_provider_options_may_be_strings(swtpm: str, tmp_path: Path) -> None:
    """As ``--attestation-option KEY=VALUE`` gives them to serve, worker and the KMS."""
    options = parse_options([f"tcti={swtpm}", "pcrs=0,7", "bank=sha256"])
    evidence = make_provider("tpm", tmp_path, **options).make(os.urandom(64))
    assert set(evidence.data["pcrs"]) == {"0", "7"}


@pytest.mark.parametrize(
    ("pairs", "complaint"),
    [
        (["pcrs"], "KEY=VALUE"),
        (["colour=blue"], "unknown tpm option"),
        (["pcrs=0,x"], "comma-separated"),
        (["ak_handle=eighty-one"], "ak_handle must be an integer"),
        (["ak_handle=0x81000003", "ak_template_nv=0x01c10001"], "not both"),
    ],
)
def test_bad_provider_options_are_configuration_errors(
    tmp_path: Path, pairs: list[str], complaint: str
) -> None:
    with pytest.raises(ConfigError, match=complaint):
        make_provider("tpm", tmp_path, **parse_options(pairs))


def test_an_option_another_provider_does_not_take_is_a_configuration_error(
    tmp_path: Path,
) -> None:
    """``--attestation-option`` is generic: a typo for the sgx provider says so, no traceback."""
    with pytest.raises(ConfigError, match="attestation provider sgx: unusable options"):
        make_provider("sgx", tmp_path, **parse_options(["attestation_dri=/dev/attestation"]))
