"""The Redis Streams broker, a worker's side: take batches, keep them leased, answer.

Answers are written behind the worker's back, as the embedded broker's socket does:
``answer`` queues the outcome and returns, and one writer task sends everything
queued so far in one transaction (the outcomes, one XACK and one XDEL for all of
their jobs). With ``appendfsync always`` each transaction waits for a disk flush,
so a round trip per answer kept the engine idle for a good part of every batch.
An answer not yet written keeps its job leased; a worker that dies before writing
it leaves the job to be redelivered, as if it had died before answering.
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
from typing import Any

from redis import exceptions as rx
from redis.asyncio import Redis

from trustserve.broker.base import Job, Outcome
from trustserve.broker.redis_config import (
    RedisConfig,
)
from trustserve.broker.redis_streams import (
    GROUP,
    LIVE_S,
    POLL_MS,
    RedisSide,
    Taken,
    job_fields,
    put_outcomes,
)

log = logging.getLogger(__name__)

_HEARTBEAT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('EXPIRE', KEYS[1], 3600)
return 1
"""
FLUSH_ON_CLOSE_S = 5.0  # how long ``close`` waits for queued answers to be written


class RedisJobSource(RedisSide):
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
        self._answers: list[tuple[Taken, Outcome]] = []
        self._queued = asyncio.Event()
        self._leaving = False
        self._writer: asyncio.Task[None] | None = None

    @classmethod
    async def start(cls, client: Redis, config: RedisConfig, queue: str) -> RedisJobSource:
        source = cls(client, config, queue)
        await source._until_reachable()
        source._task = asyncio.create_task(source._keep_alive())
        source._writer = asyncio.create_task(source._write_answers())
        return source

    async def _until_reachable(self) -> None:
        """Wait for Redis to answer: a worker that cannot reach it is not ready."""
        waiting = False
        while True:
            try:
                await self._ensure_group(self.queue)
                await self._beat()
                break
            except (rx.ConnectionError, rx.TimeoutError) as exc:
                if not waiting:
                    log.warning("waiting for the broker at %s (%s)", self.config.where, exc)
                    waiting = True
                await asyncio.sleep(1.0)
            except rx.RedisError as exc:  # not a reachability problem: the take loop reports it
                self._warn("joining the queue", exc)
                break
        if waiting:
            log.info("the broker at %s answered", self.config.where)

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
                job, reply, _ = job_fields(raw)
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
        """Queue the outcome for the writer task (see the module's docstring)."""
        t = self._inflight.get(job.id)
        if t is not None:
            self._answers.append((t, outcome))
            self._queued.set()

    async def _write_answers(self) -> None:
        while not (self._leaving and not self._answers):
            await self._queued.wait()
            self._queued.clear()
            batch, self._answers = self._answers, []
            if batch:
                await self._write(batch)

    async def _write(self, batch: list[tuple[Taken, Outcome]]) -> None:
        """Route the outcomes to their frontends, then ack and delete the jobs (one transaction).

        While Redis is down this retries each answer until its job's deadline; after that
        the job stays pending and goes to another worker (its client already had a 504).
        """
        while batch:
            try:
                async with self.client.pipeline(transaction=True) as pipe:
                    now = time.time()
                    put_outcomes(pipe, [(t.reply, o) for t, o in batch if now < t.job.deadline])
                    ids = [t.entry_id for t, _ in batch]
                    pipe.xack(self.stream, GROUP, *ids)
                    pipe.xdel(self.stream, *ids)
                    await pipe.execute()
                break
            except (rx.ConnectionError, rx.TimeoutError) as exc:
                self._warn("answering", exc)
                for t, _ in batch:
                    if time.time() >= t.job.deadline:
                        self._inflight.pop(t.job.id, None)
                batch = [(t, o) for t, o in batch if time.time() < t.job.deadline]
                await asyncio.sleep(0.2)
            except rx.RedisError as exc:  # e.g. a refused command: the jobs go to another worker
                self._warn("answering", exc)
                break
        for t, _ in batch:
            self._inflight.pop(t.job.id, None)

    async def close(self) -> None:
        """Leave: queued answers are written (for up to ``FLUSH_ON_CLOSE_S``), jobs not
        answered become claimable at once, and this worker is no longer live."""
        self._leaving = True
        self._queued.set()
        if self._writer is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._writer), FLUSH_ON_CLOSE_S)
        await self._stop([t for t in (self._task, self._writer) if t is not None])
        with contextlib.suppress(rx.RedisError):
            ids: list[Any] = [t.entry_id for t in self._inflight.values()]
            if ids:
                await self.client.xclaim(
                    self.stream, GROUP, "released", 0, ids, idle=self.visibility_ms, justid=True
                )
            await self.client.zrem(self.keys.live(self.queue), self.consumer)
            await self.client.xgroup_delconsumer(self.stream, GROUP, self.consumer)
        await self.client.aclose()
