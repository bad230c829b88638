"""Attack: a forged SEV-SNP report with a forged VCEK and a forged AMD hierarchy.

The attacker controls the host: it can make any report bytes, sign them with its
own P-384 key, issue itself a "VCEK" with AMD's extensions and names from its own
"ARK" and "ASK", and put that VCEK in the evidence, in the verifier's VCEK cache
directory (host disk) or behind a spoofed KDS (network). The report claims exactly
the measurement the policy allows. Every path must refuse it (claim ``chain``):
only AMD's pinned roots can vouch for a VCEK.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from tests.attestation.snp_data import (
    MEASUREMENT,
    NOW,
    REPORT_DATA,
    TCB,
    FakeAmd,
    b64,
    chip_id,
    patch,
    report_bytes,
    sign_report,
    snp_evidence,
    snp_policy,
    vcek_der,
)
from trustserve.attestation import Evidence, VerifierSources, verify_evidence
from trustserve.attestation.verifiers.snp.verifier import SnpOptions
from trustserve.errors import AttestationRefused


@pytest.fixture(scope="module")
def forged() -> tuple[bytes, bytes]:
    """A report with the allowed measurement and fresh report data, and its forged VCEK."""
    amd = FakeAmd.make("Milan")  # the genuine names: ARK-Milan, SEV-Milan
    vcek, key = amd.vcek(chip_id(), TCB)
    report = patch(report_bytes(), "measurement", bytes.fromhex(MEASUREMENT))
    return sign_report(report, key), vcek


def refused_claim(evidence: Evidence, options: SnpOptions | None = None) -> str:
    with pytest.raises(AttestationRefused) as info:
        verify_evidence(evidence, REPORT_DATA, snp_policy(), NOW, VerifierSources(snp=options))
    return info.value.claim


def test_a_forged_vcek_in_the_evidence_is_refused(forged: tuple[bytes, bytes]) -> None:
    report, vcek = forged
    assert refused_claim(snp_evidence(report, vcek)) == "chain"


def test_forged_ark_and_ask_in_the_evidence_change_nothing(forged: tuple[bytes, bytes]) -> None:
    report, vcek = forged
    evidence = snp_evidence(report, vcek)
    amd = FakeAmd.make("Milan")
    ark, ask = (cert.public_bytes(Encoding.DER) for cert in (amd.ark, amd.ask))
    data = {**evidence.data, "ark": b64(ark), "ask": b64(ask)}
    assert refused_claim(Evidence("sev-snp", data)) == "chain"


def test_a_forged_vcek_planted_in_the_vcek_cache_is_refused(
    forged: tuple[bytes, bytes], tmp_path: Path
) -> None:
    report, vcek = forged
    (tmp_path / "planted.der").write_bytes(vcek)
    evidence = Evidence("sev-snp", {"report": b64(report)})
    assert refused_claim(evidence, SnpOptions(vcek_dir=tmp_path)) == "chain"


@pytest.fixture
def spoofed_kds(forged: tuple[bytes, bytes]) -> Iterator[str]:
    """A KDS on the attacker's side of the network: answers every request with the forgery."""
    _, vcek = forged

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(vcek)))
            self.end_headers()
            self.wfile.write(vcek)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_forged_vcek_from_a_spoofed_kds_is_refused(
    forged: tuple[bytes, bytes], spoofed_kds: str
) -> None:
    report, _ = forged
    evidence = Evidence("sev-snp", {"report": b64(report)})
    assert refused_claim(evidence, SnpOptions(kds_url=spoofed_kds)) == "chain"


def test_a_report_re_signed_by_another_key_under_the_genuine_vcek_is_refused() -> None:
    """The genuine VCEK cannot vouch for a report signed by anyone else."""
    report = patch(report_bytes(), "host_data", b"\x01" * 32)
    resigned = sign_report(report, ec.generate_private_key(ec.SECP384R1()))
    assert refused_claim(snp_evidence(resigned, vcek_der())) == "signature"
