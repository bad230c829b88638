"""Issue 11 item 9: a TPM "quote" signed by a pinned key that is not an attestation key.

A restricted signing key (an AK) only signs what the TPM itself generated; a
non-restricted signing key signs any digest (TPM2_Sign), so whoever can use it can
make up a TPMS_ATTEST with any PCR values and any nonce. The policy used to pin only
the AK's public key and read the key's attributes from the evidence: claiming
``restricted`` there was enough. The policy now pins the TPM object Name (nameAlg ||
hash of the whole public area), so the attributes are covered by the pin, and the
verifier checks them. All keys live in a real swtpm.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tpm2_pytss import ESAPI, TPM2B_PUBLIC, TPMS_ATTEST, TPMT_PUBLIC, TPMT_SIG_SCHEME
from tpm2_pytss.constants import ESYS_TR, TPM2_ALG, TPMA_OBJECT

from tests.swtpm import running_swtpm
from trustserve.attestation import Evidence, Policy, make_provider, verify_evidence
from trustserve.attestation.base import b64
from trustserve.attestation.verifiers.tpm.verifier import ak_name_of
from trustserve.errors import AttestationRefused, ConfigError

PCRS = [0, 1, 2, 3, 4, 5, 6, 7, 23]  # a tpm set must pin the boot chain, 0-7
SELECTION = "sha256:" + ",".join(map(str, PCRS))


@pytest.fixture
def tcti(tmp_path: Path) -> Iterator[str]:
    with running_swtpm(tmp_path) as tcti:
        yield tcti


def name_hex(public: Any) -> str:
    return bytes(public.get_name()).hex()


def forge(
    tcti: str, nonce: bytes, claimed_pcrs: dict[str, str], *, doctor: bool
) -> tuple[Evidence, Any]:
    """Evidence for ``claimed_pcrs`` made with a NON-restricted signing key of the TPM.

    The TPM quotes (TPM2_Quote works with any signing key), then the attacker edits
    the quoted PCR digest to the golden one and signs the edited structure with
    TPM2_Sign. With ``doctor`` the public area in the evidence claims ``restricted``.
    Returns the evidence and the key's true public area.
    """
    area = TPMT_PUBLIC.parse(
        "ecc256:ecdsa-sha256:null", "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|sign"
    )
    area.parameters.eccDetail.symmetric.algorithm = TPM2_ALG.NULL
    esapi = ESAPI(tcti)
    try:
        key, public, *_ = esapi.create_primary(None, TPM2B_PUBLIC(area), ESYS_TR.ENDORSEMENT)
        attest_blob, _ = esapi.quote(key, SELECTION, nonce)
        attest, _ = TPMS_ATTEST.unmarshal(bytes(attest_blob))
        golden = b"".join(bytes.fromhex(claimed_pcrs[i]) for i in sorted(claimed_pcrs, key=int))
        attest.attested.quote.pcrDigest = hashlib.sha256(golden).digest()
        forged = attest.marshal()
        scheme = TPMT_SIG_SCHEME(scheme=TPM2_ALG.ECDSA)
        scheme.details.any.hashAlg = TPM2_ALG.SHA256
        signature = esapi.sign(key, hashlib.sha256(forged).digest(), scheme)
        esapi.flush_context(key)
    finally:
        esapi.close()
    shown, _ = TPMT_PUBLIC.unmarshal(public.publicArea.marshal())
    if doctor:
        shown.objectAttributes |= TPMA_OBJECT.RESTRICTED
    return Evidence(
        "tpm",
        {
            "ak_public": b64(shown.marshal()),
            "quote": b64(forged),
            "signature": b64(signature.marshal()),
            "pcr_bank": "sha256",
            "pcrs": claimed_pcrs,
        },
    ), public.publicArea


def verdict(policy: dict[str, Any], evidence: Evidence, nonce: bytes) -> str:
    try:
        loaded = Policy.from_mapping(policy)
    except ConfigError as exc:
        return f"policy refused: {exc}"
    try:
        verify_evidence(evidence, nonce, loaded, time.time())
    except AttestationRefused as exc:
        return f"refused: {exc.claim}"
    return "accepted"


def golden(tcti: str, home: Path) -> tuple[Evidence, dict[str, Any]]:
    """The operator measures a known-good machine: its real AK's quote and the PCR values."""
    evidence = make_provider("tpm", home, tcti=tcti, pcrs=PCRS).make(os.urandom(64))
    return evidence, {"measurements": [{"tee": "tpm", "pcrs": evidence.data["pcrs"]}]}


def extend_pcr23(tcti: str) -> None:
    """The attacker's machine now runs other code than the golden one."""
    esapi = ESAPI(tcti)
    try:
        esapi.pcr_event(ESYS_TR.PCR23, os.urandom(32))
    finally:
        esapi.close()


def test_a_public_key_pin_no_longer_loads(tcti: str, tmp_path: Path) -> None:
    """The old pin (bare public key) accepted a forged quote; such a policy is now refused."""
    genuine, policy = golden(tcti, tmp_path)
    extend_pcr23(tcti)
    nonce = os.urandom(64)
    forged, public = forge(tcti, nonce, genuine.data["pcrs"], doctor=True)
    old_pin = {**policy, "tpm_ak_public_keys": [public.to_pem().decode()]}
    result = verdict(old_pin, forged, nonce)
    assert result.startswith("policy refused"), result
    assert "tpm_ak_names" in result


@pytest.mark.parametrize("doctor", [False, True], ids=["true-attributes", "claims-restricted"])
def test_a_quote_by_a_pinned_unrestricted_key_is_refused(
    tcti: str, tmp_path: Path, doctor: bool
) -> None:
    """Even when the operator pinned the Name of a non-restricted key by mistake."""
    genuine, policy = golden(tcti, tmp_path)
    extend_pcr23(tcti)
    nonce = os.urandom(64)
    forged, public = forge(tcti, nonce, genuine.data["pcrs"], doctor=doctor)
    pinned = {**policy, "tpm_ak_names": [name_hex(public)]}
    assert verdict(pinned, forged, nonce) == "refused: ak"


def test_a_quote_by_the_real_attestation_key_is_accepted(tcti: str, tmp_path: Path) -> None:
    genuine, policy = golden(tcti, tmp_path)
    nonce = os.urandom(64)
    fresh = make_provider("tpm", tmp_path, tcti=tcti, pcrs=PCRS).make(nonce)
    assert verdict({**policy, "tpm_ak_names": [ak_name_of(genuine)]}, fresh, nonce) == "accepted"
