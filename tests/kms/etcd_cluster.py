"""A real 3-member etcd cluster on 127.0.0.1 (Debian's etcd-server), clients over mutual TLS.

Each member is its own process with its own data directory. Peers talk plain HTTP on
loopback (what the KMS stores there is ciphertext, and peer TLS is etcd's own concern);
clients must present a certificate our CA issued (``--client-cert-auth``).
"""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
import shutil
import signal
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import free_port
from trustserve.attestation import Policy
from trustserve.crypto.rootkey import KeyFileProtector
from trustserve.kms.etcd_store import open_etcd_state
from trustserve.kms.service import KmsService
from trustserve.tls import TlsFiles, issue_client_cert, issue_local_ca

PREFIX = "/trustserve-test"
STATE_KEY = f"{PREFIX}/state"
ROOT_KEY = f"{PREFIX}/root-key"
ETCD = shutil.which("etcd") or "/usr/bin/etcd"
START_TIMEOUT = 120.0


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@dataclass
class Member:
    name: str
    client_port: int
    peer_port: int
    data: Path
    log: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def client_url(self) -> str:
        return f"https://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"


@dataclass
class EtcdCluster:
    tls: TlsFiles
    client_cert: Path
    client_key: Path
    members: list[Member] = field(default_factory=list)

    def url(self, members: list[Member] | None = None) -> str:
        """The ``--state`` URL of the KMS for these members (default: all)."""
        hosts = ",".join(f"127.0.0.1:{m.client_port}" for m in members or self.members)
        return (
            f"etcd+https://{hosts}{PREFIX}?ca={self.tls.ca}"
            f"&cert={self.client_cert}&key={self.client_key}"
        )

    def client(self) -> httpx.Client:
        context = ssl.create_default_context(cafile=str(self.tls.ca))
        context.load_cert_chain(self.client_cert, self.client_key)
        return httpx.Client(verify=context)

    # ---- what anyone with access to etcd can do (the attacker in tests/attacks) ----

    def _kv(self, path: str, body: dict[str, object]) -> dict[str, Any]:
        live = [m for m in self.members if m.process and m.process.poll() is None]
        with self.client() as http:
            answer = http.post(f"{live[0].client_url}/v3/kv/{path}", json=body)
        answer.raise_for_status()
        parsed: dict[str, Any] = answer.json()
        return parsed

    def get(self, key: str) -> bytes | None:
        kvs = self._kv("range", {"key": _b64(key.encode())}).get("kvs") or []
        return base64.b64decode(kvs[0]["value"]) if kvs else None

    def put(self, key: str, value: bytes) -> None:
        self._kv("put", {"key": _b64(key.encode()), "value": _b64(value)})

    def delete(self, key: str) -> None:
        self._kv("deleterange", {"key": _b64(key.encode())})

    def status(self, member: Member) -> dict[str, object] | None:
        """``/v3/maintenance/status`` of one member, or None if it does not answer."""
        with self.client() as http:
            try:
                answer = http.post(f"{member.client_url}/v3/maintenance/status", json={})
            except httpx.TransportError:
                return None
        return answer.json() if answer.status_code == 200 else None

    def leader(self) -> Member:
        """The member every live member names as leader (waits for an election)."""
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            live = [m for m in self.members if m.process and m.process.poll() is None]
            answers = [(self.status(m), m) for m in live]
            leaders = {str(a["leader"]) for a, _ in answers if a and a.get("leader")}
            ids = {str(a["header"]["member_id"]): m for a, m in answers if a}  # type: ignore[index]
            if len(leaders) == 1 and (leader := leaders.pop()) in ids:
                return ids[leader]
            time.sleep(0.2)
        raise AssertionError("the etcd cluster elected no leader")

    def kill(self, member: Member) -> None:
        assert member.process is not None
        member.process.send_signal(signal.SIGKILL)
        member.process.wait()

    def wait_healthy(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        with self.client() as http:
            for member in self.members:
                while True:
                    self._check_running(member)
                    try:
                        answer = http.get(f"{member.client_url}/health", timeout=5)
                        if answer.status_code == 200 and answer.json().get("health") == "true":
                            break
                    except (httpx.TransportError, ValueError):
                        pass
                    if time.monotonic() > deadline:
                        raise AssertionError(f"etcd {member.name} never became healthy")
                    time.sleep(0.2)

    def _check_running(self, member: Member) -> None:
        assert member.process is not None
        if member.process.poll() is not None:
            raise AssertionError(
                f"etcd {member.name} exited: {member.log.read_text(errors='replace')[-2000:]}"
            )


@contextlib.contextmanager
def etcd_cluster(directory: Path, size: int = 3) -> Iterator[EtcdCluster]:
    if not os.path.exists(ETCD):
        pytest.fail("etcd is missing: `make debs` installs etcd-server")
    tls = issue_local_ca(directory / "tls", ["127.0.0.1"], peer=True)
    cert, key = issue_client_cert(tls, directory / "tls", "kms")
    cluster = EtcdCluster(tls, cert, key)
    for i in range(size):
        name = f"etcd{i}"
        cluster.members.append(
            Member(name, free_port(), free_port(), directory / name, directory / f"{name}.log")
        )
    initial = ",".join(f"{m.name}={m.peer_url}" for m in cluster.members)
    token = f"trustserve-test-{secrets.token_hex(8)}"
    try:
        for m in cluster.members:
            command = [
                ETCD,
                f"--name={m.name}",
                f"--data-dir={m.data}",
                f"--listen-client-urls={m.client_url}",
                f"--advertise-client-urls={m.client_url}",
                f"--listen-peer-urls={m.peer_url}",
                f"--initial-advertise-peer-urls={m.peer_url}",
                f"--initial-cluster={initial}",
                "--initial-cluster-state=new",
                f"--initial-cluster-token={token}",
                f"--cert-file={tls.cert}",
                f"--key-file={tls.key}",
                f"--trusted-ca-file={tls.ca}",
                "--client-cert-auth",
            ]
            with m.log.open("wb") as log:
                m.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        cluster.wait_healthy()
        yield cluster
    finally:
        for m in cluster.members:
            if m.process is not None and m.process.poll() is None:
                m.process.terminate()
                try:
                    m.process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    m.process.kill()
                    m.process.wait()


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[EtcdCluster]:
    """A fresh 3-member cluster for one test."""
    with etcd_cluster(tmp_path / "etcd") as cluster:
        yield cluster


def etcd_replica(
    cluster: EtcdCluster, home: Path, key_file: Path, members: list[Member] | None = None
) -> KmsService:
    """A KMS replica with its own home whose state is in ``cluster``; replicas share the
    operator's key file (how the root key travels between them is another part)."""
    return KmsService(
        home,
        KeyFileProtector(key_file),
        Policy.development(home),
        state_store=open_etcd_state(cluster.url(members)),
    )
