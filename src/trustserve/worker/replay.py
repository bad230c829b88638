"""Freshness and single use of sealed requests, shared by every worker that serves them.

A sealed request carries its issue time and a random nonce. A worker refuses it
when it is older than the window (or from the future beyond a small skew), and
when its nonce was seen before by any worker sharing the same ``NonceStore``.
"""

from __future__ import annotations

import asyncio
import math
import sqlite3
import threading
import time
from pathlib import Path
from typing import Protocol

from trustserve.broker import is_redis_url
from trustserve.errors import Expired, Replayed, Unavailable
from trustserve.home import run_dir

CLOCK_SKEW_S = 30.0


class NonceStore(Protocol):
    def first_use(self, nonce: bytes, expires_at: float) -> bool:
        """True the first time ``nonce`` is offered before it expires, False after."""
        ...


class SqliteNonceStore:
    """Nonces in a SQLite file: shared by worker processes on one machine."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # used from the worker's engine thread, made on its event loop thread: one lock guards it
        self._db = sqlite3.connect(
            str(path), timeout=10, isolation_level=None, check_same_thread=False
        )
        self._lock = threading.Lock()
        self._db.execute("PRAGMA journal_mode=WAL")
        # a claim is durable once in the WAL (every process sees it, a crash keeps it); no
        # fsync per request (~3 ms of the engine thread each here): only a power loss can
        # drop the last claims, and the host can drop them at will anyway (untrusted store)
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS nonces (nonce BLOB PRIMARY KEY, expires REAL NOT NULL)"
        )
        self._inserts = 0

    def first_use(self, nonce: bytes, expires_at: float) -> bool:
        with self._lock:
            return self._first_use(nonce, expires_at)

    def _first_use(self, nonce: bytes, expires_at: float) -> bool:
        self._inserts += 1
        if self._inserts % 1000 == 0:
            self._db.execute("DELETE FROM nonces WHERE expires < ?", (time.time(),))
        try:
            self._db.execute("INSERT INTO nonces VALUES (?, ?)", (nonce, expires_at))
        except sqlite3.IntegrityError:
            row = self._db.execute(
                "SELECT expires FROM nonces WHERE nonce = ?", (nonce,)
            ).fetchone()
            if row and row[0] < time.time():
                self._db.execute(
                    "UPDATE nonces SET expires = ? WHERE nonce = ?", (expires_at, nonce)
                )
                return True
            return False
        return True


class ReplayGuard:
    def __init__(self, store: NonceStore, window_s: float) -> None:
        self.store = store
        self.window_s = window_s

    def check(self, issued_at: float, nonce: bytes, now: float | None = None) -> None:
        now = time.time() if now is None else now
        # NaN compares false with everything: it must not pass as "inside the window"
        fresh = math.isfinite(issued_at) and now - self.window_s <= issued_at
        if not fresh or issued_at > now + CLOCK_SKEW_S:
            raise Expired(
                f"sealed request is outside the {self.window_s:.0f} s freshness window; seal anew"
            )
        if not self.store.first_use(nonce, issued_at + self.window_s + CLOCK_SKEW_S):
            raise Replayed("sealed request was already received (replay)")


class RedisNonceStore:
    """Nonces in Redis (``SET NX`` with an expiry): shared by workers on every host.

    The worker reads requests in its engine thread; the Redis client lives on its
    event loop, which is free while that thread works, so each check is handed to it.
    """

    def __init__(self, url: str, loop: asyncio.AbstractEventLoop) -> None:
        from redis.exceptions import RedisError  # not imported by a worker without Redis

        from trustserve.broker.redis_config import open_client, parse_redis_url

        self._unreachable = (TimeoutError, OSError, RedisError)
        self.config = parse_redis_url(url)
        self._client = open_client(self.config, max_connections=4)
        self._loop = loop

    def first_use(self, nonce: bytes, expires_at: float) -> bool:
        key = f"{self.config.prefix}:nonce:{nonce.hex()}"
        ttl_ms = max(1, int((expires_at - time.time()) * 1000))

        async def claim() -> bool:
            return bool(await self._client.set(key, b"1", nx=True, px=ttl_ms))

        done = asyncio.run_coroutine_threadsafe(claim(), self._loop)
        try:
            return done.result(timeout=5)
        except self._unreachable:
            raise Unavailable("the nonce store (Redis) is unreachable; retry") from None


def nonce_store(
    broker_url: str, queue: str, home: Path, loop: asyncio.AbstractEventLoop
) -> NonceStore:
    """Redis when the broker is Redis (workers may be on many hosts): the shard of ``queue``
    (a sealed request is bound to its model, so its model's workers are the ones to ask),
    else a file on this host."""
    if is_redis_url(broker_url):
        from trustserve.broker.shards import shard_url

        return RedisNonceStore(shard_url(broker_url, queue), loop)
    return SqliteNonceStore(run_dir(home) / "nonces.db")
