"""Two ``trustserve kms serve --state etcd+https://...`` processes, each with its own home,
on one 3-member etcd: a key provisioned through one replica is released by the other
after the first is killed (-9), to a client that knows both URLs and one identity."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from tests.kms.etcd_cluster import EtcdCluster, etcd
from tests.support import free_port, tiny_manifest, wait_http
from trustserve.attestation import make_provider
from trustserve.crypto.rootkey import KEY_FILE_ENV, create_key_file
from trustserve.keyrelease.client import KmsClient
from trustserve.keyrelease.protocol import model_digest
from trustserve.keyrelease.trust import KmsTrust
from trustserve.tls import issue_local_ca

__all__ = ["etcd"]  # the fixture
SRC = Path(__file__).resolve().parents[2] / "src"


def kms_command(home: Path, state: str, port: int, tls_dir: Path, *extra: str) -> list[str]:
    """``trustserve kms serve`` on 127.0.0.1:``port`` with the state in ``state``."""
    return [
        sys.executable,
        "-m",
        "trustserve.cli",
        "kms",
        "serve",
        "--home",
        str(home),
        "--port",
        str(port),
        "--cert",
        str(tls_dir / "server.pem"),
        "--key",
        str(tls_dir / "server-key.pem"),
        "--state",
        state,
        *extra,
    ]


def kms_env(key_file: Path | None) -> dict[str, str]:
    """The environment of a KMS process: the operator secret only if ``key_file``."""
    env = {k: v for k, v in os.environ.items() if k != KEY_FILE_ENV}
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])
    if key_file is not None:
        env[KEY_FILE_ENV] = str(key_file)
    return env


@contextmanager
def kms_serve(
    home: Path,
    state: str,
    port: int,
    tls_dir: Path,
    key_file: Path | None,
    extra: tuple[str, ...] = ("--allow-sim-any",),
) -> Iterator[subprocess.Popen[bytes]]:
    """A running replica (killed at the end); its output in ``home/kms.log``."""
    home.mkdir(parents=True, exist_ok=True)
    env = kms_env(key_file)
    command = kms_command(home, state, port, tls_dir, *extra)
    with (home / "kms.log").open("wb") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        wait_http(f"https://127.0.0.1:{port}/healthz", tls_dir / "ca.pem", proc)
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=30)


def test_a_key_made_by_one_replica_process_is_released_by_another_after_a_kill(
    etcd: EtcdCluster, tmp_path: Path
) -> None:
    key_file = tmp_path / "operator.key"
    create_key_file(key_file)
    tls = issue_local_ca(tmp_path / "kms-tls", ["127.0.0.1"])
    ports = [free_port(), free_port()]
    urls = [f"https://127.0.0.1:{p}" for p in ports]
    sim = make_provider("sim", tmp_path / "worker-home")
    manifest = tiny_manifest("m", "1")
    with ExitStack() as running:
        first, _ = [
            running.enter_context(
                kms_serve(tmp_path / f"kms{i}", etcd.url(), ports[i], tls.cert.parent, key_file)
            )
            for i in (0, 1)
        ]
        token = (tmp_path / "kms0" / "kms" / "admin.token").read_text().strip()
        with KmsClient(urls[0], ca_file=tls.ca, token=token) as owner:
            key_id, key = owner.provision_model_key(manifest)
        first.kill()
        first.wait()
        trust = KmsTrust(_identity(tmp_path, etcd, key_file))
        with KmsClient(",".join(urls), ca_file=tls.ca, trust=trust) as worker:
            released = worker.release(sim, [key_id], {key_id: model_digest(manifest)})
            assert worker.url == urls[1]
        assert released[key_id] == key
    for i in (0, 1):  # the keys were in etcd, not on either replica's disk
        assert not (tmp_path / f"kms{i}" / "kms" / "state.json").exists()
        assert (
            "state in etcd /trustserve-test/state" in (tmp_path / f"kms{i}" / "kms.log").read_text()
        )


def _identity(tmp_path: Path, etcd: EtcdCluster, key_file: Path) -> bytes:
    """``trustserve kms identity --state URL`` from a third home: the shared identity."""
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "trustserve.cli",
            "kms",
            "identity",
            "--home",
            str(tmp_path / "admin"),
            "--state",
            etcd.url(),
        ],
        env={**os.environ, KEY_FILE_ENV: str(key_file), "PYTHONPATH": str(SRC)},
        capture_output=True,
        check=True,
    )
    return base64.b64decode(out.stdout.split()[-1])
