"""The Redis Streams broker, frontend side: admit jobs, wait for their outcomes.

How the keys, leases and dead letters work is told in ``trustserve.broker.redis_streams``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from dataclasses import replace
from typing import TYPE_CHECKING, Any, overload

import orjson
from redis import exceptions as rx
from redis.asyncio import Redis

from trustserve.broker.base import Job, Outcome
from trustserve.broker.redis_config import (
    RedisConfig,
    check_connection,
    failovers,
    open_client,
    parse_redis_url,
)
from trustserve.broker.redis_streams import (
    LIVE_S,
    POLL_MS,
    RedisSide,
)
from trustserve.broker.wire import job_meta, outcome_from
from trustserve.errors import ConfigError, DeadlineExceeded, Unavailable

if TYPE_CHECKING:
    from trustserve.broker.redis_worker import RedisJobSource

log = logging.getLogger(__name__)

# Run right after the job's XADD, in the same MULTI (so no worker can have read it): the
# job stays if the queue is within bounds, else it is deleted again. The payload never
# passes through Lua, which would hash all of its bytes (Redis hashes every Lua string
# whole) and copy it twice: for a 600 kB image that was a sixth of redis-server's CPU.
_ADMITTED = """
if redis.call('XLEN', KEYS[1]) <= tonumber(ARGV[1]) then return 1 end
local newest = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
redis.call('XDEL', KEYS[1], newest[1][1])
return 0
"""
_LIVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
return redis.call('ZCOUNT', KEYS[1], now - tonumber(ARGV[1]), '+inf')
"""


class RedisStreamsBroker(RedisSide):
    """The frontend side: admits jobs, routes their outcomes back, dead-letters orphans."""

    def __init__(
        self, client: Redis, config: RedisConfig, max_queue: int, max_deliveries: int
    ) -> None:
        super().__init__(client, config)
        self.max_queue = max_queue
        self.max_deliveries = max_deliveries
        self.frontend = uuid.uuid4().hex
        self._reply = self.keys.reply(self.frontend)
        self._waiting: dict[str, asyncio.Future[Outcome]] = {}
        # what each waiting job was admitted as: (stream, fields, entry id), to put it in
        # again if a failover loses it (``_put_back_lost``)
        self._sent: dict[str, tuple[str, dict[Any, Any], Any]] = {}
        self._failovers = 0
        self._queues: set[str] = set()
        self._live = client.register_script(_LIVE)
        self._tasks: list[asyncio.Task[None]] = []

    @overload
    @classmethod
    async def connect(
        cls, url: str, *, max_queue: int = 1024, max_deliveries: int = 3
    ) -> RedisStreamsBroker: ...

    @overload
    @classmethod
    async def connect(cls, url: str, *, consumer_queue: str) -> RedisJobSource: ...

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        max_queue: int = 1024,
        max_deliveries: int = 3,
        consumer_queue: str | None = None,
    ) -> RedisStreamsBroker | RedisJobSource:
        """The frontend side, or with ``consumer_queue`` a worker's side, of ``url``."""
        config = parse_redis_url(url)
        client = open_client(config)
        try:
            await check_connection(client, config)
        except ConfigError:
            await client.aclose()
            raise
        if consumer_queue is not None:
            from trustserve.broker.redis_worker import RedisJobSource

            return await RedisJobSource.start(client, config, consumer_queue)
        broker = cls(client, config, max_queue, max_deliveries)
        broker._tasks = [
            asyncio.create_task(broker._read_outcomes()),
            asyncio.create_task(broker._janitor()),
        ]
        return broker

    async def submit(self, job: Job) -> Outcome:
        stream = self.keys.stream(job.queue)
        self._queues.add(job.queue)
        fut: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._waiting[job.id] = fut
        head = orjson.dumps(job_meta(replace(job, enqueued_at=time.time())))
        fields: dict[Any, Any] = {"job": head, "reply": self._reply}
        fields |= {"max": self.max_deliveries, "payload": job.payload}
        try:
            try:
                async with self.client.pipeline(transaction=True) as pipe:
                    pipe.xadd(stream, fields)
                    pipe.eval(_ADMITTED, 1, stream, self.max_queue)
                    entry_id, admitted = await pipe.execute()
            except (rx.ConnectionError, rx.TimeoutError, rx.ResponseError) as exc:
                self._warn("admitting a job", exc)
                raise Unavailable("the job broker (Redis) is unreachable; retry later") from None
            if not admitted:
                raise Unavailable(f"queue for {job.queue} is full; retry later", retry_after=1)
            self._sent[job.id] = (stream, fields, entry_id)
            try:
                return await asyncio.wait_for(fut, max(0.0, job.deadline - time.time()))
            except TimeoutError:
                with contextlib.suppress(rx.RedisError):
                    await self.client.xdel(stream, self._sent[job.id][2])
                raise DeadlineExceeded(f"no answer from {job.queue} before the deadline") from None
        finally:
            self._waiting.pop(job.id, None)
            self._sent.pop(job.id, None)

    async def depth(self, queue: str) -> int:
        try:
            return int(await self.client.xlen(self.keys.stream(queue)))
        except (rx.ConnectionError, rx.TimeoutError) as exc:
            raise Unavailable(f"the job broker (Redis) is unreachable ({exc})") from None

    async def consumers(self, queue: str) -> int:
        """Workers that sent a heartbeat in the last ``LIVE_S`` seconds (0 if Redis is down)."""
        try:
            return int(await self._live(keys=[self.keys.live(queue)], args=[LIVE_S]))
        except rx.RedisError as exc:
            self._warn("counting workers", exc)
            return 0

    async def close(self) -> None:
        await self._stop(self._tasks)
        for fut in self._waiting.values():
            if not fut.done():
                fut.set_exception(Unavailable("server is shutting down"))
        with contextlib.suppress(rx.RedisError):
            await self.client.delete(self._reply)
        await self.client.aclose()

    def _resolve(self, outcome: Outcome) -> None:
        fut = self._waiting.get(outcome.id)
        if fut is not None and not fut.done():
            fut.set_result(outcome)

    async def _read_outcomes(self) -> None:
        """One reader per frontend resolves every waiting request. The outcomes it read
        are deleted in the same round trip as the next read (an XDEL on its own waits
        for Redis's disk flush, holding up the outcomes behind it)."""
        last: bytes | str = "0-0"
        done: list[Any] = []
        while not self.closing:
            try:
                async with self.client.pipeline(transaction=False) as pipe:
                    if done:
                        pipe.xdel(self._reply, *done)
                    pipe.xread({self._reply: last}, count=512, block=POLL_MS)
                    got: Any = (await pipe.execute())[-1]
                done = []
                for _, entries in got or []:
                    for entry_id, raw in entries:
                        last = entry_id
                        done.append(entry_id)
                        head = orjson.loads(raw[b"outcome"])
                        self._resolve(outcome_from(head, raw.get(b"payload", b"")))
            except (rx.RedisError, ValueError, KeyError) as exc:
                self._warn("reading outcomes", exc)
                await asyncio.sleep(0.2)

    async def _put_back_lost(self) -> None:
        """After a failover, put in again each waiting job the new primary does not hold.

        Replication is asynchronous: a job admitted by the old primary just before it died
        may never have reached the replica Sentinels promoted. This frontend still holds
        every job it waits for, so it adds each one the new primary lacks again. A job
        that is missing because a worker already answered it runs twice at worst: the
        first outcome answers the client, the second is dropped (and a sealed request's
        second copy is refused by the workers' replay guard).
        """
        moves = failovers(self.client)
        if moves == self._failovers:
            return
        self._failovers = moves
        for job_id, (stream, fields, entry_id) in list(self._sent.items()):
            if job_id not in self._waiting or await self.client.xrange(stream, entry_id, entry_id):
                continue
            new_id = await self.client.xadd(stream, fields)
            if job_id in self._sent:
                self._sent[job_id] = (stream, fields, new_id)
            log.warning("a failover lost job %s of %s: put in again", job_id, stream)

    async def _janitor(self) -> None:
        """Answer jobs that every worker died on, even when no worker is left to notice;
        put in again jobs a failover lost."""
        while not self.closing:
            await asyncio.sleep(max(0.1, self.config.visibility_s / 2))
            try:
                await self._put_back_lost()
            except rx.RedisError as exc:
                self._failovers -= 1  # look again on the next round
                self._warn("putting back jobs a failover lost", exc)
            for queue in list(self._queues):
                try:
                    await self.reclaim(queue, "janitor", 100, self.max_deliveries)
                except (rx.RedisError, ValueError, KeyError) as exc:
                    self._warn("reclaiming stale jobs", exc)
