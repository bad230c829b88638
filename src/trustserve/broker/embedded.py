"""The embedded broker: bounded in-memory queues in the frontend process.

Worker processes on the same machine reach it over a Unix socket in a private
directory (``serve_workers``); ``SocketJobSource`` is their side. A job taken by
a worker stays "in flight" until answered; if the worker's connection drops,
its jobs go back to the head of the queue, up to ``max_deliveries`` times.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import time
from collections import deque
from dataclasses import dataclass, replace
from pathlib import Path

from trustserve.broker.base import Job, Outcome, broker_failure
from trustserve.broker.wire import (
    frame,
    frame_head,
    job_from,
    job_meta,
    outcome_from,
    outcome_meta,
    read_frame,
)
from trustserve.errors import DeadlineExceeded, Unavailable

log = logging.getLogger(__name__)
POLL_S = 1.0


@dataclass
class _Queue:
    jobs: deque[Job]
    changed: asyncio.Condition
    consumers: int = 0


class EmbeddedBroker:
    def __init__(self, max_queue: int = 1024, max_deliveries: int = 3) -> None:
        self.max_queue = max_queue
        self.max_deliveries = max_deliveries
        self._queues: dict[str, _Queue] = {}
        self._waiting: dict[str, asyncio.Future[Outcome]] = {}
        self._inflight: dict[int, dict[str, Job]] = {}
        self._consumer_ids = itertools.count(1)
        self._server: asyncio.AbstractServer | None = None

    def _queue(self, name: str) -> _Queue:
        q = self._queues.get(name)
        if q is None:
            q = self._queues[name] = _Queue(deque(), asyncio.Condition())
        return q

    # -- frontend side -------------------------------------------------------

    async def submit(self, job: Job) -> Outcome:
        q = self._queue(job.queue)
        if len(q.jobs) >= self.max_queue:
            raise Unavailable(f"queue for {job.queue} is full; retry later", retry_after=1)
        fut: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._waiting[job.id] = fut
        async with q.changed:
            q.jobs.append(replace(job, enqueued_at=time.time()))
            q.changed.notify_all()
        try:
            return await asyncio.wait_for(fut, max(0.0, job.deadline - time.time()))
        except TimeoutError:
            raise DeadlineExceeded(f"no answer from {job.queue} before the deadline") from None
        finally:
            self._waiting.pop(job.id, None)

    async def depth(self, queue: str) -> int:
        return len(self._queue(queue).jobs)

    async def consumers(self, queue: str) -> int:
        return self._queue(queue).consumers

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for fut in self._waiting.values():
            if not fut.done():
                fut.set_exception(Unavailable("server is shutting down"))

    # -- worker side (in process) -------------------------------------------

    def open_consumer(self, queue: str) -> int:
        cid = next(self._consumer_ids)
        self._inflight[cid] = {}
        self._queue(queue).consumers += 1
        return cid

    async def close_consumer(self, cid: int, queue: str) -> None:
        """A worker left: what it had taken goes back to the head of its queue."""
        jobs = self._inflight.pop(cid, {})
        q = self._queue(queue)
        q.consumers -= 1
        held = sum(1 for job in jobs.values() if job.id in self._waiting)
        if held:
            log.warning(
                "worker connection %d on %s left holding %d job(s): taken back at once",
                cid, queue, held,
            )  # fmt: skip
        async with q.changed:
            for job in reversed(list(jobs.values())):
                if job.id not in self._waiting:
                    continue
                if job.deliveries >= self.max_deliveries:
                    log.warning("job %s failed on %d workers", job.id, job.deliveries)
                    self._resolve(broker_failure(job.id))
                else:
                    q.jobs.appendleft(job)
            q.changed.notify_all()

    async def take(self, cid: int, queue: str, max_items: int, max_delay_s: float) -> list[Job]:
        q = self._queue(queue)
        async with q.changed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(q.changed.wait_for(lambda: self._live(q)), POLL_S)
            if not q.jobs:
                return []
            while len(q.jobs) < max_items:
                left = q.jobs[0].enqueued_at + max_delay_s - time.time()
                if left <= 0:
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(q.changed.wait(), left)
                if not self._live(q):
                    return []
            taken: list[Job] = []
            while q.jobs and len(taken) < max_items:
                job = q.jobs.popleft()
                if job.id in self._waiting:
                    taken.append(replace(job, deliveries=job.deliveries + 1))
        inflight = self._inflight.setdefault(cid, {})
        for job in taken:
            inflight[job.id] = job
        return taken

    def _live(self, q: _Queue) -> bool:
        """Drop jobs nobody waits for any more (deadline passed); True if any are left."""
        while q.jobs and q.jobs[0].id not in self._waiting:
            q.jobs.popleft()
        return bool(q.jobs)

    def answer(self, cid: int, outcome: Outcome) -> None:
        self._inflight.get(cid, {}).pop(outcome.id, None)
        self._resolve(outcome)

    def _resolve(self, outcome: Outcome) -> None:
        fut = self._waiting.get(outcome.id)
        if fut is not None and not fut.done():
            fut.set_result(outcome)

    # -- worker side (over a Unix socket) -----------------------------------

    async def serve_workers(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(path.parent, 0o700)
        path.unlink(missing_ok=True)
        self._server = await asyncio.start_unix_server(self._handle, path=str(path))
        os.chmod(path, 0o600)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One worker connection: answers are taken at once, even while a take is pending."""
        cid: int | None = None
        queue = ""
        pending: asyncio.Task[None] | None = None
        try:
            hello, _ = await read_frame(reader)
            if hello.get("op") != "hello" or not isinstance(hello.get("queue"), str):
                return
            queue = hello["queue"]
            cid = self.open_consumer(queue)
            writer.write(frame({"op": "welcome"}))  # counted now: connect() returns after this
            await writer.drain()
            while True:
                meta, payload = await read_frame(reader)
                op = meta.get("op")
                if op == "take" and (pending is None or pending.done()):
                    pending = asyncio.create_task(
                        self._take_for(cid, queue, int(meta["max"]), float(meta["delay"]), writer)
                    )
                elif op == "answer":
                    self.answer(cid, outcome_from(meta, payload))
                else:
                    log.warning("worker connection sent %r out of turn; closing it", op)
                    return
        except (asyncio.IncompleteReadError, ConnectionError, ValueError, KeyError):
            pass
        finally:
            if pending is not None:
                pending.cancel()
                with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                    await pending
            if cid is not None:
                await self.close_consumer(cid, queue)
            writer.close()

    async def _take_for(
        self, cid: int, queue: str, max_items: int, delay: float, writer: asyncio.StreamWriter
    ) -> None:
        jobs = await self.take(cid, queue, max_items, delay)
        parts = [frame({"op": "jobs", "n": len(jobs)})]
        for job in jobs:  # each payload as it is: one vectored write, no joined copy
            parts += (frame_head(job_meta(job), len(job.payload)), job.payload)
        writer.writelines(parts)
        await writer.drain()


class SocketJobSource:
    """A worker process's side of the embedded broker."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    @classmethod
    async def connect(cls, path: Path, queue: str) -> SocketJobSource:
        reader, writer = await asyncio.open_unix_connection(str(path), limit=1 << 20)
        writer.write(frame({"op": "hello", "queue": queue, "pid": os.getpid()}))
        await writer.drain()
        welcome, _ = await read_frame(reader)  # the broker counts this worker from here on
        if welcome.get("op") != "welcome":
            writer.close()
            raise ConnectionError("the embedded broker did not accept this worker")
        return cls(reader, writer)

    async def take(self, queue: str, max_items: int, max_delay_s: float) -> list[Job]:
        self._writer.write(frame({"op": "take", "max": max_items, "delay": max_delay_s}))
        await self._writer.drain()
        head, _ = await read_frame(self._reader)
        jobs = []
        for _ in range(int(head["n"])):
            meta, payload = await read_frame(self._reader)
            jobs.append(job_from(meta, payload))
        return jobs

    async def answer(self, job: Job, outcome: Outcome) -> None:
        self._writer.write(frame({"op": "answer", **outcome_meta(outcome)}, outcome.payload))
        await self._writer.drain()

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(ConnectionError):
            await self._writer.wait_closed()
