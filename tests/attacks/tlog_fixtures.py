"""Real processes for the transparency attack tests: ``trustserve witness serve`` and
``trustserve kms serve --witness`` on loopback, and a KMS home made in the test."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.support import free_port, wait_http
from trustserve.attestation import Policy
from trustserve.crypto.rootkey import KEY_FILE_ENV, KeyFileProtector, create_key_file
from trustserve.kms.service import KmsService
from trustserve.transparency import note
from trustserve.transparency.log import log_verifier
from trustserve.transparency.note import Verifier

CLI = [sys.executable, "-m", "trustserve.cli"]


@dataclass
class WitnessProcess:
    url: str  # the base URL the KMS is given (it posts to url/add-checkpoint)
    verifier: Verifier
    proc: subprocess.Popen[bytes]

    @property
    def option(self) -> str:
        return f"{self.url}={self.verifier.vkey()}"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def kms_home(root: Path) -> tuple[Path, Path, Verifier]:
    """A KMS state made under ``root/home``: (home, key file, the log's verifier key)."""
    home, key = root / "home", root / "kms.key"
    create_key_file(key)
    service = KmsService(home, KeyFileProtector(key), Policy.default())
    return home, key, log_verifier(service.state.identity_public_key())


def start_witness(root: Path, name: str, log_key: Verifier) -> WitnessProcess:
    key = root / f"{name.replace('/', '_')}.key"
    made = subprocess.run(
        [*CLI, "witness", "init", "--key", str(key), "--name", name],
        capture_output=True,
        text=True,
        check=True,
    )
    port = free_port()
    state = root / f"{name.replace('/', '_')}.json"
    proc = subprocess.Popen(
        [*CLI, "witness", "serve", "--key", str(key), "--log", log_key.vkey(),
         "--state", str(state), "--port", str(port)],
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            httpx.post(f"{url}/add-checkpoint", content=b"", timeout=5)
            break
        except httpx.TransportError:
            assert proc.poll() is None, "the witness exited"
            assert time.monotonic() < deadline, "the witness did not listen"
            time.sleep(0.2)
    return WitnessProcess(url, Verifier.from_vkey(made.stdout.strip()), proc)


@dataclass
class KmsProcess:
    url: str
    home: Path
    proc: subprocess.Popen[bytes]

    @property
    def ca(self) -> Path:
        return self.home / "tls" / "ca.pem"

    def get(self, path: str) -> httpx.Response:
        return httpx.get(f"{self.url}{path}", verify=str(self.ca), timeout=30)

    def checkpoint(self) -> str:
        r = self.get("/v1/log/checkpoint")
        assert r.status_code == 200, r.text
        return r.text

    def rotate(self) -> None:
        token = (self.home / "kms" / "admin.token").read_text().strip()
        r = httpx.post(
            f"{self.url}/v1/keys/serving/rotate",
            headers={"Authorization": f"Bearer {token}"},
            verify=str(self.ca),
            timeout=60,
        )
        assert r.status_code == 200, r.text

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def kms_command(home: Path, port: int, *extra: str) -> list[str]:
    return [*CLI, "kms", "serve", "--home", str(home), "--port", str(port), *extra]


def kms_env(key: Path) -> dict[str, str]:
    return {**os.environ, KEY_FILE_ENV: str(key)}


def start_kms(home: Path, key: Path, *extra: str) -> KmsProcess:
    port = free_port()
    proc = subprocess.Popen(kms_command(home, port, *extra), env=kms_env(key))
    url = f"https://127.0.0.1:{port}"
    wait_http(f"{url}/healthz", home / "tls" / "ca.pem", proc, timeout=120)
    return KmsProcess(url, home, proc)


def refused_start(home: Path, key: Path, *extra: str) -> str:
    """Start ``kms serve`` expecting it to refuse: its stderr (it must exit non-zero)."""
    run = subprocess.run(
        kms_command(home, free_port(), *extra),
        env=kms_env(key),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode != 0, "the KMS started"
    return run.stderr


def cosigners(signed: str, witnesses: list[Verifier], log_key: Verifier) -> list[str]:
    """The names of the witnesses whose cosignatures on ``signed`` verify (the KMS's own
    signature must verify too)."""
    parsed = note.parse(signed)
    assert note.verified_by(parsed, [log_key]) == [log_key], "not signed by the KMS"
    return [v.name for v in note.verified_by(parsed, witnesses)]
