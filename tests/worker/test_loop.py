"""The worker loop with an in-memory job source and a small numpy engine (no subprocess)."""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from pathlib import Path

import numpy as np
import orjson

from tests.support import tiny_manifest
from trustserve.broker.base import Job, JobKind, JobMeta, Outcome
from trustserve.broker.embedded import EmbeddedBroker, SocketJobSource
from trustserve.engines.base import Tensors
from trustserve.tensors import Tensor, encode_binary, parse_response
from trustserve.worker.loop import BatchWindow, WorkerLoop


class MemorySource:
    """A JobSource over a list: ``take`` hands out what is queued, answers are recorded."""

    def __init__(self) -> None:
        self.queued: list[Job] = []
        self.answers: list[tuple[Job, Outcome]] = []
        self.takes = 0
        self.windows: list[float] = []

    async def take(self, queue: str, max_items: int, max_delay_s: float) -> list[Job]:
        self.takes += 1
        self.windows.append(max_delay_s)
        if not self.queued:
            await asyncio.sleep(3600)  # idle until the loop is told to stop
        taken, self.queued = self.queued[:max_items], self.queued[max_items:]
        return taken

    async def answer(self, job: Job, outcome: Outcome) -> None:
        self.answers.append((job, outcome))

    async def close(self) -> None:
        pass


class TinyEngine:
    """y = 2x + 1, s = row sums; records the batch sizes it ran; can be made to fail."""

    name = "numpy"

    def __init__(self, fail: bool = False) -> None:
        self.batches: list[int] = []
        self.fail = fail

    def infer(self, inputs: Tensors) -> Tensors:
        x = inputs["x"]
        self.batches.append(x.shape[0])
        if self.fail:
            raise RuntimeError("engine fault")
        return {"y": 2 * x + 1, "s": x.sum(axis=1, keepdims=True)}


def v2(x: np.ndarray) -> Job:
    body, hlen = encode_binary(
        {"parameters": {"binary_data_output": True}},
        "inputs",
        [Tensor("x", "FP32", tuple(x.shape), x)],
    )
    return Job(
        uuid.uuid4().hex,
        "tiny:1",
        JobKind.V2,
        body,
        time.time() + 30,
        JobMeta(header_length=hlen),
        enqueued_at=time.time(),
    )


def y_of(outcome: Outcome) -> np.ndarray:
    _, tensors = parse_response(outcome.payload, outcome.meta.header_length)
    return {t.name: t.data for t in tensors}["y"]


def loop_with(engine: TinyEngine, source: MemorySource, max_batch: int = 8) -> WorkerLoop:
    manifest = tiny_manifest(max_batch_size=max_batch)
    return WorkerLoop(source, "tiny:1", manifest, engine)


async def test_every_job_is_answered_once_with_its_own_rows() -> None:
    source, engine = MemorySource(), TinyEngine()
    xs = [np.full((n, 4), n, np.float32) for n in (1, 3, 2)]
    jobs = [v2(x) for x in xs]
    await loop_with(engine, source).process(jobs)
    assert engine.batches == [6]
    assert [j.id for j, _ in source.answers] == [j.id for j in jobs]
    for x, (_, outcome) in zip(xs, source.answers, strict=True):
        assert outcome.status == 200
        np.testing.assert_array_equal(y_of(outcome), 2 * x + 1)
        assert outcome.meta.batch_size == 6 and outcome.meta.inference_ms is not None


async def test_runs_are_cut_at_max_batch_size() -> None:
    source, engine = MemorySource(), TinyEngine()
    await loop_with(engine, source, max_batch=4).process(
        [v2(np.ones((n, 4), np.float32)) for n in (3, 2, 2, 4)]
    )
    assert engine.batches == [3, 4, 4]
    assert [o.meta.batch_size for _, o in source.answers] == [3, 4, 4, 4]


async def test_a_bad_job_is_answered_alone_and_the_rest_still_run() -> None:
    source, engine = MemorySource(), TinyEngine()
    bad = Job(uuid.uuid4().hex, "tiny:1", JobKind.TORCHSERVE, b"{no", time.time() + 30)
    good = v2(np.ones((1, 4), np.float32))
    await loop_with(engine, source).process([bad, good])
    answered = {j.id: o for j, o in source.answers}
    assert len(source.answers) == 2
    assert answered[bad.id].status == 400 and answered[bad.id].meta.code == "invalid_input"
    assert answered[good.id].status == 200 and engine.batches == [1]


async def test_an_engine_failure_answers_every_job_of_the_run_500() -> None:
    source, engine = MemorySource(), TinyEngine(fail=True)
    jobs = [v2(np.ones((1, 4), np.float32)) for _ in range(3)]
    await loop_with(engine, source).process(jobs)
    assert [o.status for _, o in source.answers] == [500] * 3
    assert all(o.payload == b"inference failed" for _, o in source.answers)
    assert all(o.meta.code == "internal" for _, o in source.answers)


async def test_torchserve_jobs_get_a_json_answer() -> None:
    source, engine = MemorySource(), TinyEngine()
    job = Job(uuid.uuid4().hex, "tiny:1", JobKind.TORCHSERVE, b"[[1, 1, 1, 1]]", time.time() + 30)
    await loop_with(engine, source).process([job])
    ((_, outcome),) = source.answers
    assert outcome.meta.header_length is None
    assert orjson.loads(outcome.payload) == {"y": [3, 3, 3, 3], "s": [4]}


async def test_run_serves_until_stopped_and_abandons_a_pending_take() -> None:
    source, engine = MemorySource(), TinyEngine()
    source.queued = [v2(np.ones((1, 4), np.float32)) for _ in range(2)]
    stop = asyncio.Event()
    running = asyncio.create_task(loop_with(engine, source).run(stop))
    while len(source.answers) < 2 or source.takes < 2:  # then idle in a second take
        await asyncio.sleep(0.01)
    stop.set()
    await asyncio.wait_for(running, 5)
    assert len(source.answers) == 2


async def test_a_sealed_job_without_serving_keys_is_refused_with_the_stale_key_code() -> None:
    source = MemorySource()
    job = Job(
        uuid.uuid4().hex, "tiny:1", JobKind.SEALED, b"x" * 64, time.time() + 30, JobMeta(key_id="k")
    )
    await loop_with(TinyEngine(), source).process([job])
    ((_, outcome),) = source.answers
    assert outcome.status == 400 and outcome.meta.code == "stale_serving_key"


def test_the_batch_window_applies_only_after_a_full_batch() -> None:
    window = BatchWindow(0.05, 8)
    assert window.next() == 0  # idle: dispatch the first request at once
    window.taken(8)
    assert window.next() == 0.05  # load outruns the batch: let the next one fill
    window.taken(3)
    assert window.next() == 0  # the engine keeps up again
    window.taken(8)
    window.taken(0)
    assert window.next() == 0  # an idle poll


async def test_run_asks_for_the_window_only_while_batches_come_back_full() -> None:
    source, engine = MemorySource(), TinyEngine()
    source.queued = [v2(np.ones((1, 4), np.float32)) for _ in range(10)]
    stop = asyncio.Event()
    manifest = tiny_manifest(max_batch_size=8, max_batch_delay_ms=50)
    running = asyncio.create_task(WorkerLoop(source, "tiny:1", manifest, engine).run(stop))
    while len(source.answers) < 10 or source.takes < 3:
        await asyncio.sleep(0.01)
    stop.set()
    await asyncio.wait_for(running, 5)
    assert engine.batches == [8, 2]
    assert source.windows == [0, 0.05, 0]


async def test_a_lone_request_is_not_held_for_the_batch_window(tmp_path: Path) -> None:
    """Through the embedded broker's socket, one request at a time with a 10 s window: each
    job is dispatched as soon as it is queued (its queue time and latency stay far below the
    window), where the old loop held each one for the whole window. (The window is long so
    that half of it is far above what a loaded machine adds to a round trip.)"""
    broker = EmbeddedBroker()
    sock = tmp_path / "run" / "broker.sock"
    await broker.serve_workers(sock)
    source = await SocketJobSource.connect(sock, "tiny:1")
    manifest = tiny_manifest(max_batch_size=8, max_batch_delay_ms=10_000)
    engine, stop = TinyEngine(), asyncio.Event()
    running = asyncio.create_task(WorkerLoop(source, "tiny:1", manifest, engine).run(stop))
    latencies, queued = [], []
    for _ in range(5):
        started = time.monotonic()
        outcome = await broker.submit(v2(np.ones((1, 4), np.float32)))
        latencies.append(time.monotonic() - started)
        assert outcome.status == 200 and outcome.meta.queue_ms is not None
        queued.append(outcome.meta.queue_ms)
    stop.set()
    await asyncio.wait_for(running, 5)
    await source.close()
    await broker.close()
    assert engine.batches == [1] * 5
    assert statistics.median(latencies) < 5.0 and max(queued) < 5000
