"""Genuine TDX and SGX quotes through the KMS's key release path, with its own collateral.

There is no TEE here, so the requester is a test double: ``RecordedQuote`` hands
the KMS a genuine quote recorded on real hardware (tests/data/attestation)
instead of making one over the KMS's nonce. The KMS itself is the real
``KmsService``, configured as an operator would (a collateral directory), with
its clock pinned to the time at which the fixtures' collateral is valid.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from attestation_data import (
    SGX_MRENCLAVE,
    SGX_TIME,
    TDX_MRTD,
    TDX_SET,
    TDX_TIME,
    collateral,
    collateral_dir,
    quote_evidence,
)

from tests.support import tiny_manifest
from trustserve.attestation import Evidence, Policy, VerifierSources, verify_evidence
from trustserve.crypto.rootkey import KeyFileProtector, create_key_file
from trustserve.errors import AttestationRefused, Forbidden
from trustserve.keyrelease.protocol import make_request
from trustserve.kms.service import KmsService

SGX_POLICY = (
    f'measurements: [{{tee: sgx, mrenclave: "{SGX_MRENCLAVE}"}}]\n'
    "accepted_tcb_statuses: [ConfigurationAndSWHardeningNeeded]\n"
    "accepted_advisories: [INTEL-SA-00289, INTEL-SA-00615]\n"
)
CASES = {
    "tdx": ("tdx_quote", f"measurements: [{TDX_SET}]\n", TDX_TIME),
    "sgx": ("sgx_quote", SGX_POLICY, SGX_TIME),
}


class RecordedQuote:
    """Stands in for TEE hardware: returns a recorded genuine quote, whatever it is asked."""

    def __init__(self, evidence: Evidence) -> None:
        self.name = evidence.kind
        self.evidence = evidence

    def make(self, report_data: bytes) -> Evidence:
        return self.evidence


def make_kms(tmp_path: Path, policy: Policy, now: float, sources: VerifierSources) -> KmsService:
    key_file = tmp_path / "kms.key"
    create_key_file(key_file)
    return KmsService(
        tmp_path / "home", KeyFileProtector(key_file), policy, clock=lambda: now, sources=sources
    )


def refused_claim(kms: KmsService, evidence: Evidence, key_id: str) -> str:
    """Ask ``kms`` for ``key_id`` with ``evidence``; the claim its audit log names as refused."""
    nonce = base64.b64decode(kms.challenge()["nonce"])
    _, request = make_request(nonce, RecordedQuote(evidence), [key_id])
    with pytest.raises(Forbidden, match="key release refused"):
        kms.release(request.to_json())
    last = json.loads((kms.state.dir / "audit.jsonl").read_text().splitlines()[-1])
    assert last["event"] == "refusal"
    return str(last["claim"])


@pytest.mark.parametrize("kind", ["tdx", "sgx"])
def test_kms_verifies_the_genuine_quote_and_refuses_it_for_its_report_data(
    kind: str, tmp_path: Path
) -> None:
    name, policy_yaml, now = CASES[kind]
    sources = VerifierSources.configured(collateral_dir=collateral_dir(tmp_path))
    kms = make_kms(tmp_path, Policy.from_yaml(policy_yaml), now, sources)
    key_id = kms.create_model_key(tiny_manifest("m", "1"))
    evidence = quote_evidence(kind, name)  # as a real provider sends it: no collateral

    # dcap-qvl accepted signature, collateral and TCB inside release; the nonce binding failed
    assert refused_claim(kms, evidence, key_id) == "report_data"

    # The same quote, bound to its own report data, passes every other rule of that KMS.
    own = verify_evidence(evidence, None, kms.policy, kms.clock(), kms.sources).report_data
    claims = verify_evidence(evidence, own, kms.policy, kms.clock(), kms.sources)
    assert claims.tee == kind


@pytest.mark.parametrize("kind", ["tdx", "sgx"])
def test_kms_with_a_mismatching_measurement_still_reaches_dcap_qvl(
    kind: str, tmp_path: Path
) -> None:
    """The measurement rule is checked too: with the report data right, the set decides."""
    name, policy_yaml, now = CASES[kind]
    other = policy_yaml.replace(TDX_MRTD, "00" * 48).replace(SGX_MRENCLAVE, "00" * 32)
    sources = VerifierSources.configured(collateral_dir=collateral_dir(tmp_path))
    kms = make_kms(tmp_path, Policy.from_yaml(other), now, sources)
    evidence = quote_evidence(kind, name)
    own = verify_evidence(evidence, None, Policy.from_yaml(policy_yaml), now, sources).report_data
    with pytest.raises(AttestationRefused) as info:
        verify_evidence(evidence, own, kms.policy, kms.clock(), kms.sources)
    assert info.value.claim == ("mrtd" if kind == "tdx" else "mrenclave")


@pytest.mark.parametrize("kind", ["tdx", "sgx"])
def test_kms_without_collateral_refuses_hardware_evidence(kind: str, tmp_path: Path) -> None:
    name, policy_yaml, now = CASES[kind]
    kms = make_kms(tmp_path, Policy.from_yaml(policy_yaml), now, VerifierSources())
    key_id = kms.create_model_key(tiny_manifest("m", "1"))
    evidence = quote_evidence(kind, name)
    evidence.data["collateral"] = collateral(name)  # the requester's own is never used
    assert refused_claim(kms, evidence, key_id) == "collateral"


def test_kms_refuses_once_its_collateral_file_has_expired(tmp_path: Path) -> None:
    name, policy_yaml, _ = CASES["tdx"]
    sources = VerifierSources.configured(collateral_dir=collateral_dir(tmp_path))
    expired = 1752969600.0  # 2025-07-20: after the TCB info's and the PCK CRL's nextUpdate
    kms = make_kms(tmp_path, Policy.from_yaml(policy_yaml), expired, sources)
    key_id = kms.create_model_key(tiny_manifest("m", "1"))
    assert refused_claim(kms, quote_evidence("tdx", name), key_id) == "collateral"
