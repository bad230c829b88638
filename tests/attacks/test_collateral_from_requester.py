"""Issue 11 item 6: DCAP collateral chosen by the requester.

Before: ``verify_evidence`` (called by ``KmsService.release`` and by the client's
``verify_bundle``) used the collateral carried inside the evidence, so a
requester could pick the collateral (the TCB info, hence the TCB status) its
quote was judged by. Now collateral comes only from the verifier's own
configuration (a collateral directory and/or a PCCS); evidence collateral is
ignored.

The quotes and collateral are genuine (tests/data/attestation), verified at
their pinned times. The requester is a test double (no TEE here) that sends a
recorded quote.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from tests.attestation.attestation_data import (
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
from trustserve.keyrelease.bundle import verify_bundle
from trustserve.keyrelease.protocol import make_request
from trustserve.kms.bundle import make_bundle
from trustserve.kms.service import KmsService

POLICY = Policy.from_yaml(f"measurements: [{TDX_SET}]")


def tdx_with_its_own_collateral() -> Evidence:
    """The requester attaches collateral under which its quote verifies."""
    evidence = quote_evidence("tdx", "tdx_quote")
    evidence.data["collateral"] = collateral("tdx_quote")
    return evidence


class RecordedQuote:
    name = "tdx"

    def __init__(self, evidence: Evidence) -> None:
        self.evidence = evidence

    def make(self, report_data: bytes) -> Evidence:
        return self.evidence


def test_verify_evidence_ignores_collateral_inside_the_evidence() -> None:
    with pytest.raises(AttestationRefused) as refused:
        verify_evidence(tdx_with_its_own_collateral(), None, POLICY, TDX_TIME)
    assert refused.value.claim == "collateral"


def test_the_verifiers_directory_is_used_and_not_the_evidences(tmp_path: Path) -> None:
    """The KMS's directory has no collateral for this platform: the requester's cannot fill in."""
    only_sgx = collateral_dir(tmp_path, ("sgx_quote",))
    sources = VerifierSources.configured(collateral_dir=only_sgx)
    with pytest.raises(AttestationRefused) as refused:
        verify_evidence(tdx_with_its_own_collateral(), None, POLICY, TDX_TIME, sources)
    assert refused.value.claim == "collateral"
    assert "tdx-b0c06f000000-platform.json does not exist" in refused.value.detail


def kms(tmp_path: Path, sources: VerifierSources) -> KmsService:
    key_file = tmp_path / "kms.key"
    create_key_file(key_file)
    protector = KeyFileProtector(key_file)
    return KmsService(tmp_path / "home", protector, POLICY, clock=lambda: TDX_TIME, sources=sources)


def release_refusal(service: KmsService, evidence: Evidence) -> str:
    key_id = service.create_model_key(tiny_manifest("m", "1"))
    nonce = base64.b64decode(service.challenge()["nonce"])
    _, request = make_request(nonce, RecordedQuote(evidence), [key_id])
    with pytest.raises(Forbidden):
        service.release(request.to_json())
    last = json.loads((service.state.dir / "audit.jsonl").read_text().splitlines()[-1])
    return str(last["claim"])


def test_kms_release_judges_the_quote_by_its_own_collateral(tmp_path: Path) -> None:
    # A KMS without collateral for the platform refuses, whatever the requester attached.
    unconfigured = kms(tmp_path / "a", VerifierSources())
    assert release_refusal(unconfigured, tdx_with_its_own_collateral()) == "collateral"
    # Configured with the genuine collateral, the KMS verifies the quote (then finds it is
    # not bound to its nonce: the recorded quote was made for someone else).
    configured = VerifierSources.configured(collateral_dir=collateral_dir(tmp_path))
    assert release_refusal(kms(tmp_path / "b", configured), quote_evidence("tdx", "tdx_quote")) == (
        "report_data"
    )


def test_client_bundle_check_uses_the_clients_collateral_not_the_bundles(tmp_path: Path) -> None:
    bundle = make_bundle(
        bytes(32), tdx_with_its_own_collateral(), {"payload": "", "signature": ""}, {}
    )
    with pytest.raises(AttestationRefused) as refused:
        verify_bundle(bundle, POLICY, TDX_TIME)
    assert refused.value.claim == "collateral"
    own = VerifierSources.configured(collateral_dir=collateral_dir(tmp_path))
    with pytest.raises(AttestationRefused) as refused:
        verify_bundle(bundle, POLICY, TDX_TIME, own)
    assert refused.value.claim == "report_data"  # verified, but bound to another identity
