"""An operator can see a takeover: whose jobs, how many; and a worker without its broker
is not "ready"."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from pathlib import Path

import pytest

from tests.broker.redis_server import RedisServer
from trustserve.broker.base import Job, JobKind
from trustserve.broker.embedded import EmbeddedBroker, SocketJobSource
from trustserve.broker.redis import RedisStreamsBroker


def job(queue: str = "m:1") -> Job:
    return Job(uuid.uuid4().hex, queue, JobKind.V2, b"p", time.time() + 20)


async def take_n(source: object, n: int) -> list[Job]:
    taken: list[Job] = []
    while len(taken) < n:
        taken += await source.take("m:1", n - len(taken), 0)  # type: ignore[attr-defined]
    return taken


async def test_redis_takeover_names_the_dead_consumer_and_counts_its_jobs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The dead worker stops as after kill -9: no close, no heartbeat, no lease renewal."""
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        url = server.url(visibility_s="0.4")
        broker = await RedisStreamsBroker.connect(url, max_deliveries=3)
        tasks = [asyncio.create_task(broker.submit(job())) for _ in range(2)]
        ghost = await RedisStreamsBroker.connect(url, consumer_queue="m:1")
        await take_n(ghost, 2)
        assert ghost._task is not None
        ghost._task.cancel()
        survivor = await RedisStreamsBroker.connect(url, consumer_queue="m:1")
        caplog.set_level(logging.WARNING)
        again = await asyncio.wait_for(take_n(survivor, 2), 10)
        assert all(j.deliveries == 2 for j in again)
        lines = [r.getMessage() for r in caplog.records if "took over" in r.getMessage()]
        assert lines == [
            f"{survivor.consumer} took over 2 job(s) of consumer {ghost.consumer} on m:1: "
            "no lease renewal for 0.4 s"
        ]
        for t in tasks:
            t.cancel()
        await ghost.client.aclose()
        await survivor.close()
        await broker.close()
    finally:
        server.stop()


async def test_a_worker_is_not_ready_before_redis_answers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = RedisServer(tmp_path / "redis")
    url = server.url(visibility_s="1")
    caplog.set_level(logging.INFO)
    connecting = asyncio.create_task(RedisStreamsBroker.connect(url, consumer_queue="m:1"))
    deadline = time.monotonic() + 30
    while not any("waiting for the broker" in r.getMessage() for r in caplog.records):
        assert time.monotonic() < deadline, "the worker never said it waits for the broker"
        await asyncio.sleep(0.05)
    assert not connecting.done()  # the worker waits; it does not go on to say "ready"
    server.start()
    try:
        source = await asyncio.wait_for(connecting, 20)
        assert any("answered" in r.getMessage() for r in caplog.records)
        await source.close()
    finally:
        server.stop()


async def test_embedded_broker_logs_how_many_jobs_a_dead_worker_held(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    broker = EmbeddedBroker(max_deliveries=3)
    sock = tmp_path / "broker.sock"
    await broker.serve_workers(sock)
    tasks = [asyncio.create_task(broker.submit(job())) for _ in range(3)]
    ghost = await SocketJobSource.connect(sock, "m:1")
    await take_n(ghost, 3)
    caplog.set_level(logging.WARNING)
    ghost._writer.transport.abort()  # the connection drops as when the process dies
    survivor = await SocketJobSource.connect(sock, "m:1")
    again = await asyncio.wait_for(take_n(survivor, 3), 10)
    assert all(j.deliveries == 2 for j in again)
    assert any("left holding 3 job(s)" in r.getMessage() for r in caplog.records)
    for t in tasks:
        t.cancel()
    await survivor.close()
    await broker.close()
