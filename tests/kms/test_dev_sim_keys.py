"""``kms serve`` in development mode for workers with their own homes.

A worker's sim evidence is signed by its home's sim platform key (no TEE hardware
here: sim evidence is the only kind these processes can make). ``--allow-sim``
trusts the KMS's own home only; ``--sim-platform-key`` names more; ``--allow-sim-any``
trusts any.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support import free_port, wait_http, write_tiny
from trustserve import archive
from trustserve.attestation import Policy
from trustserve.attestation.providers.sim import SimProvider
from trustserve.crypto.rootkey import KEY_FILE_ENV, KeyFileProtector, create_key_file
from trustserve.encoding import b64
from trustserve.errors import TrustserveError
from trustserve.keyrelease.client import KmsClient, fetch_model_key
from trustserve.keyrelease.trust import KmsTrust
from trustserve.kms.service import KmsService
from trustserve.kms.tools import encrypt_model_file


@contextmanager
def kms_serve(tmp_path: Path, *flags: str) -> Iterator[tuple[str, Path, Path]]:
    """A running ``kms serve``: (url, its CA, an archive encrypted under it)."""
    home, key = tmp_path / "kms-home", tmp_path / "kms.key"
    if not key.exists():
        create_key_file(key)
        owner = KmsService(home, KeyFileProtector(key), Policy.default())
        encrypt_model_file(write_tiny(tmp_path / "plain"), tmp_path / "tiny.tsm", owner)
        public = owner.state.identity_key().public_key().public_bytes_raw()
        (tmp_path / "kms-identity").write_text(b64(public))
    port = free_port()
    err = tmp_path / "kms.err"
    with err.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "trustserve.cli", "kms", "serve", "--home", str(home),
             "--port", str(port), *flags],
            env={**os.environ, KEY_FILE_ENV: str(key)}, stderr=out,
        )  # fmt: skip
    url, ca = f"https://127.0.0.1:{port}", home / "tls" / "ca.pem"
    try:
        wait_http(f"{url}/healthz", ca, proc, timeout=60)
        yield url, ca, tmp_path / "tiny.tsm"
    finally:
        proc.terminate()
        proc.wait(20)


def released(url: str, ca: Path, path: Path, worker_home: Path) -> bool:
    identity = (path.parent / "kms-identity").read_text()
    trust = KmsTrust.from_options(identity, None)
    with KmsClient(url, ca_file=ca, trust=trust) as client:
        try:
            fetch_model_key(client, SimProvider(worker_home), archive.load(path))
        except TrustserveError:
            return False
    return True


def sim_key(home: Path) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "trustserve.cli", "attest", "--sim-key", "--home", str(home)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return out.stdout.strip()


def test_allow_sim_refuses_a_worker_with_its_own_home(tmp_path: Path) -> None:
    with kms_serve(tmp_path, "--allow-sim") as (url, ca, path):
        assert not released(url, ca, path, tmp_path / "worker-home")
        assert released(url, ca, path, tmp_path / "kms-home")  # its own home's evidence


@pytest.mark.parametrize("how", ["named", "any"])
def test_dev_kms_admits_named_or_any_sim_key_with_a_loud_warning(tmp_path: Path, how: str) -> None:
    worker = tmp_path / "worker-home"
    key = sim_key(worker)
    assert len(key) == 64 and key == sim_key(worker)  # stable for one home
    flags = ["--sim-platform-key", key] if how == "named" else ["--allow-sim-any"]
    with kms_serve(tmp_path, *flags) as (url, ca, path):
        assert released(url, ca, path, worker)
        stranger = released(url, ca, path, tmp_path / "stranger-home")
        assert stranger is (how == "any")
    err = (tmp_path / "kms.err").read_text()
    assert "DEVELOPMENT MODE" in err and "proves nothing" in err


def test_a_malformed_sim_key_is_refused_by_name(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "trustserve.cli", "kms", "serve", "--home", str(tmp_path),
         "--sim-platform-key", "abc"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode != 0 and "--sim-platform-key" in out.stderr
