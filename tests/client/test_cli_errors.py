"""What ``trustserve predict`` and ``batch`` print when the server cannot be reached or
trusted: one line naming the cause and the fix, never a traceback (unless ``--debug``).

Run through the real entry point (``python -m trustserve.cli``) against a real TLS server
(Python's own HTTP server behind a certificate of a local CA, made per test) or none.
"""

from __future__ import annotations

import http.server
import os
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.support import free_port
from trustserve.tls import issue_local_ca

URL_DOWN = "https://localhost:{port}"


def cli(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "trustserve.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "TRUSTSERVE_HOME": str(home)},
    )


def one_error_line(out: subprocess.CompletedProcess[str]) -> str:
    """The single line the user reads (after any warning lines), checked to be alone."""
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr, out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("trustserve: error:")]
    assert len(errors) == 1, out.stderr
    others = [line for line in out.stderr.splitlines() if "WARNING" not in line]
    assert others == errors, out.stderr
    return errors[0]


@pytest.fixture
def x_npy(tmp_path: Path) -> Path:
    path = tmp_path / "x.npy"
    np.save(path, np.ones((1, 4), np.float32))
    return path


class TlsServer:
    def __init__(
        self, directory: Path, names: tuple[str, ...] = ("localhost", "127.0.0.1")
    ) -> None:
        self.tls = issue_local_ca(directory, hosts=list(names))
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.tls.cert, self.tls.key)
        self.server = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[TlsServer]:
    server = TlsServer(tmp_path / "server-tls")
    yield server
    server.close()


def test_a_server_that_is_down(tmp_path: Path, x_npy: Path) -> None:
    port = free_port()
    out = cli("predict", f"https://localhost:{port}", "tiny", str(x_npy), "--allow-simulated",
              home=tmp_path)  # fmt: skip
    line = one_error_line(out)
    assert f"nothing listens at localhost:{port}" in line and "is the server running" in line


def test_debug_shows_the_traceback(tmp_path: Path, x_npy: Path) -> None:
    out = cli("predict", f"https://localhost:{free_port()}", "tiny", str(x_npy), "--standard",
              "--debug", home=tmp_path)  # fmt: skip
    assert out.returncode == 2
    assert "Traceback" in out.stderr and "ConnectError" in out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith("trustserve: error: nothing listens")


def test_a_missing_ca_file_is_named(tmp_path: Path, x_npy: Path) -> None:
    missing = tmp_path / "no-such-ca.pem"
    out = cli("predict", "https://localhost:8080", "tiny", str(x_npy), "--standard",
              "--ca", str(missing), home=tmp_path)  # fmt: skip
    line = one_error_line(out)
    assert f"--ca {missing}: no such file" in line and "tls/ca.pem" in line


def test_a_ca_file_that_is_no_certificate(tmp_path: Path, x_npy: Path) -> None:
    not_a_cert = tmp_path / "notes.pem"
    not_a_cert.write_text("not a certificate\n")
    out = cli("predict", "https://localhost:8080", "tiny", str(x_npy), "--standard",
              "--ca", str(not_a_cert), home=tmp_path)  # fmt: skip
    assert f"--ca {not_a_cert} is not a PEM CA certificate" in one_error_line(out)


def test_the_wrong_ca(tls_server: TlsServer, tmp_path: Path, x_npy: Path) -> None:
    other = issue_local_ca(tmp_path / "other-ca")
    out = cli("predict", f"https://localhost:{tls_server.port}", "tiny", str(x_npy),
              "--standard", "--ca", str(other.ca), home=tmp_path)  # fmt: skip
    line = one_error_line(out)
    assert f"the TLS certificate of localhost:{tls_server.port} is not trusted" in line
    assert "pass --ca with the CA certificate that signed it" in line


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1"])
def test_a_name_the_certificate_does_not_name(host: str, tmp_path: Path, x_npy: Path) -> None:
    """A server whose certificate was made for another name (kms.internal), reached by
    a name or address of its own: a certificate mismatch, said so (not "unreachable")."""
    server = TlsServer(tmp_path / "kms-tls", names=("kms.internal",))
    try:
        out = cli("predict", f"https://{host}:{server.port}", "tiny", str(x_npy),
                  "--standard", "--ca", str(server.tls.ca), home=tmp_path)  # fmt: skip
    finally:
        server.close()
    line = one_error_line(out)
    assert (
        f"does not name the host name {host}" in line or f"does not name the address {host}" in line
    )
    assert "certificate mismatch" in line and "--cert/--key" in line


def test_http_instead_of_https(tls_server: TlsServer, tmp_path: Path, x_npy: Path) -> None:
    out = cli("predict", f"http://localhost:{tls_server.port}", "tiny", str(x_npy),
              "--standard", "--ca", str(tls_server.tls.ca), home=tmp_path)  # fmt: skip
    line = one_error_line(out)
    assert f"use https://localhost:{tls_server.port}" in line


def test_a_host_name_that_does_not_resolve(tmp_path: Path, x_npy: Path) -> None:
    """What docs/deploy.md's client step gives when run literally (.invalid never resolves)."""
    out = cli("predict", "https://serve.example.invalid:8080", "tiny", str(x_npy),
              "--allow-simulated", home=tmp_path)  # fmt: skip
    line = one_error_line(out)
    assert "cannot resolve the host name serve.example.invalid" in line


def test_batch_says_the_same_in_one_line(tmp_path: Path, x_npy: Path) -> None:
    port = free_port()
    out = cli("batch", f"https://localhost:{port}", "tiny", str(x_npy.parent), "-o",
              str(tmp_path / "out.jsonl"), "--allow-simulated", home=tmp_path)  # fmt: skip
    assert f"nothing listens at localhost:{port}" in one_error_line(out)


def test_a_kms_on_an_address_outside_its_certificate_is_a_mismatch(tmp_path: Path) -> None:
    """docs/deploy.md step 4 against a KMS whose certificate names kms.internal only:
    not "unreachable", a certificate mismatch, and the way out (--cert/--key)."""
    from tests.support import write_tiny

    server = TlsServer(tmp_path / "kms-tls", names=("kms.internal",))
    token = tmp_path / "admin.token"
    token.write_text("not-used-the-connection-fails-first\n")
    try:
        out = cli("model", "encrypt", str(write_tiny(tmp_path)), "-o", str(tmp_path / "e.tsm"),
                  "--kms", f"https://127.0.0.1:{server.port}", "--ca", str(server.tls.ca),
                  "--token-file", str(token), home=tmp_path)  # fmt: skip
    finally:
        server.close()
    line = one_error_line(out)
    assert "unreachable" not in line
    assert "certificate mismatch" in line and "--cert/--key for a KMS" in line
