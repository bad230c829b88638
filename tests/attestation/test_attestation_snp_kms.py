"""Genuine SEV-SNP evidence through the KMS release path.

The only genuine report we have is bound to fixed report data, not to a KMS nonce:
this is what a host replaying an old genuine report to get keys looks like. The
KMS must refuse it for exactly that reason (claim ``report_data``), while the same
evidence passes every other rule of the KMS's policy. No SEV-SNP guest runs here,
so the "provider" replays the fixture's evidence (a test double for configfs-tsm).

Evidence that carries no VCEK is checked with the VCEK from the KMS's own cache
directory (``kms serve --vcek-dir``), through the same ``VerifierSources`` that
carries its DCAP collateral sources.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from snp_data import NOW, REPORT_DATA, snp_evidence, snp_policy, vcek_der

from tests.support import tiny_manifest
from trustserve.attestation import Evidence, VerifierSources, verify_evidence
from trustserve.crypto.rootkey import KeyFileProtector, create_key_file
from trustserve.errors import Forbidden
from trustserve.keyrelease.protocol import make_request
from trustserve.kms.service import KmsService


class ReplayingProvider:
    """Answers every request for evidence with the genuine, fixed report."""

    name = "sev-snp"

    def __init__(self, *, with_vcek: bool = True) -> None:
        self.with_vcek = with_vcek

    def make(self, report_data: bytes) -> Evidence:
        evidence = snp_evidence()
        if self.with_vcek:
            return evidence
        return Evidence("sev-snp", {"report": evidence.data["report"]})


def refused_claim(home: Path, kms: KmsService, provider: ReplayingProvider) -> str:
    """The claim the KMS's release path refuses ``provider``'s evidence for (from its audit)."""
    key_id = kms.create_model_key(tiny_manifest("m", "1"))
    nonce = base64.b64decode(kms.challenge()["nonce"])
    _, request = make_request(nonce, provider, [key_id])
    with pytest.raises(Forbidden):
        kms.release(request.to_json())
    events = (home / "kms" / "audit.jsonl").read_text().splitlines()
    [refusal] = [json.loads(line) for line in events if '"event":"refusal"' in line]
    assert refusal["evidence_kind"] == "sev-snp"
    claim: str = refusal["claim"]
    return claim


def kms_with(tmp_path: Path, sources: VerifierSources) -> KmsService:
    create_key_file(tmp_path / "kms.key")
    protector = KeyFileProtector(tmp_path / "kms.key")
    home = tmp_path / "home"
    return KmsService(home, protector, snp_policy(), sources=sources, clock=lambda: NOW)


def test_the_kms_refuses_a_genuine_report_not_bound_to_its_nonce(tmp_path: Path) -> None:
    create_key_file(tmp_path / "kms.key")
    policy = snp_policy()
    kms = KmsService(
        tmp_path / "home", KeyFileProtector(tmp_path / "kms.key"), policy, clock=lambda: NOW
    )
    key_id = kms.create_model_key(tiny_manifest("m", "1"))
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


def test_a_kms_with_a_vcek_cache_checks_evidence_that_brings_no_vcek(tmp_path: Path) -> None:
    cache = tmp_path / "vcek"
    cache.mkdir()
    (cache / "milan-chip.der").write_bytes(vcek_der())
    kms = kms_with(tmp_path, VerifierSources.configured(vcek_dir=cache))
    # The report's signature, chain, TCB and chip check out with the cached VCEK: only
    # the binding to the KMS's nonce is missing.
    assert refused_claim(tmp_path / "home", kms, ReplayingProvider(with_vcek=False)) == (
        "report_data"
    )


def test_a_kms_without_the_chip_s_vcek_refuses_evidence_that_brings_none(tmp_path: Path) -> None:
    empty = tmp_path / "vcek"
    empty.mkdir()
    kms = kms_with(tmp_path, VerifierSources.configured(vcek_dir=empty))
    assert refused_claim(tmp_path / "home", kms, ReplayingProvider(with_vcek=False)) == "vcek"


def test_kms_serve_refuses_to_start_with_a_vcek_source_that_cannot_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from trustserve.cli import main

    absent = tmp_path / "absent"
    assert main(["kms", "serve", "--home", str(tmp_path), "--vcek-dir", str(absent)]) == 2
    assert f"VCEK cache directory {absent} does not exist" in capsys.readouterr().err
    assert main(["kms", "serve", "--home", str(tmp_path), "--kds-url", "kds.example"]) == 2
    assert "KDS URL must be http(s)" in capsys.readouterr().err
