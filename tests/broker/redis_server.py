"""Real redis-server processes on loopback with TLS (mutual) and an ACL user, for tests.

Certificates and the password are generated per server; the password lives in a
0600 file and reaches redis.conf only as a SHA-256 hash. ``default`` has a password
nobody knows (see the note in the config about AOF replay).
"""

from __future__ import annotations

import secrets
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

import redis

from tests.support import free_port
from trustserve.files import write_secret
from trustserve.stack.redis_ha import password_hash
from trustserve.tls import issue_client_cert, issue_local_ca

USER = "trustserve"
# What the broker needs, on its own keys only (+pttl: tests read async job TTLs).
ACL = (
    "~trustserve:* resetchannels -@all +@stream +@sortedset +@scripting "
    "+@connection +multi +exec +discard +ping +time +expire +del +set +get +pttl -@dangerous"
)


@dataclass
class RedisServer:
    """One redis-server: TLS only (no plain port), appendonly, ``trustserve`` ACL user."""

    directory: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    addresses: list[str] = field(default_factory=lambda: ["127.0.0.1"])

    def __post_init__(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.tls = issue_local_ca(self.directory / "tls", ["localhost", *self.addresses])
        self.client_cert, self.client_key = issue_client_cert(
            self.tls, self.directory / "tls", "client"
        )
        self.password_file = self.directory / "redis-password"
        password = secrets.token_urlsafe(24)
        write_secret(self.password_file, password.encode())
        digest = password_hash(password)
        data = self.directory / "data"
        data.mkdir(exist_ok=True)
        conf = [
            f"bind {' '.join(self.addresses)}",
            "port 0",
            f"tls-port {self.port}",
            f"tls-cert-file {self.tls.cert}",
            f"tls-key-file {self.tls.key}",
            f"tls-ca-cert-file {self.tls.ca}",
            "tls-auth-clients yes",
            f"dir {data}",
            "appendonly yes",
            "appendfsync always",
            "rdbcompression no",  # payloads are ciphertext: LZF in AOF rewrites only costs CPU
            "auto-aof-rewrite-min-size 512mb",  # 64 MB is ~100 images: a rewrite a second
            'save ""',
            # Not "user default off": Redis 7.0 (Debian 12) replays MULTI/EXEC from the AOF as the
            # default user and drops what that user may not run (redis/redis#14541), so
            # `default` gets the broker's rights and a password nobody is told.
            f"user default on #{password_hash(secrets.token_urlsafe(32))} {ACL}",
            f"user {USER} on #{digest} {ACL}",
            f"logfile {self.directory / 'redis.log'}",
        ]
        self.conf = self.directory / "redis.conf"
        write_secret(self.conf, ("\n".join(conf) + "\n").encode())

    def url(self, *, host: str = "localhost", **params: str) -> str:
        """The broker URL for this server; ``name=""`` leaves a parameter out."""
        query = {
            "ca": str(self.tls.ca),
            "cert": str(self.client_cert),
            "key": str(self.client_key),
            "password_file": str(self.password_file),
            **params,
        }
        query = {k: v for k, v in query.items() if v}  # "" leaves a parameter out
        return f"rediss://{USER}@{host}:{self.port}/0?{urlencode(query)}"

    def client(self) -> redis.Redis:
        """A plain synchronous client, for tests that look inside."""
        return redis.Redis(
            host="localhost",
            port=self.port,
            username=USER,
            password=self.password_file.read_text(),
            ssl=True,
            ssl_ca_certs=str(self.tls.ca),
            ssl_certfile=str(self.client_cert),
            ssl_keyfile=str(self.client_key),
        )

    def start(self, timeout: float = 10) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is not installed (make debs)"
        self.process = subprocess.Popen(
            [binary, str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited: {self.log()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server not listening after {timeout}s: {self.log()}")

    def log(self) -> str:
        path = self.directory / "redis.log"
        return path.read_text()[-2000:] if path.exists() else ""

    def stop(self, kill: bool = False) -> None:
        """SIGTERM (Redis flushes its AOF) or, with ``kill``, SIGKILL."""
        if self.process is None or self.process.poll() is not None:
            return
        if kill:
            self.process.kill()
        else:
            self.process.terminate()
        self.process.wait(10)

    def restart(self, down_s: float = 0.0) -> None:
        self.stop()
        time.sleep(down_s)
        self.start()
