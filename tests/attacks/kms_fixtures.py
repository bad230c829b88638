"""Shared pieces of the KMS attack tests: a genuine KMS and HTTPS servers made in the test."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import uvicorn
from starlette.types import ASGIApp

from tests.support import tiny_manifest, tiny_onnx
from trustserve import archive
from trustserve.attestation import EvidenceProvider, Policy, make_provider
from trustserve.crypto.model_encryption import encrypt_archive
from trustserve.crypto.rootkey import KeyFileProtector, create_key_file
from trustserve.keyrelease.trust import KmsTrust
from trustserve.kms.service import KmsService
from trustserve.tls import TlsFiles, issue_local_ca


@dataclass
class Genuine:
    """The real KMS (in-process) and what a requester is configured with."""

    home: Path
    service: KmsService
    sim: EvidenceProvider

    @property
    def identity(self) -> bytes:
        return self.service.state.identity_public_key()

    @property
    def trust(self) -> KmsTrust:
        return KmsTrust(self.identity)


def genuine_kms(root: Path) -> Genuine:
    """A KMS with the development policy (sim evidence: no TEE hardware can run here)."""
    home = root / "home"
    key = root / "kms.key"
    create_key_file(key)
    service = KmsService(home, KeyFileProtector(key), Policy.development(home))
    return Genuine(home, service, make_provider("sim", home))


def tiny_encrypted(genuine: Genuine) -> archive.ModelArchive:
    """The tiny model's archive, encrypted under a key ``genuine`` provisioned for it."""
    manifest = tiny_manifest()
    key_id, data_key = genuine.service.provision_model_key(manifest)
    return archive.parse(encrypt_archive(manifest, tiny_onnx(), data_key, key_id))


@contextmanager
def https_server(app: ASGIApp, tls: TlsFiles) -> Iterator[str]:
    """``app`` over real TLS on 127.0.0.1 (uvicorn in a thread); yields its URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        ssl_certfile=str(tls.cert),
        ssl_keyfile=str(tls.key),
        log_level="warning",
        lifespan="off",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    try:
        yield f"https://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def throwaway_ca(directory: Path) -> TlsFiles:
    """A CA made for this test; the requester trusts it, as it trusts the host's CA file."""
    directory.mkdir(parents=True, exist_ok=True)
    return issue_local_ca(directory, ["127.0.0.1"])
