"""Attacks on the shared memory between the embedded broker and its workers (issue 25).

A job's body may travel as a reference ``[slab, length]`` into the frontend's memfd
(``broker/slabs.py``). Here: forged references (outside the pool, a wrong length, a
wrong type, a reference and a body at once) are answered 502 ``broker_tampered`` by
the worker, never read and never a crash; a worker cannot free a slab another worker
holds; a slab is reclaimed when its worker's connection drops and the job is retried
from a fresh slab; a job whose deadline passed keeps its slab until its worker is done;
bodies that do not fit, or a full pool, go through the socket; the memory is not in
/dev/shm, not readable by other users, read-only and unshrinkable for workers; a worker
that would seal local jobs refuses a frontend that sends them in clear (a downgrade).

Real parts throughout: the embedded broker on a Unix socket, real worker job sources,
a real memfd. The forger is a small broker written for the test, speaking the protocol.
"""

from __future__ import annotations

import asyncio
import mmap
import os
import stat
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from trustserve.broker.base import Job, JobKind, Outcome
from trustserve.broker.embedded import EmbeddedBroker, SocketJobSource
from trustserve.broker.slabs import SLAB_BYTES, SlabPool, send_with_fd
from trustserve.broker.wire import frame, frame_head, job_meta, outcome_from, read_frame
from trustserve.errors import BrokerTampered, ConfigError, DeadlineExceeded

Q = "tiny:1"


def job(body: bytes, deadline_s: float = 60.0) -> Job:
    return Job(uuid.uuid4().hex, Q, JobKind.V2, body, time.time() + deadline_s)


def body(n: int, seed: int) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[tuple[EmbeddedBroker, Path]]:
    b = EmbeddedBroker(max_deliveries=3, clear_jobs=True)
    sock = tmp_path / "run" / "broker.sock"
    await b.serve_workers(sock)
    yield b, sock
    await b.close()


async def until(condition: Any) -> None:
    while not condition():
        await asyncio.sleep(0.01)


# -- forged references: a broker (or a frontend bug) names memory it should not ----------


class Forger:
    """A broker that welcomes a worker with a real pool, then sends the jobs it is given."""

    def __init__(self, pool: SlabPool) -> None:
        self.pool = pool
        self.frames: list[bytes] = []
        self.answers: asyncio.Queue[Outcome] = asyncio.Queue()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_frame(reader)
        welcome = frame(
            {"op": "welcome", "clear": True, "slabs": self.pool.slabs, "slab_bytes": SLAB_BYTES}
        )
        sent = send_with_fd(writer.get_extra_info("socket"), welcome, self.pool.reader_fd)
        writer.write(welcome[sent:])
        with_jobs = False
        while True:
            try:
                meta, payload = await read_frame(reader)
            except asyncio.IncompleteReadError:
                return
            if meta["op"] == "answer":
                await self.answers.put(outcome_from(meta, payload))
            elif not with_jobs:
                writer.write(frame({"op": "jobs", "n": len(self.frames)}) + b"".join(self.frames))
                with_jobs = True
            else:
                writer.write(frame({"op": "jobs", "n": 0}))


def forged(j: Job, ref: Any, payload: bytes = b"") -> bytes:
    return frame_head({**job_meta(j), "slab": ref}, len(payload)) + payload


@pytest.mark.parametrize(
    ("ref", "payload", "says"),
    [
        ([8, 10], b"", "outside the pool"),
        ([-1, 10], b"", "outside the pool"),
        ([0, SLAB_BYTES + 1], b"", "does not fit a slab"),
        ([0, 0], b"", "does not fit a slab"),
        ([0, -5], b"", "does not fit a slab"),
        ([True, 10], b"", "malformed"),
        ("0:10", b"", "malformed"),
        ([0, 10, 5], b"", "malformed"),
        ([0, 10], b"another body", "both a body and"),
    ],
)
async def test_a_forged_reference_is_refused_not_read(
    tmp_path: Path, ref: Any, payload: bytes, says: str
) -> None:
    pool = SlabPool(8, SLAB_BYTES)
    forger = Forger(pool)
    bad, good = job(b"x"), job(b"the good one")
    slab = pool.put(good.payload)
    forger.frames = [forged(bad, ref, payload), forged(good, [slab, len(good.payload)])]
    path = tmp_path / "forger.sock"
    server = await asyncio.start_unix_server(forger.handle, path=str(path))
    source = await SocketJobSource.connect(path, Q, clear=True)
    try:
        jobs = await source.take(Q, 8, 0)
        refused = await asyncio.wait_for(forger.answers.get(), 60)
    finally:
        await source.close()
        server.close()
        pool.close()
    assert [j.id for j in jobs] == [good.id]  # the forged one never reaches the engine
    assert bytes(jobs[0].payload) == b"the good one"
    assert refused.id == bad.id and refused.status == 502
    assert refused.meta.code == BrokerTampered.code and says in refused.payload.decode()


# -- slab lifetime ------------------------------------------------------------------------


async def test_a_worker_cannot_free_a_slab_another_worker_holds(
    broker: tuple[EmbeddedBroker, Path],
) -> None:
    b, sock = broker
    holder = await SocketJobSource.connect(sock, Q, clear=True)
    other = await SocketJobSource.connect(sock, Q, clear=True)
    j = job(body(600_000, 1))
    submitted = asyncio.create_task(b.submit(j))
    (taken,) = await holder.take(Q, 1, 0)
    assert b.pool is not None and b.pool.in_use == 1
    await other.answer(taken, Outcome(j.id, 200, b"from the other worker"))
    await submitted  # the frontend takes the first answer, as it always did
    await other.take(Q, 1, 0)  # a round trip on the other connection: its answer was handled
    assert b.pool.in_use == 1  # ...but the holder may still be reading: the slab stays taken
    assert bytes(taken.payload) == j.payload
    await holder.answer(taken, Outcome(j.id, 200, b"late"))
    await until(lambda: b.pool is not None and b.pool.in_use == 0)
    await holder.close()
    await other.close()


async def test_a_worker_that_dies_holding_a_slab_frees_it_and_the_job_is_retried(
    broker: tuple[EmbeddedBroker, Path],
) -> None:
    b, sock = broker
    dying = await SocketJobSource.connect(sock, Q, clear=True)
    j = job(body(600_000, 2))
    submitted = asyncio.create_task(b.submit(j))
    (first,) = await dying.take(Q, 1, 0)
    assert b.pool is not None and b.pool.in_use == 1
    await dying.close()  # its connection drops with the job
    survivor = await SocketJobSource.connect(sock, Q, clear=True)
    (again,) = await survivor.take(Q, 1, 0)
    assert again.id == j.id and again.deliveries == 2
    assert bytes(again.payload) == j.payload  # a fresh slab, the same body
    assert b.pool.in_use == 1
    await survivor.answer(again, Outcome(j.id, 200, b"ok"))
    assert (await submitted).payload == b"ok"
    await until(lambda: b.pool is not None and b.pool.in_use == 0)
    await survivor.close()
    del first


async def test_a_job_past_its_deadline_keeps_its_slab_while_its_worker_reads(
    broker: tuple[EmbeddedBroker, Path],
) -> None:
    b, sock = broker
    worker = await SocketJobSource.connect(sock, Q, clear=True)
    j = job(body(600_000, 3), deadline_s=3)
    submitted = asyncio.create_task(b.submit(j))
    (taken,) = await worker.take(Q, 1, 0)
    with pytest.raises(DeadlineExceeded):
        await submitted
    for seed in range(4, 8):  # more jobs come and go meanwhile: none may land in that slab
        other = asyncio.create_task(b.submit(job(body(600_000, seed))))
        (o,) = await worker.take(Q, 1, 0)
        await worker.answer(o, Outcome(o.id, 200, b"ok"))
        await other
    assert bytes(taken.payload) == j.payload
    assert b.pool is not None and b.pool.in_use == 1
    await worker.answer(taken, Outcome(j.id, 200, b"too late"))
    await until(lambda: b.pool is not None and b.pool.in_use == 0)
    await worker.close()


async def test_only_v2_and_sealed_bodies_are_read_in_place(
    broker: tuple[EmbeddedBroker, Path],
) -> None:
    """A TorchServe body is read with bytes' own methods (an image sent to a model without
    preprocessing is a 400 naming it, not a 500 from a view without ``startswith``)."""
    b, sock = broker
    worker = await SocketJobSource.connect(sock, Q, clear=True)
    kinds = [JobKind.V2, JobKind.SEALED, JobKind.TORCHSERVE, JobKind.OHTTP]
    jobs = [Job(uuid.uuid4().hex, Q, k, body(2000, 30), time.time() + 60) for k in kinds]
    submitted = [asyncio.create_task(b.submit(j)) for j in jobs]
    await until(lambda: len(b._queue(Q).jobs) == len(jobs))
    taken = await worker.take(Q, len(jobs), 0)
    assert [type(t.payload) for t in taken] == [memoryview, memoryview, bytes, bytes]
    assert [bytes(t.payload) for t in taken] == [j.payload for j in jobs]
    for t in taken:
        await worker.answer(t, Outcome(t.id, 200, b"ok"))
    await asyncio.gather(*submitted)
    await worker.close()


# -- the socket stays the fallback ----------------------------------------------------


async def test_a_body_bigger_than_a_slab_goes_through_the_socket(
    broker: tuple[EmbeddedBroker, Path],
) -> None:
    b, sock = broker
    worker = await SocketJobSource.connect(sock, Q, clear=True)
    j = job(body(SLAB_BYTES + 1, 9))
    submitted = asyncio.create_task(b.submit(j))
    (taken,) = await worker.take(Q, 1, 0)
    assert isinstance(taken.payload, bytes) and taken.payload == j.payload
    assert b.pool is not None and b.pool.in_use == 0
    await worker.answer(taken, Outcome(j.id, 200, b"ok"))
    assert (await submitted).status == 200
    await worker.close()


async def test_a_full_pool_sends_the_rest_through_the_socket(
    broker: tuple[EmbeddedBroker, Path],
) -> None:
    b, sock = broker
    assert b.pool is not None
    b.pool.close()
    b.pool = SlabPool(2, 4096)
    worker = await SocketJobSource.connect(sock, Q, clear=True)
    jobs = [job(body(3000, 10 + i)) for i in range(5)]
    submitted = [asyncio.create_task(b.submit(j)) for j in jobs]
    await until(lambda: len(b._queue(Q).jobs) == 5)
    taken = await worker.take(Q, 5, 0)
    assert [type(t.payload) for t in taken] == [memoryview] * 2 + [bytes] * 3
    assert [bytes(t.payload) for t in taken] == [j.payload for j in jobs]
    for t in taken:
        await worker.answer(t, Outcome(t.id, 200, bytes(t.payload)[:8]))
    answers = await asyncio.gather(*submitted)
    assert [a.payload for a in answers] == [j.payload[:8] for j in jobs]
    await until(lambda: b.pool is not None and b.pool.in_use == 0)
    await worker.close()


# -- who can read or change the memory -------------------------------------------------


def test_the_pool_is_private_read_only_to_workers_and_cannot_shrink() -> None:
    pool = SlabPool(4, 4096)
    try:
        assert not any("trustserve" in name for name in os.listdir("/dev/shm"))
        mode = os.fstat(pool.reader_fd).st_mode
        assert stat.S_IMODE(mode) == 0o600  # no other user opens it through /proc
        with pytest.raises(PermissionError):  # what a worker gets is read-only
            mmap.mmap(pool.reader_fd, 4 * 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        # a worker that reopens it for writing still cannot shrink it under the frontend
        rw = os.open(f"/proc/self/fd/{pool.reader_fd}", os.O_RDWR)
        try:
            with pytest.raises(PermissionError):
                os.ftruncate(rw, 4096)
        finally:
            os.close(rw)
    finally:
        pool.close()


async def test_a_worker_that_decided_otherwise_about_clear_jobs_does_not_start(
    broker: tuple[EmbeddedBroker, Path],
) -> None:
    _, sock = broker
    with pytest.raises(ConfigError, match="in clear but this worker takes them under the"):
        await SocketJobSource.connect(sock, Q, clear=False)  # a downgrade: refused


async def test_a_clear_worker_follows_a_frontend_that_seals(tmp_path: Path) -> None:
    b = EmbeddedBroker(clear_jobs=False)
    sock = tmp_path / "run" / "broker.sock"
    await b.serve_workers(sock)
    worker = await SocketJobSource.connect(sock, Q, clear=True)
    j = job(body(1000, 20))
    submitted = asyncio.create_task(b.submit(j))
    (taken,) = await worker.take(Q, 1, 0)
    assert not worker.clear and type(taken.payload) is bytes  # copied out, then opened
    await worker.answer(taken, Outcome(j.id, 200, b"ok"))
    await submitted
    await worker.close()
    await b.close()
