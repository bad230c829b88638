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
them); removing or reordering shards moves others, so drain first. Each server keeps
the position the first process gave it (``check_position``), and a process whose list
puts it elsewhere is refused. Async job records
go to the shard chosen by their job id the same way; a worker's nonces (the replay
guard) go to its queue's first shard, which is enough because a sealed request is
bound to its model (``crypto.sealing``).

A model hotter than one primary: its workers, started with ``--broker-spread N``, each
join the least-manned of the queue's first N shards in the ranking (``join_shard``);
frontends send each job to a shard where the queue has live workers, weighted by
their number, so they need no setting of their own. The replay guard stays on the
queue's first shard whichever shard a worker takes jobs from.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import secrets
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from trustserve.broker.base import Job, Outcome
from trustserve.errors import ConfigError

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from trustserve.broker.redis import RedisStreamsBroker
    from trustserve.broker.redis_jobs import RedisJobStore
    from trustserve.broker.redis_streams import Keys

log = logging.getLogger(__name__)
MAX_SHARDS = 256


def split_shards(url: str) -> list[str]:
    """The shard URLs of a broker option (one URL: a list of one)."""
    shards = url.split()
    if not shards:
        raise ConfigError("the broker option is empty")
    if len(shards) > MAX_SHARDS:
        raise ConfigError(f"the broker option names {len(shards)} shards; at most {MAX_SHARDS}")
    return shards


def ranked(key: str, count: int) -> list[int]:
    """The shards (0..count-1) in ``key``'s order of preference: rendezvous (highest
    random weight) hashing over positions, so it depends only on ``key`` and ``count``,
    and growing ``count`` by one moves a key's first shard only to the new shard."""
    if count < 1:
        raise ValueError("no shards")
    weights = [
        hashlib.sha256(f"{i}\0{key}".encode()).digest()[:8] for i in range(count)
    ]  # a plain digest, the same in every process (Python's hash() is salted per process)
    return sorted(range(count), key=weights.__getitem__, reverse=True)


def shard_of(key: str, count: int) -> int:
    """The shard that holds ``key`` (its first in ``ranked``)."""
    return ranked(key, count)[0]


def shard_url(url: str, queue: str) -> str:
    """The URL, among the broker option's shards, that holds ``queue`` (its first)."""
    shards = split_shards(url)
    return shards[shard_of(queue, len(shards))]


async def check_position(client: Redis, keys: Keys, position: int) -> None:
    """Marks the server ``client`` reaches as the shard at ``position`` of the broker
    option, if no process has yet; refuses (ConfigError) when an earlier one marked it at
    another position. Lists in another order would not strand jobs (frontends follow the
    workers) but would quietly split a model's replay guard over two servers and send
    async job records to the wrong one (docs/redis.md). A server that cannot be asked now
    (unreachable, or an ACL without SET on the key) is only warned about."""
    from redis import exceptions as rx

    key = keys.shard()
    try:
        held = await client.set(key, str(position), nx=True, get=True)
    except (rx.ConnectionError, rx.TimeoutError, rx.NoPermissionError) as exc:
        log.warning("could not check the position of shard %d: %s", position, exc)
        return
    if held is None:
        return
    text = held.decode() if isinstance(held, bytes) else str(held)
    if text != str(position):
        raise ConfigError(
            f"the broker option's shard at position {position} is the server other trustserve "
            f"processes list at position {text}: every frontend and worker must list the "
            "shards in the same order (after draining a deliberate reorder, delete the "
            f"'{key}' key on each server; docs/redis.md)"
        )


async def join_shard(url: str, queue: str, spread: int = 1) -> str:
    """The shard URL a worker of ``queue`` takes jobs from: its first shard, or with
    ``spread`` N > 1 the one of its first N with the fewest live workers (a tie: any)."""
    shards = split_shards(url)
    if spread < 1:
        raise ConfigError(f"broker spread must be at least 1, not {spread}")
    candidates = ranked(queue, len(shards))[:spread]
    if len(candidates) == 1:
        return shards[candidates[0]]
    live = await asyncio.gather(*(_live_workers(shards[i], queue) for i in candidates))
    fewest = min(live)
    return shards[secrets.choice([i for i, n in zip(candidates, live, strict=True) if n == fewest])]


async def _live_workers(url: str, queue: str) -> int:
    """Workers of ``queue`` that beat in the last ``LIVE_S`` seconds on ``url`` (by this
    host's clock: a choice, not a count anyone relies on); unreachable: counts as full."""
    from redis import exceptions as rx

    from trustserve.broker.redis_config import open_client, parse_redis_url
    from trustserve.broker.redis_streams import LIVE_S, Keys

    config = parse_redis_url(url)
    client = open_client(config, max_connections=1)
    try:
        key = Keys(config.prefix).live(queue)
        return int(await client.zcount(key, time.time() - LIVE_S, "+inf"))
    except rx.RedisError:
        return 1 << 30
    finally:
        await client.aclose()


class ShardedBroker:
    """The frontend side over several ``RedisStreamsBroker``: each job goes to a shard
    where its queue has live workers (weighted by their number), else to the queue's
    first shard. With every worker on its queue's first shard (the default) that is
    the model as the shard key; workers started with a spread join other shards and
    the frontends follow them. Which shards have workers is looked up at most every
    ``LOOK_S`` per queue. A shard that is down makes only its own queues unavailable."""

    LOOK_S = 1.0

    def __init__(
        self, shards: Sequence[RedisStreamsBroker], rng: random.Random | None = None
    ) -> None:
        if not shards:
            raise ValueError("no shards")
        self.shards = list(shards)
        # load spreading only: nothing depends on it being unpredictable
        self._rng = rng or random.Random()  # noqa: S311
        self._homes: dict[str, tuple[float, list[tuple[int, int]]]] = {}

    @classmethod
    async def connect(
        cls, url: str, *, max_queue: int, max_deliveries: int, rng: random.Random | None = None
    ) -> ShardedBroker:
        from trustserve.broker.redis import RedisStreamsBroker

        opened: list[RedisStreamsBroker] = []
        try:
            for position, shard in enumerate(split_shards(url)):
                opened.append(
                    await RedisStreamsBroker.connect(
                        shard, max_queue=max_queue, max_deliveries=max_deliveries
                    )
                )
                await check_position(opened[-1].client, opened[-1].keys, position)
        except BaseException:
            await asyncio.gather(*(b.close() for b in opened))
            raise
        return cls(opened, rng)

    async def homes(self, queue: str) -> list[tuple[int, int]]:
        """(shard, live workers) for each shard where ``queue`` has workers."""
        now = time.monotonic()
        seen = self._homes.get(queue)
        if seen is not None and now - seen[0] < self.LOOK_S:
            return seen[1]
        counts = await asyncio.gather(*(b.consumers(queue) for b in self.shards))
        found = [(i, n) for i, n in enumerate(counts) if n > 0]
        if found:  # none: look again next time, so a worker that just started is seen
            self._homes[queue] = (now, found)
        return found

    async def shard(self, queue: str) -> RedisStreamsBroker:
        homes = await self.homes(queue)
        if not homes:
            return self.shards[shard_of(queue, len(self.shards))]
        pick = self._rng.randrange(sum(n for _, n in homes))
        for i, n in homes:
            if pick < n:
                return self.shards[i]
            pick -= n
        raise AssertionError("unreachable")

    async def submit(self, job: Job) -> Outcome:
        return await (await self.shard(job.queue)).submit(job)

    async def depth(self, queue: str) -> int:
        """Jobs waiting on the shards that hold ``queue`` (its first, and any with workers)."""
        where = {shard_of(queue, len(self.shards))} | {i for i, _ in await self.homes(queue)}
        return sum([await self.shards[i].depth(queue) for i in sorted(where)])

    async def consumers(self, queue: str) -> int:
        return sum(n for _, n in await self.homes(queue))

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
