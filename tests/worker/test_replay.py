"""The replay guard: freshness window and single use, shared by every worker of a deployment."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.broker.redis_server import RedisServer
from trustserve.errors import Expired, Replayed
from trustserve.worker.replay import (
    CLOCK_SKEW_S,
    ReplayGuard,
    SqliteNonceStore,
    nonce_store,
)

WINDOW = 300.0


@pytest.fixture
def store(tmp_path: Path) -> SqliteNonceStore:
    return SqliteNonceStore(tmp_path / "run" / "nonces.db")


def test_a_fresh_request_passes_once(store: SqliteNonceStore) -> None:
    guard = ReplayGuard(store, WINDOW)
    now = time.time()
    nonce = os.urandom(16)
    guard.check(now - 5, nonce, now)
    with pytest.raises(Replayed, match="replay"):
        guard.check(now - 5, nonce, now + 1)
    guard.check(now - 5, os.urandom(16), now + 1)


@pytest.mark.parametrize("age", [WINDOW + 1, -(CLOCK_SKEW_S + 1)])
def test_a_request_outside_the_window_is_expired(store: SqliteNonceStore, age: float) -> None:
    now = time.time()
    with pytest.raises(Expired, match="freshness window"):
        ReplayGuard(store, WINDOW).check(now - age, os.urandom(16), now)


def test_a_little_clock_skew_is_allowed(store: SqliteNonceStore) -> None:
    now = time.time()
    ReplayGuard(store, WINDOW).check(now + CLOCK_SKEW_S - 1, os.urandom(16), now)


def test_workers_sharing_the_file_see_each_others_nonces(tmp_path: Path) -> None:
    path = tmp_path / "nonces.db"
    a = ReplayGuard(SqliteNonceStore(path), WINDOW)
    b = ReplayGuard(SqliteNonceStore(path), WINDOW)
    nonce, now = os.urandom(16), time.time()
    a.check(now, nonce, now)
    with pytest.raises(Replayed):
        b.check(now, nonce, now)


def test_a_nonce_past_its_expiry_may_be_used_again(store: SqliteNonceStore) -> None:
    """Only possible after the request itself is outside the window: nothing to replay."""
    nonce = os.urandom(16)
    assert store.first_use(nonce, time.time() - 1)
    assert store.first_use(nonce, time.time() + 60)
    assert not store.first_use(nonce, time.time() + 60)


def test_the_store_follows_the_broker(tmp_path: Path) -> None:
    loop = asyncio.new_event_loop()
    try:
        chosen = nonce_store("unix:/tmp/x.sock", "m:1", tmp_path, loop)
        assert isinstance(chosen, SqliteNonceStore)
        assert (tmp_path / "run" / "nonces.db").exists()
    finally:
        loop.close()


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


async def test_workers_on_different_hosts_share_nonces_through_redis(redis: RedisServer) -> None:
    """A real redis-server (TLS, ACL): two workers' stores, as on two hosts."""
    loop = asyncio.get_running_loop()
    a = ReplayGuard(nonce_store(redis.url(), "m:1", Path("/nonexistent"), loop), WINDOW)
    b = ReplayGuard(nonce_store(redis.url(), "m:1", Path("/nonexistent"), loop), WINDOW)
    nonce, now = os.urandom(16), time.time()
    await asyncio.to_thread(a.check, now, nonce, now)  # as from the engine thread
    with pytest.raises(Replayed):
        await asyncio.to_thread(b.check, now, nonce, now)
    await asyncio.to_thread(b.check, now, os.urandom(16), now)


async def test_a_replay_through_another_shard_is_caught(tmp_path: Path) -> None:
    """Workers of one model spread over two Redis shards (``--broker-spread``), each naming
    the shards its own way: a request replayed to the worker on the other shard is refused,
    because every worker of a model keeps its nonces on the model's first shard."""
    from trustserve.broker.shards import shard_of

    servers = [RedisServer(tmp_path / f"redis{i}") for i in range(2)]
    try:
        for server in servers:
            server.start()
        loop = asyncio.get_running_loop()
        queue = "m:1"
        on_a = " ".join(s.url() for s in servers)
        on_b = " ".join(s.url(host="127.0.0.1") for s in servers)
        a = ReplayGuard(nonce_store(on_a, queue, Path("/nonexistent"), loop), WINDOW)
        b = ReplayGuard(nonce_store(on_b, queue, Path("/nonexistent"), loop), WINDOW)
        nonce, now = os.urandom(16), time.time()
        await asyncio.to_thread(a.check, now, nonce, now)
        with pytest.raises(Replayed):
            await asyncio.to_thread(b.check, now, nonce, now)
        first = shard_of(queue, 2)
        for i, server in enumerate(servers):
            with server.client() as c:
                assert (c.pttl(f"trustserve:nonce:{nonce.hex()}") > 0) == (i == first)
    finally:
        for server in servers:
            server.stop()
