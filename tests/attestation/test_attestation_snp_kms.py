"""Genuine SEV-SNP evidence through the KMS release path.

The only genuine report we have is bound to fixed report data, not to a KMS nonce:
this is what a host replaying an old genuine report to get keys looks like. The
KMS must refuse it for exactly that reason (claim ``report_data``), while the same
evidence passes every other rule of the KMS's policy. No SEV-SNP guest runs here,
so the "provider" replays the fixture's evidence (a test double for configfs-tsm).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from snp_data import NOW, REPORT_DATA, snp_evidence, snp_policy

from trustserve.attestation import Evidence, verify_evidence
from trustserve.crypto.rootkey import KeyFileProtector, create_key_file
from trustserve.errors import Forbidden
from trustserve.kms.release import make_request
from trustserve.kms.service import KmsService


class ReplayingProvider:
    """Answers every request for evidence with the genuine, fixed report."""

    name = "sev-snp"

    def make(self, report_data: bytes) -> Evidence:
        return snp_evidence()


def test_the_kms_refuses_a_genuine_report_not_bound_to_its_nonce(tmp_path: Path) -> None:
    create_key_file(tmp_path / "kms.key")
    policy = snp_policy()
    kms = KmsService(
        tmp_path / "home", KeyFileProtector(tmp_path / "kms.key"), policy, clock=lambda: NOW
    )
    key_id = kms.create_model_key("m", "1")
    nonce = base64.b64decode(kms.challenge()["nonce"])
    _, request = make_request(nonce, ReplayingProvider(), [key_id])
    with pytest.raises(Forbidden):
        kms.release(request.to_json())
    events = (tmp_path / "home" / "kms" / "audit.jsonl").read_text().splitlines()
    [refusal] = [json.loads(line) for line in events if '"event":"refusal"' in line]
    assert refusal["claim"] == "report_data"
    assert refusal["evidence_kind"] == "sev-snp"
    # Bound to its own report data, the same evidence passes the KMS's policy.
    claims = verify_evidence(request.evidence, REPORT_DATA, policy, NOW)
    assert claims.tee == "sev-snp"
