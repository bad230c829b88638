"""What only the Redis broker does: URLs and credentials, TLS, many frontends, dead letters."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.broker.redis_server import RedisServer
from trustserve.broker.base import Job, JobKind, JobSource, Outcome
from trustserve.broker.redis import RedisStreamsBroker
from trustserve.broker.redis_config import parse_redis_url
from trustserve.errors import ConfigError, DeadlineExceeded, Unavailable
from trustserve.tls import issue_local_ca


@pytest.fixture
async def redis(tmp_path: Path) -> AsyncIterator[RedisServer]:
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


def job(queue: str = "m:1", payload: bytes = b"p", timeout: float = 10) -> Job:
    return Job(uuid.uuid4().hex, queue, JobKind.V2, payload, time.time() + timeout)


async def serve(source: JobSource, queue: str, stop: asyncio.Event) -> int:
    """Echo worker: answers payload reversed until ``stop``; returns how many it answered."""
    n = 0
    while not stop.is_set():
        for j in await source.take(queue, 8, 0.005):
            await source.answer(j, Outcome(j.id, 200, j.payload[::-1]))
            n += 1
    return n


def test_password_in_the_url_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="password_file") as err:
        parse_redis_url("rediss://trustserve:hunter2-secret@localhost:6380/0")
    assert "hunter2-secret" not in str(err.value)


def test_unknown_parameters_and_half_client_certs_are_refused(redis: RedisServer) -> None:
    with pytest.raises(ConfigError, match="passwordfile"):
        parse_redis_url(redis.url() + "&passwordfile=/x")
    with pytest.raises(ConfigError, match="both cert= and key="):
        parse_redis_url(f"rediss://u@localhost:1/0?cert={redis.client_cert}")


def test_plain_redis_works_only_with_a_loud_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        config = parse_redis_url("redis://localhost:6379/0", env={})
    assert not config.tls
    assert "WITHOUT TLS" in caplog.text


async def test_password_file_from_the_environment(
    redis: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRUSTSERVE_REDIS_PASSWORD_FILE", str(redis.password_file))
    url = redis.url(password_file="")
    assert "password_file=" not in url
    broker = await RedisStreamsBroker.connect(url)
    assert await broker.depth("m:1") == 0
    await broker.close()


async def test_wrong_password_is_refused_clearly(redis: RedisServer, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-password")
    wrong.chmod(0o600)
    with pytest.raises(ConfigError, match="wrong password or unknown ACL user"):
        await RedisStreamsBroker.connect(redis.url(password_file=str(wrong)))


async def test_server_from_another_ca_is_refused_clearly(
    redis: RedisServer, tmp_path: Path
) -> None:
    other = issue_local_ca(tmp_path / "other-ca")
    with pytest.raises(ConfigError, match="does not verify"):
        await RedisStreamsBroker.connect(redis.url(ca=str(other.ca)))


async def test_a_client_without_a_certificate_is_refused(redis: RedisServer) -> None:
    url = redis.url(cert="", key="")
    with pytest.raises(ConfigError, match="requires a client certificate"):
        await RedisStreamsBroker.connect(url)


async def test_outcomes_go_back_to_the_frontend_that_holds_the_request(
    redis: RedisServer,
) -> None:
    url = redis.url()
    fronts = [await RedisStreamsBroker.connect(url) for _ in range(3)]
    workers = [await RedisStreamsBroker.connect(url, consumer_queue="m:1") for _ in range(2)]
    stop = asyncio.Event()
    serving = [asyncio.create_task(serve(w, "m:1", stop)) for w in workers]
    sent = [(f, f"{i}:{n}".encode()) for i, f in enumerate(fronts) for n in range(30)]
    outcomes = await asyncio.gather(*(f.submit(job(payload=p)) for f, p in sent))
    assert [o.payload for o in outcomes] == [p[::-1] for _, p in sent]
    assert await fronts[0].consumers("m:1") == 2
    stop.set()
    assert sum(await asyncio.gather(*serving)) == len(sent)
    for x in [*workers, *fronts]:
        await x.close()


async def test_a_full_queue_refuses_and_keeps_every_accepted_job(redis: RedisServer) -> None:
    """Two frontends race for a bound of 10: 10 accepted, the rest 503, none trimmed."""
    url = redis.url()
    a = await RedisStreamsBroker.connect(url, max_queue=10)
    b = await RedisStreamsBroker.connect(url, max_queue=10)
    tasks = [asyncio.create_task(f.submit(job(timeout=30))) for f in (a, b) * 15]

    def refused() -> list[asyncio.Task[Outcome]]:
        return [t for t in tasks if t.done() and isinstance(t.exception(), Unavailable)]

    # every submission decided: refused at once, or admitted and waiting for a worker
    deadline = time.monotonic() + 30
    while len(refused()) + await a.depth("m:1") < len(tasks):
        assert time.monotonic() < deadline, (len(refused()), await a.depth("m:1"))
        await asyncio.sleep(0.02)
    assert len(refused()) == 20
    assert await a.depth("m:1") == 10
    worker = await RedisStreamsBroker.connect(url, consumer_queue="m:1")
    stop = asyncio.Event()
    serving = asyncio.create_task(serve(worker, "m:1", stop))
    accepted = [t for t in tasks if t not in refused()]
    assert all(o.status == 200 for o in await asyncio.gather(*accepted))
    stop.set()
    assert await serving == 10
    for x in (worker, a, b):
        await x.close()


async def test_answers_queued_when_a_worker_leaves_are_delivered_not_redone(
    redis: RedisServer,
) -> None:
    """A worker's answers are written behind its back; leaving right after answering a
    batch must deliver them, not hand the batch to another worker to run again."""
    url = redis.url()
    broker = await RedisStreamsBroker.connect(url)
    tasks = [asyncio.create_task(broker.submit(job(payload=b"%d" % i))) for i in range(8)]
    leaving = await RedisStreamsBroker.connect(url, consumer_queue="m:1")
    taken: list[Job] = []
    while len(taken) < 8:
        taken += await leaving.take("m:1", 8 - len(taken), 0)
    for j in taken:
        await leaving.answer(j, Outcome(j.id, 200, b"first:" + j.payload))
    await leaving.close()
    second = await RedisStreamsBroker.connect(url, consumer_queue="m:1")
    stop = asyncio.Event()
    serving = asyncio.create_task(serve(second, "m:1", stop))
    outcomes = await asyncio.wait_for(asyncio.gather(*tasks), 10)
    assert [o.payload for o in outcomes] == [b"first:%d" % i for i in range(8)]
    assert await broker.depth("m:1") == 0
    stop.set()
    assert await serving == 0
    for x in (second, broker):
        await x.close()


async def test_dead_letters_keep_the_job_facts_but_not_its_payload(redis: RedisServer) -> None:
    url = redis.url(visibility_s="0.3")
    broker = await RedisStreamsBroker.connect(url, max_deliveries=1)
    task = asyncio.create_task(broker.submit(job(payload=b"private-bytes")))
    dying = await RedisStreamsBroker.connect(url, consumer_queue="m:1")
    while not await dying.take("m:1", 1, 0):
        pass
    await dying.close()
    outcome = await asyncio.wait_for(task, 10)
    assert outcome.status == 500 and b"1 deliveries" in outcome.payload
    entries = await broker.client.xrange("trustserve:dead:m:1")
    assert len(entries) == 1
    assert b"private-bytes" not in b"".join(v for _, f in entries for v in f.values())
    await broker.close()


async def test_a_job_whose_workers_vanish_is_dead_lettered(redis: RedisServer) -> None:
    """Workers that stop dead (no close, no heartbeat, no lease renewal: as after kill -9):
    the job is reclaimed after the visibility timeout, then dead-lettered with a 500."""
    url = redis.url(visibility_s="0.3")
    broker = await RedisStreamsBroker.connect(url, max_deliveries=2)
    task = asyncio.create_task(broker.submit(job(timeout=20)))
    ghosts = []
    for delivery in (1, 2):
        ghost = await RedisStreamsBroker.connect(url, consumer_queue="m:1")
        taken: list[Job] = []
        while not taken:
            taken = await ghost.take("m:1", 8, 0)
        assert taken[0].deliveries == delivery
        assert ghost._task is not None
        ghost._task.cancel()  # dead from here on
        ghosts.append(ghost)
    outcome = await asyncio.wait_for(task, 60)  # a bound on failure, not a timing claim
    assert outcome.status == 500 and b"every worker" in outcome.payload
    assert await broker.depth("m:1") == 0
    for g in ghosts:
        await g.client.aclose()
    await broker.close()


async def test_redis_down_answers_503_fast_and_recovers_by_itself(redis: RedisServer) -> None:
    url = redis.url()
    broker = await RedisStreamsBroker.connect(url)
    worker = await RedisStreamsBroker.connect(url, consumer_queue="m:1")
    stop = asyncio.Event()
    serving = asyncio.create_task(serve(worker, "m:1", stop))
    assert (await broker.submit(job(payload=b"ab"))).payload == b"ba"
    redis.stop()
    started = time.monotonic()
    with pytest.raises(Unavailable):
        await broker.submit(job())
    assert time.monotonic() - started < 2
    assert await broker.consumers("m:1") == 0
    redis.start()
    deadline = time.monotonic() + 15
    while True:
        try:
            assert (await broker.submit(job(payload=b"cd", timeout=5))).payload == b"dc"
            break
        except (Unavailable, DeadlineExceeded):
            assert time.monotonic() < deadline, "never recovered"
            await asyncio.sleep(0.2)
    stop.set()
    await serving
    await worker.close()
    await broker.close()
