"""The Redis Streams broker: many frontends and many workers on many hosts.

Keys (``P`` is the URL's ``prefix``, default ``trustserve``):

    P:q:{queue}      stream of jobs, consumer group ``workers``; an entry is deleted
                     once answered, so XLEN counts unread + in-flight jobs
    P:dead:{queue}   dead letters: jobs that failed on ``max_deliveries`` workers
    P:c:{queue}      sorted set of live workers (heartbeat time, Redis clock)
    P:r:{frontend}   stream of outcomes for one frontend instance (expires)

A job is admitted only while XLEN < max_queue (one Lua script, atomic): a full
queue is refused with ``Unavailable``, an accepted job is never trimmed. A worker
keeps its in-flight jobs leased (XCLAIM JUSTID resets their idle time); jobs idle
longer than the visibility timeout belonged to a dead worker and are claimed by
another one. A job delivered ``max_deliveries`` times goes to the dead-letter
stream and its client gets a 500. The frontend answers each client once: the
first outcome wins, a late duplicate is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from dataclasses import replace
from typing import Any, NamedTuple, overload

import orjson
from redis import exceptions as rx
from redis.asyncio import Redis

from trustserve.broker.base import Job, Outcome, broker_failure
from trustserve.broker.redis_config import (
    RedisConfig,
    check_connection,
    open_client,
    parse_redis_url,
)
from trustserve.broker.wire import job_from, job_meta, outcome_from, outcome_meta
from trustserve.errors import ConfigError, DeadlineExceeded, Unavailable

log = logging.getLogger(__name__)
GROUP = "workers"
POLL_MS = 1000
RESULT_TTL_S = 300
LIVE_S = 5.0
DEAD_LETTERS = 10_000

_ADMIT = """
if redis.call('XLEN', KEYS[1]) >= tonumber(ARGV[1]) then return false end
return redis.call('XADD', KEYS[1], '*', unpack(ARGV, 2))
"""
_HEARTBEAT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('EXPIRE', KEYS[1], 3600)
return 1
"""
_LIVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
return redis.call('ZCOUNT', KEYS[1], now - tonumber(ARGV[1]), '+inf')
"""


def _fields(raw: dict[bytes, bytes]) -> tuple[Job, str, int]:
    head = orjson.loads(raw[b"job"])
    return job_from(head, raw.get(b"payload", b"")), raw[b"reply"].decode(), int(raw[b"max"])


class _Keys:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def stream(self, queue: str) -> str:
        return f"{self.prefix}:q:{queue}"

    def dead(self, queue: str) -> str:
        return f"{self.prefix}:dead:{queue}"

    def live(self, queue: str) -> str:
        return f"{self.prefix}:c:{queue}"

    def reply(self, frontend: str) -> str:
        return f"{self.prefix}:r:{frontend}"


class _Redis:
    """What both sides share: the client, the key names and the reclaim of stale jobs."""

    def __init__(self, client: Redis, config: RedisConfig) -> None:
        self.client = client
        self.config = config
        self.keys = _Keys(config.prefix)
        self.visibility_ms = int(config.visibility_s * 1000)
        self._warned_at: dict[str, float] = {}
        self.closing = False

    def _warn(self, what: str, exc: Exception) -> None:
        """Log a failure, each kind at most every 10 s (an outage must not flood the log)."""
        if time.monotonic() - self._warned_at.get(what, -60.0) > 10:
            self._warned_at[what] = time.monotonic()
            log.warning("Redis at %s: %s failed (%s)", self.config.where, what, exc)

    async def _stop(self, tasks: list[asyncio.Task[None]]) -> None:
        """Stop background loops; bounded, as redis-py may turn a cancellation into an error."""
        self.closing = True
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=2)

    async def _ensure_group(self, queue: str) -> None:
        with contextlib.suppress(rx.ResponseError):  # BUSYGROUP: it exists
            await self.client.xgroup_create(self.keys.stream(queue), GROUP, "0", mkstream=True)

    async def reclaim(
        self, queue: str, consumer: str, count: int, limit: int | None
    ) -> list[Taken]:
        """Claim jobs idle past the visibility timeout; dead-letter those out of deliveries.

        ``limit`` None (a worker): claim all of them and return the live ones. A number
        (the frontend, which runs no jobs): claim only those delivered ``limit`` times.
        """
        stream = self.keys.stream(queue)
        try:
            pending = await self.client.xpending_range(
                stream, GROUP, "-", "+", count, idle=self.visibility_ms
            )
        except rx.ResponseError:  # NOGROUP: nothing was ever taken
            return []
        delivered = {
            p["message_id"]: int(p["times_delivered"])
            for p in pending
            if limit is None or int(p["times_delivered"]) >= limit
        }
        if not delivered:
            return []
        claimed: Any = await self.client.xclaim(
            stream, GROUP, consumer, self.visibility_ms, list(delivered)
        )
        taken = []
        for entry_id, raw in claimed:
            if not raw:
                continue
            job, reply, max_deliveries = _fields(raw)
            before = delivered[entry_id]
            if limit is not None or before >= max_deliveries:
                await self._dead_letter(queue, entry_id, job, reply, before)
            else:
                taken.append(Taken(replace(job, deliveries=before + 1), entry_id, reply))
        return taken

    async def _dead_letter(
        self, queue: str, entry_id: bytes, job: Job, reply: str, deliveries: int
    ) -> None:
        log.warning("job %s failed on %d workers: dead-lettered", job.id, deliveries)
        message = f"request failed on every worker that took it ({deliveries} deliveries)"
        outcome = broker_failure(job.id, message)
        stream = self.keys.stream(queue)
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.xadd(
                self.keys.dead(queue),
                {"job": orjson.dumps(job_meta(job)), "deliveries": deliveries, "reason": message},
                maxlen=DEAD_LETTERS,
                approximate=True,
            )
            _put_outcome(pipe, reply, outcome)
            pipe.xack(stream, GROUP, entry_id)
            pipe.xdel(stream, entry_id)
            await pipe.execute()


class Taken(NamedTuple):
    job: Job
    entry_id: bytes
    reply: str


def _put_outcome(pipe: Any, reply: str, outcome: Outcome) -> None:
    pipe.xadd(reply, {"outcome": orjson.dumps(outcome_meta(outcome)), "payload": outcome.payload})
    pipe.expire(reply, RESULT_TTL_S)


class RedisStreamsBroker(_Redis):
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
        self._queues: set[str] = set()
        self._admit = client.register_script(_ADMIT)
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
        args: list[Any] = [self.max_queue, "job", head, "reply", self._reply]
        args += ["max", self.max_deliveries, "payload", job.payload]
        try:
            try:
                entry_id = await self._admit(keys=[stream], args=args)
            except (rx.ConnectionError, rx.TimeoutError, rx.ResponseError) as exc:
                self._warn("admitting a job", exc)
                raise Unavailable("the job broker (Redis) is unreachable; retry later") from None
            if entry_id is None:
                raise Unavailable(f"queue for {job.queue} is full; retry later", retry_after=1)
            try:
                return await asyncio.wait_for(fut, max(0.0, job.deadline - time.time()))
            except TimeoutError:
                with contextlib.suppress(rx.RedisError):
                    await self.client.xdel(stream, entry_id)
                raise DeadlineExceeded(f"no answer from {job.queue} before the deadline") from None
        finally:
            self._waiting.pop(job.id, None)

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
        last: bytes | str = "0-0"
        while not self.closing:
            try:
                got: Any = await self.client.xread({self._reply: last}, count=512, block=POLL_MS)
                for _, entries in got or []:
                    ids = []
                    for entry_id, raw in entries:
                        last = entry_id
                        ids.append(entry_id)
                        head = orjson.loads(raw[b"outcome"])
                        self._resolve(outcome_from(head, raw.get(b"payload", b"")))
                    await self.client.xdel(self._reply, *ids)
            except (rx.RedisError, ValueError, KeyError) as exc:
                self._warn("reading outcomes", exc)
                await asyncio.sleep(0.2)

    async def _janitor(self) -> None:
        """Answer jobs that every worker died on, even when no worker is left to notice."""
        while not self.closing:
            await asyncio.sleep(max(0.1, self.config.visibility_s / 2))
            for queue in list(self._queues):
                try:
                    await self.reclaim(queue, "janitor", 100, self.max_deliveries)
                except (rx.RedisError, ValueError, KeyError) as exc:
                    self._warn("reclaiming stale jobs", exc)


class RedisJobSource(_Redis):
    """A worker's side: takes batches from one queue's consumer group."""

    def __init__(self, client: Redis, config: RedisConfig, queue: str) -> None:
        super().__init__(client, config)
        self.queue = queue
        self.stream = self.keys.stream(queue)
        self.consumer = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._inflight: dict[str, Taken] = {}
        self._heartbeat = client.register_script(_HEARTBEAT)
        self._next_reclaim = 0.0
        self._task: asyncio.Task[None] | None = None

    @classmethod
    async def start(cls, client: Redis, config: RedisConfig, queue: str) -> RedisJobSource:
        source = cls(client, config, queue)
        with contextlib.suppress(rx.RedisError):
            await source._ensure_group(queue)
            await source._beat()
        source._task = asyncio.create_task(source._keep_alive())
        return source

    async def _beat(self) -> None:
        await self._heartbeat(keys=[self.keys.live(self.queue)], args=[self.consumer, LIVE_S])

    async def _keep_alive(self) -> None:
        """Heartbeat, and renew the lease on jobs in flight (resets their idle time)."""
        while not self.closing:
            await asyncio.sleep(min(1.0, self.config.visibility_s / 3))
            try:
                await self._beat()
                ids: list[Any] = [t.entry_id for t in self._inflight.values()]
                if ids:
                    await self.client.xclaim(self.stream, GROUP, self.consumer, 0, ids, justid=True)
            except rx.RedisError as exc:
                self._warn("heartbeat", exc)

    async def take(self, queue: str, max_items: int, max_delay_s: float) -> list[Job]:
        try:
            taken = await self._take(max_items, max_delay_s)
        except rx.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            with contextlib.suppress(rx.RedisError):
                await self._ensure_group(queue)
            return []
        except (rx.ConnectionError, rx.TimeoutError) as exc:
            self._warn("taking jobs", exc)
            await asyncio.sleep(0.5)
            return []
        for t in taken:
            self._inflight[t.job.id] = t
        return [t.job for t in taken]

    async def _take(self, max_items: int, max_delay_s: float) -> list[Taken]:
        taken: list[Taken] = []
        if time.monotonic() >= self._next_reclaim:
            self._next_reclaim = time.monotonic() + self.config.visibility_s / 4
            taken = await self.reclaim(self.queue, self.consumer, max_items, None)
        wait_until: float | None = None
        while len(taken) < max_items:
            block: int | None = POLL_MS
            if taken:
                if wait_until is None:
                    waited = time.time() - taken[0].job.enqueued_at
                    wait_until = time.monotonic() + min(max_delay_s, max(0.0, max_delay_s - waited))
                left_ms = int((wait_until - time.monotonic()) * 1000)
                block = left_ms if left_ms >= 1 else None
            got = await self._read(max_items - len(taken), block)
            taken += got
            if not got or block is None:
                break
        return taken

    async def _read(self, count: int, block: int | None) -> list[Taken]:
        got: Any = await self.client.xreadgroup(
            GROUP, self.consumer, {self.stream: ">"}, count=count, block=block
        )
        taken: list[Taken] = []
        expired: list[bytes] = []
        now = time.time()
        for _, entries in got or []:
            for entry_id, raw in entries:
                job, reply, _ = _fields(raw)
                if job.deadline <= now:
                    expired.append(entry_id)  # its client got a 504 already
                else:
                    taken.append(Taken(replace(job, deliveries=1), entry_id, reply))
        if expired:
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.xack(self.stream, GROUP, *expired)
                pipe.xdel(self.stream, *expired)
                await pipe.execute()
        return taken

    async def answer(self, job: Job, outcome: Outcome) -> None:
        """Route the outcome to its frontend, then ack and delete the job (one transaction).

        While Redis is down this retries until the job's deadline; after that the job
        stays pending and goes to another worker (its client already had a 504).
        """
        t = self._inflight.get(job.id)
        if t is None:
            return
        while True:
            try:
                async with self.client.pipeline(transaction=True) as pipe:
                    if time.time() < job.deadline:
                        _put_outcome(pipe, t.reply, outcome)
                    pipe.xack(self.stream, GROUP, t.entry_id)
                    pipe.xdel(self.stream, t.entry_id)
                    await pipe.execute()
                break
            except (rx.ConnectionError, rx.TimeoutError) as exc:
                self._warn("answering", exc)
                if time.time() >= job.deadline:
                    break
                await asyncio.sleep(0.2)
        self._inflight.pop(job.id, None)

    async def close(self) -> None:
        """Leave: jobs not answered become claimable at once; this worker is no longer live."""
        await self._stop([self._task] if self._task else [])
        with contextlib.suppress(rx.RedisError):
            ids: list[Any] = [t.entry_id for t in self._inflight.values()]
            if ids:
                await self.client.xclaim(
                    self.stream, GROUP, "released", 0, ids, idle=self.visibility_ms, justid=True
                )
            await self.client.zrem(self.keys.live(self.queue), self.consumer)
            await self.client.xgroup_delconsumer(self.stream, GROUP, self.consumer)
        await self.client.aclose()
