"""The embedded broker: bounded in-memory queues in the frontend process.

Worker processes on the same machine reach it over a Unix socket in a private
directory (``serve_workers``); ``SocketJobSource`` is their side. A job taken by
a worker stays "in flight" until answered; if the worker's connection drops,
its jobs go back to the head of the queue, up to ``max_deliveries`` times.

A worker that asks for it in its hello gets the broker's shared memory with its
welcome (``broker/slabs.py``): bodies that fit a slab travel as references to it.
The welcome also says whether this frontend sends local jobs in clear (``clear``,
``attestation.registry.clear_local_jobs``): a worker that would take them in clear
follows a frontend that seals them; one that would seal them refuses one that does not.
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

from trustserve.broker.base import Job, JobKind, Outcome, OutcomeMeta, broker_failure
from trustserve.broker.slabs import SlabPool, SlabView, handshake, parse_welcome, send_with_fd
from trustserve.broker.wire import (
    frame,
    frame_head,
    job_from,
    job_meta,
    outcome_from,
    outcome_meta,
    read_frame,
    take_bounds,
)
from trustserve.errors import BrokerTampered, ConfigError, DeadlineExceeded, Unavailable

log = logging.getLogger(__name__)
POLL_S = 1.0
# the kinds whose readers take a memoryview as they take bytes (tensors, the sealing's AEAD);
# TorchServe bodies and OHTTP messages are read with bytes' own methods: copied out
_READ_IN_PLACE = (JobKind.V2.value, JobKind.SEALED.value)


@dataclass
class _Queue:
    jobs: deque[Job]
    changed: asyncio.Condition
    consumers: int = 0


class EmbeddedBroker:
    def __init__(
        self,
        max_queue: int = 1024,
        max_deliveries: int = 3,
        clear_jobs: bool = False,
        shared_memory: bool = True,
    ) -> None:
        self.max_queue = max_queue
        self.max_deliveries = max_deliveries
        self.clear_jobs = clear_jobs  # told to workers in their welcome
        self.shared_memory = shared_memory
        self.pool: SlabPool | None = None
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
        if self.pool is not None:
            self.pool.close()
            self.pool = None
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
        if self.shared_memory:
            self.pool = SlabPool.create()
        self._server = await asyncio.start_unix_server(self._handle, path=str(path))
        os.chmod(path, 0o600)

    async def _welcome(self, writer: asyncio.StreamWriter, wants_slabs: bool) -> bool:
        """Welcomes a worker, with the shared memory if it asked; True if it got it."""
        welcome: dict[str, object] = {"op": "welcome", "clear": self.clear_jobs}
        pool = self.pool if wants_slabs else None
        if pool is not None:
            welcome |= {"slabs": pool.slabs, "slab_bytes": pool.slab_bytes}
        data = frame(welcome)
        if pool is not None:  # nothing is written to this connection before the welcome
            data = data[send_with_fd(writer.get_extra_info("socket"), data, pool.reader_fd) :]
        writer.write(data)  # counted now: connect() returns after this
        await writer.drain()
        return pool is not None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One worker connection: answers are taken at once, even while a take is pending."""
        cid: int | None = None
        queue = ""
        pending: asyncio.Task[None] | None = None
        held: dict[str, int] | None = None  # job id -> the slab its body is in, while taken
        try:
            hello, _ = await read_frame(reader)
            if hello.get("op") != "hello" or not isinstance(hello.get("queue"), str):
                return
            queue = hello["queue"]
            cid = self.open_consumer(queue)
            if await self._welcome(writer, hello.get("slabs") is True):
                held = {}
            while True:
                meta, payload = await read_frame(reader)
                op = meta.get("op")
                if op == "take" and (pending is None or pending.done()):
                    max_items, delay = take_bounds(meta)
                    pending = asyncio.create_task(
                        self._take_for(cid, queue, max_items, delay, writer, held)
                    )
                elif op == "answer":
                    outcome = outcome_from(meta, payload)
                    self.answer(cid, outcome)
                    self._free(held, outcome.id)
                else:
                    log.warning("worker connection sent %r out of turn; closing it", op)
                    return
        except (asyncio.IncompleteReadError, OSError, ValueError, KeyError):
            pass  # OSError: also a welcome whose descriptor could not be sent
        finally:
            if pending is not None:
                pending.cancel()
                with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                    await pending
            for job_id in list(held or ()):  # the worker can no longer read them: reused
                self._free(held, job_id)
            if cid is not None:
                await self.close_consumer(cid, queue)
            writer.close()

    def _free(self, held: dict[str, int] | None, job_id: str) -> None:
        """The slab of ``job_id``, if this connection holds one: free again. A worker's answer
        to a job it does not hold frees nothing."""
        slab = None if held is None else held.pop(job_id, None)
        if slab is not None and self.pool is not None:
            self.pool.free(slab)

    async def _take_for(
        self,
        cid: int,
        queue: str,
        max_items: int,
        delay: float,
        writer: asyncio.StreamWriter,
        held: dict[str, int] | None,
    ) -> None:
        jobs = await self.take(cid, queue, max_items, delay)
        parts = [frame({"op": "jobs", "n": len(jobs)})]
        for job in jobs:
            slab = None
            if held is not None and self.pool is not None:
                slab = self.pool.put(job.payload)
            if slab is None:  # each payload as it is: one vectored write, no joined copy
                parts += (frame_head(job_meta(job), len(job.payload)), job.payload)
            else:
                held[job.id] = slab  # type: ignore[index]
                parts.append(frame({**job_meta(job), "slab": [slab, len(job.payload)]}))
        writer.writelines(parts)
        await writer.drain()


class SocketJobSource:
    """A worker process's side of the embedded broker.

    ``clear``: this worker takes local jobs in clear (its own decision and the frontend's,
    told in the welcome) and so reads a body in shared memory where it is, a zero-copy
    view. Otherwise the shared memory is not trusted: each body is copied out before
    anything reads it, and the worker opens it with the broker key.
    """

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        slabs: SlabView | None = None,
        clear: bool = False,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._slabs = slabs
        self.clear = clear

    @classmethod
    async def connect(
        cls, path: Path, queue: str, clear: bool = False, shared_memory: bool = True
    ) -> SocketJobSource:
        hello = {"op": "hello", "queue": queue, "pid": os.getpid(), "slabs": shared_memory}
        sock, welcome, fds = await asyncio.to_thread(handshake, path, frame(hello))
        try:
            if welcome.get("op") != "welcome":
                raise ConnectionError("the embedded broker did not accept this worker")
            owned, fds = fds, []  # parse_welcome closes what it does not keep
            slabs = parse_welcome(welcome, owned)
            sends_clear = welcome.get("clear", False) is True
            if sends_clear and not clear:  # a downgrade: refused (docs/security.md)
                raise ConfigError(
                    "the frontend sends local jobs in clear but this worker takes them under "
                    "the broker key: start both with the same attestation provider"
                )
            clear = clear and sends_clear  # a frontend that seals is followed
        except BaseException:
            for fd in fds:
                os.close(fd)
            sock.close()
            raise
        if slabs is not None:
            log.info(
                "worker %d reads job bodies from shared memory (%d slabs of %d KiB), %s",
                os.getpid(), slabs.slabs, slabs.slab_bytes >> 10,
                "in place, in clear" if clear else "copied out, under the broker key",
            )  # fmt: skip
        # the broker counts this worker from here on
        reader, writer = await asyncio.open_unix_connection(sock=sock, limit=1 << 20)
        return cls(reader, writer, slabs, clear)

    async def take(self, queue: str, max_items: int, max_delay_s: float) -> list[Job]:
        self._writer.write(frame({"op": "take", "max": max_items, "delay": max_delay_s}))
        await self._writer.drain()
        head, _ = await read_frame(self._reader)
        jobs = []
        for _ in range(int(head["n"])):
            meta, payload = await read_frame(self._reader)
            if "slab" in meta:
                try:
                    payload = self._body(meta.pop("slab"), payload, meta.get("kind"))
                except ValueError as exc:
                    await self._refuse(meta, str(exc))
                    continue
            jobs.append(job_from(meta, payload))
        return jobs

    def _body(self, ref: object, payload: bytes, kind: object) -> bytes:
        if self._slabs is None:
            raise ValueError("a job names shared memory this worker was never given")
        if payload:
            raise ValueError("a job has both a body and a shared-memory reference")
        view = self._slabs.body(ref)
        if self.clear and kind in _READ_IN_PLACE:
            # read in place: np.frombuffer and the sealed request's decryption take a view
            return view  # type: ignore[return-value]
        return bytes(view)  # not trusted memory, or a kind read with bytes' own methods

    async def _refuse(self, meta: dict[str, object], why: str) -> None:
        """A job whose reference is not one this worker can read: answered, never read."""
        log.warning("refused a job from the embedded broker: %s", why)
        refused = BrokerTampered(f"a job from the broker was refused: {why}")
        outcome = Outcome(
            str(meta.get("id", "")),
            refused.status,
            str(refused).encode(),
            OutcomeMeta(refused.code),
        )
        await self.answer_outcome(outcome)

    async def answer(self, job: Job, outcome: Outcome) -> None:
        await self.answer_outcome(outcome)

    async def answer_outcome(self, outcome: Outcome) -> None:
        self._writer.write(frame({"op": "answer", **outcome_meta(outcome)}, outcome.payload))
        await self._writer.drain()

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(ConnectionError):
            await self._writer.wait_closed()
