"""Where the VCEK comes from: the evidence (configfs-tsm auxblob), a cache directory, a KDS.

What is real: the genuine report and VCEK, the provider's file protocol, a local
HTTP server standing in for AMD's KDS (no network here), and a closed local port
for an unreachable KDS. The configfs-tsm interface itself is a test double (a
directory imitating the kernel ABI; no SEV-SNP guest runs here).
"""

from __future__ import annotations

import ssl
import struct
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from snp_data import (
    NOW,
    REPORT_DATA,
    SNP,
    chip_id,
    report_bytes,
    snp_evidence,
    snp_policy,
    vcek_der,
)
from test_attestation_providers import FakeConfigfsTsm

from tests.support import free_port
from trustserve.attestation import Evidence, VerifierSources, make_provider, verify_evidence
from trustserve.attestation.formats.snp_report import parse_cert_table
from trustserve.attestation.verifiers.snp.verifier import SnpOptions, SnpVerifier
from trustserve.errors import AttestationRefused

VCEK_GUID = "63da758d-e664-4564-adc5-f4b93be8accd"
ASK_GUID = "4ab7b379-bbac-4fe4-a02f-05aef327c782"
ARK_GUID = "c0b406a4-a803-4952-9743-3fb6014cd0ae"


def cert_table(entries: list[tuple[str, bytes]]) -> bytes:
    """The GHCB certificate table: (GUID, offset, length) entries, a zero entry, the blobs."""
    header = 24 * (len(entries) + 1)
    table, blobs, offset = b"", b"", header
    for guid, blob in entries:
        table += uuid.UUID(guid).bytes_le + struct.pack("<II", offset, len(blob))
        blobs += blob
        offset += len(blob)
    return table + bytes(24) + blobs


def without_vcek() -> Evidence:
    return Evidence("sev-snp", {"report": snp_evidence().data["report"]})


# ---- the certificate table and the configfs-tsm provider ----


def test_the_certificate_table_yields_each_certificate() -> None:
    ask = (SNP / "ask_milan.pem").read_bytes()
    table = cert_table([(ARK_GUID, b"ark"), (ASK_GUID, ask), (VCEK_GUID, vcek_der())])
    assert parse_cert_table(table) == {"ark": b"ark", "ask": ask, "vcek": vcek_der()}


@pytest.mark.parametrize(
    ("table", "message"),
    [
        (uuid.uuid4().bytes_le + struct.pack("<II", 24, 0), "terminating"),
        (uuid.UUID(VCEK_GUID).bytes_le + struct.pack("<II", 48, 4096) + bytes(24), "outside"),
        (cert_table([(VCEK_GUID, b"a"), (VCEK_GUID, b"b")]), "twice"),
    ],
    ids=["no terminator", "entry outside", "vcek twice"],
)
def test_a_malformed_certificate_table_is_an_error(table: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_cert_table(table)


@pytest.fixture
def tsm_root(tmp_path: Path) -> Path:
    root = tmp_path / "tsm" / "report"
    root.mkdir(parents=True)
    return root


def test_configfs_tsm_evidence_carries_the_vcek_of_the_auxblob(
    tsm_root: Path, tmp_path: Path
) -> None:
    auxblob = cert_table([(VCEK_GUID, vcek_der()), (ASK_GUID, b"an ASK")])
    with FakeConfigfsTsm(tsm_root, "sev_guest", report_bytes(), auxblob) as fake:
        evidence = make_provider("sev-snp", tmp_path, root=tsm_root).make(REPORT_DATA)
    assert fake.inblobs == [REPORT_DATA]
    assert evidence.kind == "sev-snp"
    assert evidence.data["provider"] == "sev_guest"
    claims = verify_evidence(evidence, REPORT_DATA, snp_policy(), NOW)
    assert claims.report_data == REPORT_DATA


def test_without_an_auxblob_the_evidence_needs_a_verifier_source(
    tsm_root: Path, tmp_path: Path
) -> None:
    with FakeConfigfsTsm(tsm_root, "sev_guest", report_bytes()):
        evidence = make_provider("sev-snp", tmp_path, root=tsm_root).make(REPORT_DATA)
    assert "vcek" not in evidence.data
    cache = tmp_path / "vceks"
    cache.mkdir()
    (cache / "chip.der").write_bytes(vcek_der())
    options = SnpOptions(vcek_dir=cache)
    assert (
        verify_evidence(evidence, REPORT_DATA, snp_policy(), NOW, VerifierSources(snp=options)).tee
        == "sev-snp"
    )


def test_a_malformed_auxblob_is_ignored_not_fatal(tsm_root: Path, tmp_path: Path) -> None:
    with FakeConfigfsTsm(tsm_root, "sev_guest", report_bytes(), b"\x01" * 30):
        evidence = make_provider("sev-snp", tmp_path, root=tsm_root).make(REPORT_DATA)
    assert set(evidence.data) == {"report", "provider", "generation"}


# ---- the cache directory ----


def test_the_vcek_is_found_in_the_cache_directory_among_others(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a certificate")
    (tmp_path / "broken.der").write_bytes(b"garbage")
    (tmp_path / "ask.pem").write_bytes((SNP / "ask_milan.pem").read_bytes())
    (tmp_path / "chip.pem").write_text(ssl.DER_cert_to_PEM_cert(vcek_der()))
    claims = SnpVerifier(SnpOptions(vcek_dir=tmp_path)).verify(without_vcek(), REPORT_DATA, NOW)
    assert claims.measurements["chip_id"] == chip_id().hex()


def test_a_cache_without_the_chip_s_vcek_refuses(tmp_path: Path) -> None:
    (tmp_path / "ask.pem").write_bytes((SNP / "ask_milan.pem").read_bytes())
    with pytest.raises(AttestationRefused) as info:
        SnpVerifier(SnpOptions(vcek_dir=tmp_path)).verify(without_vcek(), REPORT_DATA, NOW)
    assert info.value.claim == "vcek"


# ---- the KDS ----


class FakeKds(BaseHTTPRequestHandler):
    """AMD's KDS VCEK endpoint, served locally: knows one chip at one TCB."""

    requests: list[str]

    def do_GET(self) -> None:
        self.requests.append(self.path)
        expected = f"/vcek/v1/Milan/{chip_id().hex()}?blSPL=3&teeSPL=0&snpSPL=8&ucodeSPL=115"
        body = vcek_der() if self.path == expected else b"not found"
        self.send_response(200 if self.path == expected else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def kds() -> Iterator[tuple[str, list[str]]]:
    requests: list[str] = []
    handler = type("Handler", (FakeKds,), {"requests": requests})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", requests
    finally:
        server.shutdown()
        server.server_close()


def test_the_vcek_is_fetched_from_the_kds_and_cached(
    kds: tuple[str, list[str]], tmp_path: Path
) -> None:
    url, requests = kds
    cache = tmp_path / "vceks"
    options = SnpOptions(products=("milan",), vcek_dir=cache, kds_url=url)
    assert SnpVerifier(options).verify(without_vcek(), REPORT_DATA, NOW).tee == "sev-snp"
    assert len(requests) == 1
    assert [p.read_bytes() for p in cache.iterdir()] == [vcek_der()]
    # The next verification uses the cache; the KDS is not asked again.
    assert SnpVerifier(options).verify(without_vcek(), REPORT_DATA, NOW).tee == "sev-snp"
    assert len(requests) == 1


def test_a_report_of_unknown_product_asks_the_kds_for_each_product_line(
    kds: tuple[str, list[str]],
) -> None:
    """Version 2 reports do not name their CPU; the KDS answers for the right product only."""
    url, requests = kds
    SnpVerifier(SnpOptions(products=("genoa", "milan"), kds_url=url)).verify(
        without_vcek(), REPORT_DATA, NOW
    )
    assert [path.split("/")[3] for path in requests] == ["Genoa", "Milan"]


def test_a_kds_without_the_chip_refuses(kds: tuple[str, list[str]]) -> None:
    url, _ = kds
    with pytest.raises(AttestationRefused) as info:
        SnpVerifier(SnpOptions(products=("turin",), kds_url=url)).verify(
            without_vcek(), REPORT_DATA, NOW
        )
    assert info.value.claim == "vcek"


def test_an_unreachable_kds_refuses(tmp_path: Path) -> None:
    """Fail closed: a KDS that cannot be reached accepts nothing (a closed local port)."""
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(AttestationRefused) as info:
        SnpVerifier(SnpOptions(kds_url=url, vcek_dir=tmp_path)).verify(
            without_vcek(), REPORT_DATA, NOW
        )
    assert info.value.claim == "vcek"
    assert "cannot fetch" in info.value.detail


@pytest.mark.parametrize(
    ("status", "body", "message"),
    [(500, b"busy", "answered 500"), (200, b"x" * 100_000, "too much")],
)
def test_a_misbehaving_kds_refuses(status: int, body: bytes, message: str) -> None:
    """Fail closed on an error answer, and read no more than a VCEK's size from the network."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        with pytest.raises(AttestationRefused, match=message) as info:
            SnpVerifier(SnpOptions(kds_url=url)).verify(without_vcek(), REPORT_DATA, NOW)
        assert info.value.claim == "vcek"
    finally:
        server.shutdown()
        server.server_close()
