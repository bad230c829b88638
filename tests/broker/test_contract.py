"""The broker contract: every Broker/JobSource pair must pass these."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from tests.broker.conftest import BrokerPair
from trustserve.broker.base import Job, JobKind, JobMeta, Outcome, OutcomeMeta
from trustserve.errors import DeadlineExceeded, Unavailable


def job(
    queue: str = "m:1",
    payload: bytes = b"p",
    timeout: float = 10,
    kind: JobKind = JobKind.V2,
    meta: JobMeta | None = None,
) -> Job:
    meta = JobMeta(header_length=3) if meta is None else meta
    return Job(uuid.uuid4().hex, queue, kind, payload, time.time() + timeout, meta)


async def until(predicate: object, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await predicate():  # type: ignore[operator]
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition never held")


async def echo_once(pair: BrokerPair, queue: str, max_items: int = 8, delay: float = 0.01) -> int:
    source = await pair.connect(queue)
    jobs: list[Job] = []
    while not jobs:
        jobs = await source.take(queue, max_items, delay)
    for j in jobs:
        await source.answer(
            j, Outcome(j.id, 200, j.payload[::-1], OutcomeMeta(batch_size=len(jobs)))
        )
    return len(jobs)


async def test_submit_take_answer_round_trip(pair: BrokerPair) -> None:
    worker = asyncio.create_task(echo_once(pair, "m:1"))
    sent = job(payload=b"\x00secret-bytes\xff")
    outcome = await pair.broker.submit(sent)
    assert outcome.id == sent.id and outcome.status == 200
    assert outcome.payload == b"\xffsetyb-terces\x00"
    await worker


@pytest.mark.parametrize(
    ("kind", "meta"),
    [
        (JobKind.V2, JobMeta(header_length=3)),
        (JobKind.V2, JobMeta()),
        (JobKind.TORCHSERVE, JobMeta()),
        (JobKind.SEALED, JobMeta(key_id="srv-0123", version="2")),
    ],
)
async def test_jobs_keep_their_kind_and_metadata(
    pair: BrokerPair, kind: JobKind, meta: JobMeta
) -> None:
    source = await pair.connect("m:1")
    sent = job(kind=kind, meta=meta)
    task = asyncio.create_task(pair.broker.submit(sent))
    jobs: list[Job] = []
    while not jobs:
        jobs = await source.take("m:1", 1, 0)
    (got,) = jobs
    assert (got.id, got.queue, got.kind, got.payload, got.meta, got.deadline) == (
        sent.id,
        sent.queue,
        sent.kind,
        sent.payload,
        sent.meta,
        sent.deadline,
    )
    assert isinstance(got.kind, JobKind) and isinstance(got.meta, JobMeta)
    assert got.deliveries == 1 and got.enqueued_at > 0
    await source.answer(got, Outcome(got.id, 200, b"ok"))
    assert (await task).payload == b"ok"


@pytest.mark.parametrize(
    ("status", "meta"),
    [
        (200, OutcomeMeta(header_length=17, inference_ms=1.5, queue_ms=0.25, batch_size=3)),
        (200, OutcomeMeta(sealed=True)),
        (400, OutcomeMeta(code="invalid_input")),
        (400, OutcomeMeta(code="invalid_input", sealed=True)),
    ],
)
async def test_outcomes_keep_their_status_and_metadata(
    pair: BrokerPair, status: int, meta: OutcomeMeta
) -> None:
    source = await pair.connect("m:1")
    task = asyncio.create_task(pair.broker.submit(job()))
    jobs: list[Job] = []
    while not jobs:
        jobs = await source.take("m:1", 1, 0)
    await source.answer(jobs[0], Outcome(jobs[0].id, status, b"\x00answer\xff", meta))
    outcome = await task
    assert (outcome.status, outcome.payload, outcome.meta) == (status, b"\x00answer\xff", meta)
    assert not outcome.by_broker


async def test_take_fills_a_batch_up_to_max_items(pair: BrokerPair) -> None:
    source = await pair.connect("m:1")
    tasks = [asyncio.create_task(pair.broker.submit(job())) for _ in range(3)]
    await until(lambda: _depth_is(pair, "m:1", 3))
    batch = await source.take("m:1", 8, 0.05)
    assert len(batch) == 3
    for j in batch:
        await source.answer(j, Outcome(j.id, 200, b""))
    await asyncio.gather(*tasks)


async def _depth_is(pair: BrokerPair, queue: str, n: int) -> bool:
    return await pair.broker.depth(queue) == n


async def test_take_waits_for_the_batch_delay_then_returns_what_it_has(pair: BrokerPair) -> None:
    source = await pair.connect("m:1")
    first = asyncio.create_task(pair.broker.submit(job()))
    await until(lambda: _depth_is(pair, "m:1", 1))
    started = time.monotonic()
    batch = await source.take("m:1", 8, 0.3)
    assert len(batch) == 1
    assert time.monotonic() - started < 2
    await source.answer(batch[0], Outcome(batch[0].id, 200, b""))
    await first


async def test_take_without_a_window_returns_at_once_with_what_is_queued(
    pair: BrokerPair,
) -> None:
    """An idle worker asks with a zero window: it gets every queued job (up to max) now,
    not one at a time and not after waiting for a batch that is not coming."""
    source = await pair.connect("m:1")
    tasks = [asyncio.create_task(pair.broker.submit(job())) for _ in range(3)]
    await until(lambda: _depth_is(pair, "m:1", 3))
    started = time.monotonic()
    batch = await source.take("m:1", 2, 0)
    rest = await source.take("m:1", 8, 0)
    assert (len(batch), len(rest)) == (2, 1)
    assert time.monotonic() - started < 5  # a 5 s window below would not have returned yet
    for j in batch + rest:
        await source.answer(j, Outcome(j.id, 200, b""))
    await asyncio.gather(*tasks)


async def test_a_pending_take_without_a_window_returns_with_the_first_job(
    pair: BrokerPair,
) -> None:
    source = await pair.connect("m:1")
    taking = asyncio.create_task(source.take("m:1", 8, 0))
    await asyncio.sleep(0.1)  # the take is waiting on an empty queue
    sent = asyncio.create_task(pair.broker.submit(job()))
    batch: list[Job] = await asyncio.wait_for(taking, 5)
    while not batch:  # an idle poll interval may end first; the job is there next time
        batch = await source.take("m:1", 8, 0)
    assert len(batch) == 1
    await source.answer(batch[0], Outcome(batch[0].id, 200, b""))
    await sent


async def test_a_window_waits_for_more_jobs_when_the_batch_is_not_full(pair: BrokerPair) -> None:
    """The other side of the contract: with a window, a lone job is held so a batch can form."""
    source = await pair.connect("m:1")
    first = asyncio.create_task(pair.broker.submit(job()))
    await until(lambda: _depth_is(pair, "m:1", 1))
    taking = asyncio.create_task(source.take("m:1", 2, 5))
    await asyncio.sleep(0.2)
    assert not taking.done()
    second = asyncio.create_task(pair.broker.submit(job()))
    batch = await asyncio.wait_for(taking, 10)
    assert len(batch) == 2
    for j in batch:
        await source.answer(j, Outcome(j.id, 200, b""))
    await asyncio.gather(first, second)


async def test_queues_are_separate(pair: BrokerPair) -> None:
    a = asyncio.create_task(echo_once(pair, "a:1"))
    b = asyncio.create_task(echo_once(pair, "b:1"))
    ra, rb = await asyncio.gather(
        pair.broker.submit(job("a:1", b"aa1")), pair.broker.submit(job("b:1", b"bb2"))
    )
    assert (ra.payload, rb.payload) == (b"1aa", b"2bb")
    await asyncio.gather(a, b)


async def test_full_queue_is_refused_not_trimmed(pair: BrokerPair) -> None:
    tasks = [asyncio.create_task(pair.broker.submit(job())) for _ in range(4)]
    await until(lambda: _depth_is(pair, "m:1", 4))
    with pytest.raises(Unavailable):
        await pair.broker.submit(job())
    source = await pair.connect("m:1")
    answered = 0
    while answered < 4:
        for j in await source.take("m:1", 8, 0.01):
            await source.answer(j, Outcome(j.id, 200, b""))
            answered += 1
    assert all(r.status == 200 for r in await asyncio.gather(*tasks))


async def test_deadline_passes_without_a_worker(pair: BrokerPair) -> None:
    with pytest.raises(DeadlineExceeded):
        await pair.broker.submit(job(timeout=0.3))


async def test_expired_job_is_not_handed_to_a_worker_later(pair: BrokerPair) -> None:
    with pytest.raises(DeadlineExceeded):
        await pair.broker.submit(job(timeout=0.2))
    source = await pair.connect("m:1")
    assert await source.take("m:1", 8, 0.01) == []


async def test_a_dead_workers_jobs_are_redelivered(pair: BrokerPair) -> None:
    dying = await pair.connect("m:1")
    task = asyncio.create_task(pair.broker.submit(job(payload=b"abc")))
    taken: list[Job] = []
    while not taken:
        taken = await dying.take("m:1", 8, 0.01)
    await dying.close()  # dies without answering
    survivor = await echo_once(pair, "m:1")
    assert survivor == 1
    outcome = await task
    assert outcome.status == 200 and outcome.payload == b"cba"


async def test_consumers_are_counted(pair: BrokerPair) -> None:
    assert await pair.broker.consumers("m:1") == 0
    source = await pair.connect("m:1")
    await until(lambda: _consumers_are(pair, "m:1", 1))
    await source.close()
    await until(lambda: _consumers_are(pair, "m:1", 0))


async def _consumers_are(pair: BrokerPair, queue: str, n: int) -> bool:
    return await pair.broker.consumers(queue) == n


async def test_a_job_that_kills_every_worker_fails_clearly(pair: BrokerPair) -> None:
    """After max deliveries (2 here) the client gets an error instead of waiting forever."""
    task = asyncio.create_task(pair.broker.submit(job()))
    for _ in range(2):
        dying = await pair.connect("m:1")
        taken: list[Job] = []
        while not taken:
            taken = await dying.take("m:1", 8, 0.01)
        await dying.close()
    outcome = await asyncio.wait_for(task, 30)
    assert outcome.status >= 500 and outcome.by_broker
    assert outcome.meta == OutcomeMeta(code="broker_failure")
    assert b"worker" in outcome.payload
