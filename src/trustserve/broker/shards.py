"""Several Redis primaries as one broker: each model's queue lives on one of them.

One redis-server runs its commands on one thread; at ~2 ms of its CPU per 600 KB
request it tops out near 350 requests/s at 70% busy (docs/capacity.md), a few dozen
worker hosts. Past that the broker option names several *shards*, separated by
white space (URLs never hold a space; Sentinel host lists hold commas and queries hold
``&``, so neither can separate them)::

    --broker 'rediss://frontend@redis-a:6380/0?ca=... rediss+sentinel://frontend@s1:26379,s2:26379/b?ca=...'

A queue (``model:version``) maps to a shard by rendezvous hashing over the shard's
*position* in that list, not its URL: frontends and workers reach the same servers as
different ACL users, with different certificates, so their URLs differ. Every
frontend and every worker must therefore list the same shards in the same order.
Adding a shard at the end moves only the queues the new shard wins (about 1/n of
them); removing or reordering shards moves others, so drain first. Async job records
go to the shard chosen by their job id the same way; a worker's nonces (the replay
guard) go to its queue's shard, which is enough because a sealed request is bound to
its model (``crypto.sealing``).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

from trustserve.broker.base import Job, Outcome
from trustserve.errors import ConfigError

if TYPE_CHECKING:
    from trustserve.broker.redis import RedisStreamsBroker
    from trustserve.broker.redis_jobs import RedisJobStore

MAX_SHARDS = 256


def split_shards(url: str) -> list[str]:
    """The shard URLs of a broker option (one URL: a list of one)."""
    shards = url.split()
    if not shards:
        raise ConfigError("the broker option is empty")
    if len(shards) > MAX_SHARDS:
        raise ConfigError(f"the broker option names {len(shards)} shards; at most {MAX_SHARDS}")
    return shards


def shard_of(key: str, count: int) -> int:
    """The shard (0..count-1) that holds ``key``: rendezvous (highest random weight)
    hashing over positions, so it depends only on ``key`` and ``count``, and growing
    ``count`` by one moves a key only to the new shard."""
    if count < 1:
        raise ValueError("no shards")
    weights = [
        hashlib.sha256(f"{i}\0{key}".encode()).digest()[:8] for i in range(count)
    ]  # a plain digest, the same in every process (Python's hash() is salted per process)
    return max(range(count), key=weights.__getitem__)


def shard_url(url: str, queue: str) -> str:
    """The URL, among the broker option's shards, that holds ``queue``."""
    shards = split_shards(url)
    return shards[shard_of(queue, len(shards))]


class ShardedBroker:
    """The frontend side over several ``RedisStreamsBroker``: each call goes to the shard
    of its queue. A shard that is down makes only its own models unavailable."""

    def __init__(self, shards: Sequence[RedisStreamsBroker]) -> None:
        if not shards:
            raise ValueError("no shards")
        self.shards = list(shards)

    @classmethod
    async def connect(cls, url: str, *, max_queue: int, max_deliveries: int) -> ShardedBroker:
        from trustserve.broker.redis import RedisStreamsBroker

        opened: list[RedisStreamsBroker] = []
        try:
            for shard in split_shards(url):
                opened.append(
                    await RedisStreamsBroker.connect(
                        shard, max_queue=max_queue, max_deliveries=max_deliveries
                    )
                )
        except BaseException:
            await asyncio.gather(*(b.close() for b in opened))
            raise
        return cls(opened)

    def shard(self, queue: str) -> RedisStreamsBroker:
        return self.shards[shard_of(queue, len(self.shards))]

    async def submit(self, job: Job) -> Outcome:
        return await self.shard(job.queue).submit(job)

    async def depth(self, queue: str) -> int:
        return await self.shard(queue).depth(queue)

    async def consumers(self, queue: str) -> int:
        return await self.shard(queue).consumers(queue)

    async def close(self) -> None:
        await asyncio.gather(*(b.close() for b in self.shards))

    def job_store(self) -> ShardedJobStore:
        """Async job records, each on the shard of its job id."""
        from trustserve.broker.redis_jobs import RedisJobStore

        return ShardedJobStore(
            [
                RedisJobStore(b.client, b.keys.prefix, 1 if b.config.sentinels else 0)
                for b in self.shards
            ]
        )


class ShardedJobStore:
    """``RedisJobStore`` over shards: a record lives on the shard of its job id, so any
    frontend that lists the same shards finds it."""

    def __init__(self, stores: Sequence[RedisJobStore]) -> None:
        self.stores = list(stores)

    def _store(self, job_id: str) -> RedisJobStore:
        return self.stores[shard_of(job_id, len(self.stores))]

    async def put(self, job_id: str, record: bytes, ttl_s: float) -> None:
        await self._store(job_id).put(job_id, record, ttl_s)

    async def get(self, job_id: str) -> bytes | None:
        return await self._store(job_id).get(job_id)
