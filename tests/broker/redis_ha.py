"""What ``trustserve redis config --replica --sentinel ...`` writes, run for real: a primary,
a replica and three Sentinels (redis-server processes on loopback, TLS and ACL users)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import redis

from tests.support import free_port

T = TypeVar("T")


def wait_for(what: str, check: Callable[[], T | None], timeout: float = 60) -> T:
    """``check()``'s first truthy value; fails naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            got = check()
        except (redis.RedisError, OSError):
            got = None
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), 0.2).close()
        return True
    except OSError:
        return False


@dataclass
class HaRedis:
    directory: Path
    down_after_ms: int = 2000
    ports: dict[str, int] = field(default_factory=dict)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    urls: dict[str, str] = field(default_factory=dict)

    def configure(self) -> None:
        self.ports = {name: free_port() for name in ("primary", "replica", "s1", "s2", "s3")}
        sentinels = [f"--sentinel=localhost:{self.ports[s]}" for s in ("s1", "s2", "s3")]
        out = subprocess.run(
            [sys.executable, "-m", "trustserve.cli", "redis", "config", str(self.directory),
             "--host", "localhost", "--bind", "127.0.0.1", "--port", str(self.ports["primary"]),
             f"--replica=localhost:{self.ports['replica']}", *sentinels,
             f"--down-after-ms={self.down_after_ms}"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        for line in out.stdout.splitlines():
            role, _, rest = line.partition(":")
            if role in ("frontends", "workers"):
                self.urls[role] = rest.strip().removeprefix("--broker ").strip("'")

    def start(self, name: str) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is not installed (make debs)"
        conf = {"primary": "redis.conf", "replica": "replica.conf"}.get(
            name, f"sentinel-{name[1]}.conf"
        )
        args = [binary, str(self.directory / conf)] + (["--sentinel"] if name[0] == "s" else [])
        self.processes[name] = subprocess.Popen(args, stdout=subprocess.DEVNULL)
        wait_for(f"{name} to listen", lambda: _listening(self.ports[name]), 20)

    def start_all(self) -> None:
        for name in ("primary", "replica", "s1", "s2", "s3"):
            self.start(name)

    def kill(self, name: str) -> None:
        self.processes[name].kill()
        self.processes[name].wait(10)

    def pause(self, name: str) -> None:
        os.kill(self.processes[name].pid, signal.SIGSTOP)

    def resume(self, name: str) -> None:
        os.kill(self.processes[name].pid, signal.SIGCONT)

    def stop_all(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                os.kill(process.pid, signal.SIGCONT)
                process.kill()
                process.wait(10)

    def cut_off_replica(self) -> None:
        """The replica stops hearing from the primary: paused, and its link closed by the
        primary (as the Sentinels' user, which may kill clients), so that what the primary
        admits from now on never reaches it."""
        self.pause("replica")
        conf = (self.directory / "sentinel-1.conf").read_text().split()
        password = conf[conf.index("auth-pass") + 2]
        with self.client("sentinel", self.ports["primary"], password) as c:
            c.client_kill_filter(_type="replica")
            wait_for(
                "the replica's link to close", lambda: not c.info("replication")["connected_slaves"]
            )

    def client(self, role: str, port: int, password: str | None = None) -> redis.Redis:
        """A plain client as ``role`` ("frontend", "worker") of Redis or a Sentinel at ``port``."""
        d = self.directory
        cert = "replication" if role == "sentinel" else role
        return redis.Redis(
            host="localhost",
            port=port,
            username=role,
            password=password or (d / f"{role}.password").read_text(),
            ssl=True,
            ssl_ca_certs=str(d / "tls" / "ca.pem"),
            ssl_certfile=str(d / "tls" / f"{cert}.pem"),
            ssl_keyfile=str(d / "tls" / f"{cert}-key.pem"),
            socket_timeout=5,
        )

    def primary_port(self) -> int:
        """Where the Sentinels (all three agreeing) say the primary is."""

        def agreed() -> int | None:
            said = set()
            for s in ("s1", "s2", "s3"):
                with self.client("frontend", self.ports[s]) as c:
                    said.add(c.sentinel_get_master_addr_by_name("trustserve")[1])
            return int(said.pop()) if len(said) == 1 else None

        return wait_for("the Sentinels to agree on the primary", agreed)

    @classmethod
    @contextmanager
    def running(cls, directory: Path, down_after_ms: int = 2000) -> Iterator[HaRedis]:
        """Configured, started and healthy; every process stopped afterwards."""
        setup = cls(directory, down_after_ms)
        setup.configure()
        setup.start_all()
        try:
            setup.wait_healthy()
            yield setup
        finally:
            setup.stop_all()

    def wait_healthy(self) -> None:
        """Until the replica holds what the primary acknowledges and each Sentinel knows
        the other two (a failover needs a majority that can elect a leader)."""
        with self.client("frontend", self.ports["primary"]) as c:
            wait_for("the replica to follow the primary", lambda: c.wait(1, 500) >= 1)
        for s in ("s1", "s2", "s3"):
            with self.client("frontend", self.ports[s]) as c:
                wait_for(
                    f"Sentinel {s} to know the others",
                    lambda c=c: len(c.sentinel_sentinels("trustserve")) >= 2,  # type: ignore[misc]
                )
