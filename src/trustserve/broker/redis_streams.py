"""The Redis Streams broker, what both sides share: keys, leases, reclaim, dead letters.

The frontend side is ``trustserve.broker.redis``, a worker's ``trustserve.broker.redis_worker``.

Keys (``P`` is the URL's ``prefix``, default ``trustserve``):

    P:q:{queue}      stream of jobs, consumer group ``workers``; an entry is deleted
                     once answered, so XLEN counts unread + in-flight jobs
    P:dead:{queue}   dead letters: jobs that failed on ``max_deliveries`` workers
    P:c:{queue}      sorted set of live workers (heartbeat time, Redis clock)
    P:r:{frontend}   stream of outcomes for one frontend instance (expires)

A job is admitted only while XLEN < max_queue (its XADD and a check that deletes it
again if the queue is over, in one MULTI: atomic, no worker sees it): a full
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
import time
from collections import Counter
from dataclasses import replace
from typing import Any, NamedTuple

import orjson
from redis import exceptions as rx
from redis.asyncio import Redis

from trustserve.broker.base import Job, Outcome, broker_failure
from trustserve.broker.redis_config import (
    RedisConfig,
)
from trustserve.broker.wire import job_from, job_meta, outcome_meta

log = logging.getLogger(__name__)
GROUP = "workers"
POLL_MS = 1000
RESULT_TTL_S = 300
LIVE_S = 5.0
DEAD_LETTERS = 10_000


def job_fields(raw: dict[bytes, bytes]) -> tuple[Job, str, int]:
    head = orjson.loads(raw[b"job"])
    return job_from(head, raw.get(b"payload", b"")), raw[b"reply"].decode(), int(raw[b"max"])


class Keys:
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

    def shard(self) -> str:
        """The position in the broker option's shard list this server holds (shards.py)."""
        return f"{self.prefix}:shard"


class RedisSide:
    """What both sides share: the client, the key names and the reclaim of stale jobs."""

    def __init__(self, client: Redis, config: RedisConfig) -> None:
        self.client = client
        self.config = config
        self.keys = Keys(config.prefix)
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
        chosen = [p for p in pending if limit is None or int(p["times_delivered"]) >= limit]
        delivered = {p["message_id"]: int(p["times_delivered"]) for p in chosen}
        if not delivered:
            return []
        claimed: Any = await self.client.xclaim(
            stream, GROUP, consumer, self.visibility_ms, list(delivered)
        )
        got = {entry_id for entry_id, raw in claimed if raw}
        owners = Counter(_text(p["consumer"]) for p in chosen if p["message_id"] in got)
        for owner, jobs in sorted(owners.items()) if limit is None else ():
            log.warning(
                "%s took over %d job(s) of consumer %s on %s: no lease renewal for %.1f s",
                consumer, jobs, owner, queue, self.config.visibility_s,
            )  # fmt: skip
        taken = []
        for entry_id, raw in claimed:
            if not raw:
                continue
            job, reply, max_deliveries = job_fields(raw)
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
            put_outcome(pipe, reply, outcome)
            pipe.xack(stream, GROUP, entry_id)
            pipe.xdel(stream, entry_id)
            await pipe.execute()


class Taken(NamedTuple):
    job: Job
    entry_id: bytes
    reply: str


def put_outcome(pipe: Any, reply: str, outcome: Outcome) -> None:
    put_outcomes(pipe, [(reply, outcome)])


def put_outcomes(pipe: Any, answers: list[tuple[str, Outcome]]) -> None:
    """Queue on ``pipe`` each outcome on its reply stream, and one EXPIRE per stream."""
    for reply, outcome in answers:
        meta = orjson.dumps(outcome_meta(outcome))
        pipe.xadd(reply, {"outcome": meta, "payload": outcome.payload})
    for reply in dict.fromkeys(reply for reply, _ in answers):
        pipe.expire(reply, RESULT_TTL_S)


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
