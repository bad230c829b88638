"""Attack: a fake KMS (the host controls the network and the TLS CA file) hands out keys.

The fake is a real HTTPS server made here, with a certificate from the CA the
requester trusts (as an attacker on the host can arrange: the CA file lives on
the untrusted host) and its own Ed25519 identity key. It hands a worker a broker
key of its choice, replays a genuine answer, or relays a genuine answer made for
another nonce. Every one is refused: a requester believes only answers signed by
the KMS identity it was configured with, over its own nonce and ephemeral key.
"""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.attacks.kms_fixtures import Genuine, genuine_kms, https_server, throwaway_ca
from tests.support import tiny_manifest, tiny_onnx
from trustserve import archive
from trustserve.encoding import b64
from trustserve.errors import ConfigError, Forbidden
from trustserve.frontend.keys import FrontendKeys
from trustserve.keyrelease.client import KmsClient
from trustserve.keyrelease.protocol import BROKER, ReleaseRequest, release_report_data
from trustserve.keyrelease.trust import KmsTrust
from trustserve.kms.release import seal_keys
from trustserve.kms.tools import encrypt_model_file
from trustserve.worker.main import EXIT_UNSERVABLE


@dataclass
class FakeKms:
    """What the fake answers: ``forge`` (its own keys, signed by its own identity),
    ``unsigned`` (the same, no signature), ``record`` (relays to the genuine KMS and
    keeps the answer), ``replay`` (the kept answer), ``other-nonce`` (a genuine
    answer for the requester's key but a nonce the fake chose)."""

    genuine: Genuine
    mode: str = "forge"
    chosen_broker_key: bytes = field(default_factory=lambda: os.urandom(32))
    identity: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)
    recorded: dict[str, Any] | None = None
    served: int = 0

    def app(self) -> Starlette:
        async def challenge(request: Request) -> JSONResponse:
            if self.mode in ("forge", "unsigned"):
                return JSONResponse({"nonce": b64(os.urandom(32)), "expires_at": time.time() + 60})
            return JSONResponse(self.genuine.service.challenge())

        async def release(request: Request) -> JSONResponse:
            body = await request.json()
            self.served += 1
            return JSONResponse(await asyncio.to_thread(self.answer, body))

        return Starlette(
            routes=[
                Route("/v1/challenge", challenge, methods=["POST"]),
                Route("/v1/release", release, methods=["POST"]),
            ]
        )

    def answer(self, body: dict[str, Any]) -> dict[str, Any]:
        req = ReleaseRequest.from_json(body)
        if self.mode in ("forge", "unsigned"):
            keys = {
                k: self.chosen_broker_key if k == BROKER else os.urandom(32) for k in req.key_ids
            }
            answer = seal_keys(self.identity, req.public_key, req.nonce, keys, time.time())
            if self.mode == "unsigned":
                del answer["signature"]
            return answer
        if self.mode == "record":
            self.recorded = self.genuine.service.release(body)
            return self.recorded
        if self.mode == "replay":
            assert self.recorded is not None
            return self.recorded
        assert self.mode == "other-nonce"
        kms = self.genuine.service
        nonce = base64.b64decode(kms.challenge()["nonce"])
        data = release_report_data(nonce, req.public_key, req.key_ids, req.archives)
        evidence = self.genuine.sim.make(data)  # sim evidence: anyone can make it
        return kms.release(ReleaseRequest(nonce, req.public_key, evidence, req.key_ids))


@dataclass
class Setup:
    genuine: Genuine
    fake: FakeKms
    url: str
    ca: Path


@pytest.fixture
def s(tmp_path: Path) -> Iterator[Setup]:
    genuine = genuine_kms(tmp_path / "genuine")
    fake = FakeKms(genuine)
    tls = throwaway_ca(tmp_path / "tls")
    with https_server(fake.app(), tls) as url:
        yield Setup(genuine, fake, url, tls.ca)


def client(s: Setup, trust: KmsTrust | None = None) -> KmsClient:
    return KmsClient(s.url, ca_file=s.ca, trust=trust or s.genuine.trust)


def test_a_fake_kms_cannot_hand_a_requester_a_broker_key_of_its_choice(s: Setup) -> None:
    with client(s) as kms, pytest.raises(Forbidden, match="not signed by the trusted KMS"):
        kms.release(s.genuine.sim, [BROKER])
    assert s.fake.served == 1  # it did answer: the requester refused the answer


def test_an_unsigned_answer_is_refused(s: Setup) -> None:
    s.fake.mode = "unsigned"
    with client(s) as kms, pytest.raises(Forbidden, match="unsigned"):
        kms.release(s.genuine.sim, [BROKER])


def test_a_replayed_genuine_answer_is_refused(s: Setup) -> None:
    s.fake.mode = "record"
    with client(s) as kms:
        first = kms.release(s.genuine.sim, [BROKER])[BROKER]
        assert first == s.genuine.service.state.broker_key()[1]  # relaying honestly works
        s.fake.mode = "replay"
        with pytest.raises(Forbidden, match="replayed"):
            kms.release(s.genuine.sim, [BROKER])


def test_a_genuine_answer_for_another_nonce_is_refused(s: Setup) -> None:
    s.fake.mode = "other-nonce"
    with client(s) as kms, pytest.raises(Forbidden, match="another nonce"):
        kms.release(s.genuine.sim, [BROKER])


def test_the_frontend_refuses_the_fake_broker_key(s: Setup) -> None:
    keys = FrontendKeys(client(s), s.genuine.sim)
    with pytest.raises(Forbidden):
        asyncio.run(keys.broker_key())


def test_a_requester_with_no_trusted_identity_refuses_to_start(s: Setup) -> None:
    with pytest.raises(ConfigError, match="--kms-identity"):
        FrontendKeys(KmsClient(s.url, ca_file=s.ca), s.genuine.sim)


def _worker(s: Setup, store: Path, *trust: str) -> tuple[int, str]:
    path = store / "tiny-1.tsm"
    store.mkdir(exist_ok=True)
    path.write_bytes(archive.pack(tiny_manifest(), tiny_onnx()))
    encrypt_model_file(path, path, s.genuine.service)
    proc = subprocess.run(
        [
            sys.executable, "-m", "trustserve.worker",
            "--archive", str(path),
            "--broker", f"unix:{store / 'no-broker.sock'}",
            "--kms", s.url, "--kms-ca", str(s.ca), *trust,
            "--home", str(s.genuine.home),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    return proc.returncode, proc.stderr


def test_a_worker_given_a_fake_kms_refuses_its_keys_and_serves_nothing(
    s: Setup, tmp_path: Path
) -> None:
    identity = b64(s.genuine.identity)
    code, log = _worker(s, tmp_path / "store", "--kms-identity", identity)
    assert code == EXIT_UNSERVABLE, log
    assert "not signed by the trusted KMS identity" in log


def test_a_worker_with_a_kms_but_no_trusted_identity_refuses_to_start(
    s: Setup, tmp_path: Path
) -> None:
    code, log = _worker(s, tmp_path / "store")
    assert code == EXIT_UNSERVABLE, log  # a configuration that cannot work: not restarted
    assert "no trusted KMS identity" in log
    assert s.fake.served == 0
