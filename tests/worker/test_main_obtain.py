"""A worker started alongside its KMS (``serve`` starts both at once, for a faster cold start)
waits for the KMS to listen, but only for that: a refusal is final at once, and every
attempt is a whole attested release (``worker.main.obtain``). Real KMS over real TLS."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import uvicorn

from tests.kms.conftest import MakeService
from tests.support import tiny_manifest
from trustserve import archive
from trustserve.attestation import Policy
from trustserve.errors import Forbidden, Unavailable
from trustserve.keyrelease.trust import KmsTrust
from trustserve.kms.app import create_app
from trustserve.kms.service import KmsService
from trustserve.kms.tools import encrypt_model_file
from trustserve.tls import TlsFiles, issue_local_ca
from trustserve.worker.keys import KeyRing, key_ring
from trustserve.worker.main import obtain


@contextmanager
def _late_kms(
    service: KmsService, home: Path, tls: TlsFiles, delay: float
) -> Iterator[tuple[str, uvicorn.Server]]:
    """The KMS on a bound port that starts listening only after ``delay`` seconds (until
    then a connection is refused, as while ``serve`` is still starting its KMS)."""
    from trustserve.attestation import make_provider

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        create_app(service, make_provider("sim", home)),
        ssl_certfile=str(tls.cert),
        ssl_keyfile=str(tls.key),
        log_level="warning",
        lifespan="off",
    )
    server = uvicorn.Server(config)

    def run() -> None:
        time.sleep(delay)
        server.run(sockets=[sock])

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{port}", server
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def _worker_keys(url: str, service: KmsService, tls: TlsFiles, home: Path) -> KeyRing:
    return key_ring(url, home, "sim", tls.ca, KmsTrust(service.state.identity_public_key()))


def _encrypted(tmp_path: Path, service: KmsService) -> tuple[archive.ModelArchive, bytes]:
    model = os.urandom(200_000)
    plain, enc = tmp_path / "plain.tsm", tmp_path / "enc.tsm"
    plain.write_bytes(archive.pack(tiny_manifest("m", "1"), model))
    encrypt_model_file(plain, enc, service)
    return archive.load(enc), model


def test_worker_gets_its_model_from_a_kms_that_starts_late(
    make_service: MakeService, home: Path, tmp_path: Path
) -> None:
    service = make_service(Policy.development(home))
    held, model = _encrypted(tmp_path, service)
    tls = issue_local_ca(tmp_path / "tls", ["127.0.0.1"])
    with _late_kms(service, home, tls, delay=1.0) as (url, _):
        keys = _worker_keys(url, service, tls, home)
        with pytest.raises(Unavailable):  # without a wait: the KMS is not there yet
            obtain(keys, held, 0)
        started = time.monotonic()
        assert obtain(keys, held, 20) == model
        assert time.monotonic() - started < 15
        assert keys.serving is not None and keys.broker is not None


def test_a_refusal_is_not_retried(make_service: MakeService, home: Path, tmp_path: Path) -> None:
    service = make_service(Policy.development(home))
    held, _ = _encrypted(tmp_path, service)
    service.policy = Policy.default()  # admits no sim evidence: this worker is refused
    tls = issue_local_ca(tmp_path / "tls", ["127.0.0.1"])
    with _late_kms(service, home, tls, delay=0.0) as (url, server):
        keys = _worker_keys(url, service, tls, home)
        deadline = time.monotonic() + 10
        while not server.started:
            assert time.monotonic() < deadline, "KMS did not start"
            time.sleep(0.02)
        started = time.monotonic()
        with pytest.raises(Forbidden):
            obtain(keys, held, 30)
        assert time.monotonic() - started < 5  # refused at once, not asked again for 30 s
