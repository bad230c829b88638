"""``trustserve redis config``: a real redis-server started from what it writes serves the
broker, each role with its own user, certificate and password, and no more rights than it needs."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.support import free_port
from trustserve.broker.base import Job, JobKind, Outcome
from trustserve.broker.redis import RedisStreamsBroker


@pytest.fixture
def configured(tmp_path: Path) -> Iterator[dict[str, str]]:
    port = free_port()
    out = subprocess.run(
        [sys.executable, "-m", "trustserve.cli", "redis", "config", str(tmp_path / "redis"),
         "--host", "localhost", "--port", str(port), "--bind", "127.0.0.1"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    urls = {}
    for line in out.stdout.splitlines():
        role, _, rest = line.partition(":")
        if role in ("frontends", "workers"):
            urls[role] = rest.strip().removeprefix("--broker ").strip("'")
    conf = tmp_path / "redis" / "redis.conf"
    assert f"redis-server {conf}" in out.stdout
    assert "password" not in conf.read_text().replace("password_file", "")  # hashes only
    binary = shutil.which("redis-server")
    assert binary
    server = subprocess.Popen([binary, str(conf)], stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    try:
        yield urls
    finally:
        server.terminate()
        server.wait(10)


def sync_client(url: str, **overrides: object) -> redis.Redis:
    parts = urlsplit(url)
    q = {k: v[0] for k, v in parse_qs(parts.query).items()}
    kwargs: dict[str, object] = {
        "host": parts.hostname,
        "port": parts.port,
        "username": parts.username,
        "password": Path(q["password_file"]).read_text(),
        "ssl": True,
        "ssl_ca_certs": q["ca"],
        "ssl_certfile": q["cert"],
        "ssl_keyfile": q["key"],
        "socket_timeout": 2,
        "retry": Retry(NoBackoff(), 0),
    }
    return redis.Redis(**{**kwargs, **overrides})  # type: ignore[arg-type]


async def test_a_frontend_and_a_worker_with_their_own_users_serve_a_request(
    configured: dict[str, str],
) -> None:
    frontend = await RedisStreamsBroker.connect(configured["frontends"], max_queue=8)
    worker = await RedisStreamsBroker.connect(configured["workers"], consumer_queue="m:1")
    try:
        job = Job(uuid.uuid4().hex, "m:1", JobKind.V2, b"ping", time.time() + 10)
        submitted = asyncio.create_task(frontend.submit(job))
        taken: list[Job] = []
        while not taken:
            taken = await worker.take("m:1", 4, 0.01)
        await worker.answer(taken[0], Outcome(taken[0].id, 200, b"pong"))
        outcome = await asyncio.wait_for(submitted, 10)
        assert (outcome.status, outcome.payload) == (200, b"pong")
    finally:
        await worker.close()
        await frontend.close()


def test_each_role_has_only_the_rights_it_needs(configured: dict[str, str]) -> None:
    frontend = sync_client(configured["frontends"])
    worker = sync_client(configured["workers"])
    assert frontend.ping() and worker.ping()
    with pytest.raises(redis.exceptions.NoPermissionError):
        frontend.set("trustserve:nonce:abc", "1")  # only workers claim sealed nonces
    worker.set("trustserve:nonce:abc", "1", nx=True, px=1000)
    for client in (frontend, worker):
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.get("other-deployment:key")  # outside the broker's keys
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.flushall()
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.config_get("*")


def test_a_client_without_the_role_certificate_or_password_is_refused(
    configured: dict[str, str],
) -> None:
    with pytest.raises(redis.exceptions.ConnectionError):
        sync_client(configured["workers"], ssl_certfile=None, ssl_keyfile=None).ping()
    with pytest.raises(redis.exceptions.AuthenticationError):
        sync_client(configured["workers"], password="guessed").ping()
    with pytest.raises(redis.exceptions.AuthenticationError):
        sync_client(configured["workers"], username="default").ping()
