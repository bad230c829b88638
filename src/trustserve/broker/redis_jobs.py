"""Async job records in Redis, so that any frontend can answer ``GET /v2/jobs/{id}``.

Key ``P:job:{id}`` (``P``: the broker URL's prefix) holds a record sealed by
``trustserve.frontend.jobs`` under the broker key and bound to its id; Redis expires
it (``SET ... PX``). Redis sees ciphertext only, and cannot move a record to another id.
"""

from __future__ import annotations

from redis import exceptions as rx
from redis.asyncio import Redis

from trustserve.errors import Unavailable

WAIT_MS = 2000


class RedisJobStore:
    """``replicas``: how many replicas must hold a record before ``put`` returns (``WAIT``),
    so that a 202 is not lost in a failover; a record no replica confirmed within
    ``WAIT_MS`` is a 503 (``Unavailable``), not an acceptance that might vanish."""

    def __init__(self, client: Redis, prefix: str, replicas: int = 0) -> None:
        self.client = client
        self.prefix = prefix
        self.replicas = replicas

    def key(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}"

    async def put(self, job_id: str, record: bytes, ttl_s: float) -> None:
        try:
            await self.client.set(self.key(job_id), record, px=max(1, int(ttl_s * 1000)))
            held = await self.client.wait(self.replicas, WAIT_MS) if self.replicas else 0
        except rx.RedisError:
            raise Unavailable("the job broker (Redis) is unreachable; retry later") from None
        if held < self.replicas:
            raise Unavailable(
                f"the job broker's replica did not confirm the job within {WAIT_MS} ms "
                "(is it down?); retry later"
            )

    async def get(self, job_id: str) -> bytes | None:
        try:
            record = await self.client.get(self.key(job_id))
        except rx.RedisError:
            raise Unavailable("the job broker (Redis) is unreachable; retry later") from None
        if record is None:
            return None
        return record if isinstance(record, bytes) else record.encode()
