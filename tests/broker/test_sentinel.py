"""Redis with Sentinel (``redis config --replica --sentinel ...``, ``rediss+sentinel://``): the
primary's host is lost, the Sentinels promote the replica, frontends and workers follow, and
nothing a client was told is accepted is lost.

Real redis-server processes (a primary, a replica, three Sentinels), TLS and ACL as the
command writes them; the primary dies by SIGKILL.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis

from tests.broker.redis_ha import HaRedis, wait_for
from trustserve.broker.base import Job, JobKind, Outcome
from trustserve.broker.redis import RedisStreamsBroker
from trustserve.broker.redis_config import failovers, parse_redis_url
from trustserve.broker.redis_jobs import RedisJobStore
from trustserve.errors import ConfigError, Unavailable


@pytest.fixture
def ha(tmp_path: Path) -> Iterator[HaRedis]:
    with HaRedis.running(tmp_path / "redis") as setup:
        yield setup


@pytest.fixture
async def frontend(ha: HaRedis) -> AsyncIterator[RedisStreamsBroker]:
    broker = await RedisStreamsBroker.connect(ha.urls["frontends"], max_queue=16)
    try:
        yield broker
    finally:
        await broker.close()


async def fail_over(ha: HaRedis) -> int:
    """SIGKILL the primary; the port of the replica the Sentinels promote instead."""
    old = await asyncio.to_thread(ha.primary_port)
    assert old == ha.ports["primary"]
    ha.kill("primary")

    def moved() -> int | None:
        port = ha.primary_port()
        return port if port != old else None

    return await asyncio.to_thread(wait_for, "the Sentinels to promote the replica", moved)


async def test_acknowledged_job_records_survive_the_loss_of_the_primary(
    ha: HaRedis, frontend: RedisStreamsBroker
) -> None:
    store = RedisJobStore(frontend.client, "trustserve", replicas=1)
    kept = {uuid.uuid4().hex: uuid.uuid4().bytes for _ in range(50)}
    for job_id, record in kept.items():
        await store.put(job_id, record, 600)  # returns once the replica holds it (WAIT)
    assert await fail_over(ha) == ha.ports["replica"]
    got = {}
    for job_id in kept:  # the same client follows the failover by asking the Sentinels
        got[job_id] = await wait_async(lambda j=job_id: store.get(j))  # type: ignore[misc]
    assert got == kept
    assert failovers(frontend.client) >= 1


async def wait_async(get: object, timeout: float = 60) -> bytes:
    deadline = time.monotonic() + timeout
    while True:
        try:
            got = await get()  # type: ignore[operator]
            if got is not None:
                return got  # type: ignore[no-any-return]
        except Unavailable:
            if time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.2)


async def test_a_record_no_replica_confirms_is_refused_not_acknowledged(
    ha: HaRedis, frontend: RedisStreamsBroker
) -> None:
    store = RedisJobStore(frontend.client, "trustserve", replicas=1)
    ha.pause("replica")  # up, connected, but not acknowledging anything
    try:
        with pytest.raises(Unavailable, match="replica did not confirm"):
            await store.put("job", b"record", 600)
    finally:
        ha.resume("replica")


async def test_a_job_the_failover_lost_is_put_in_again_and_answered_once(
    ha: HaRedis, frontend: RedisStreamsBroker, caplog: pytest.LogCaptureFixture
) -> None:
    ha.cut_off_replica()  # what the primary admits now never reaches the replica
    job = Job(uuid.uuid4().hex, "m:1", JobKind.V2, b"ping", time.time() + 120)
    with caplog.at_level(logging.WARNING):
        answer = asyncio.create_task(frontend.submit(job))
        with ha.client("frontend", ha.ports["primary"]) as c:
            await asyncio.to_thread(
                wait_for, "the job on the primary", lambda: c.xlen("trustserve:q:m:1")
            )
        ha.kill("primary")
        ha.resume("replica")
        assert await fail_over_from_killed(ha) == ha.ports["replica"]
        with ha.client("frontend", ha.ports["replica"]) as c:
            assert c.xlen("trustserve:q:m:1") == 0 or answer.done()  # the new primary lacks it
        worker = await RedisStreamsBroker.connect(ha.urls["workers"], consumer_queue="m:1")
        seen = []
        try:
            while not answer.done():
                for taken in await worker.take("m:1", 4, 0.05):
                    seen.append(taken.id)
                    await worker.answer(taken, Outcome(taken.id, 200, b"pong"))
            outcome = await answer
        finally:
            await worker.close()
    assert (outcome.status, outcome.payload) == (200, b"pong")
    assert seen == [job.id]  # put in again once, answered once
    assert "a failover lost job" in caplog.text


async def fail_over_from_killed(ha: HaRedis) -> int:
    def moved() -> int | None:
        port = ha.primary_port()
        return port if port != ha.ports["primary"] else None

    return await asyncio.to_thread(wait_for, "the Sentinels to promote the replica", moved, 90)


def test_clients_may_ask_the_sentinels_where_the_primary_is_and_nothing_else(ha: HaRedis) -> None:
    for role in ("frontend", "worker"):
        with ha.client(role, ha.ports["s1"]) as s:
            assert int(s.sentinel_get_master_addr_by_name("trustserve")[1]) == ha.ports["primary"]
            for command in (
                ("SENTINEL", "FAILOVER", "trustserve"),
                ("SENTINEL", "SET", "trustserve", "quorum", "1"),
                ("SENTINEL", "REMOVE", "trustserve"),
                ("SENTINEL", "RESET", "*"),
                ("SENTINEL", "CONFIG", "GET", "*"),
            ):
                with pytest.raises(redis.exceptions.NoPermissionError):
                    s.execute_command(*command)
    with pytest.raises(redis.exceptions.ConnectionError):  # no client certificate
        redis.Redis(
            host="localhost", port=ha.ports["s1"], ssl=True,
            ssl_ca_certs=str(ha.directory / "tls" / "ca.pem"), socket_timeout=5,
        ).ping()  # fmt: skip


def test_sentinel_urls_are_parsed_and_bad_ones_refused(tmp_path: Path) -> None:
    config = parse_redis_url("redis+sentinel://u@a:1,b,[::1]:3/svc/2")
    assert config.sentinels == (("a", 1), ("b", 26379), ("::1", 3))
    assert (config.service, config.db, config.username) == ("svc", 2, "u")
    assert config.where == "redis+sentinel://a:1,b:26379,::1:3/svc/2"
    for url, problem in [
        ("rediss+sentinel://a:1,b:2", "needs the service name"),
        ("rediss+sentinel://u:pw@a:1/svc", "must not contain a password"),
        ("rediss+cluster://a:1/svc", "must start with"),
        ("rediss+sentinel://a:x/svc", "bad host or port"),
        ("rediss+sentinel://a:1/svc/zero", "database must be a number"),
    ]:
        with pytest.raises(ConfigError, match=problem):
            parse_redis_url(url)


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["--replica", "localhost:7001"], "give both or neither"),
        (["--replica", "localhost:7001", "--sentinel", "localhost:7002"], "three Sentinels"),
        (["--sentinel", "nohost"], "expected HOST:PORT"),
    ],
)
def test_an_incomplete_high_availability_setup_is_refused(
    tmp_path: Path, args: list[str], problem: str
) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "trustserve.cli", "redis", "config", str(tmp_path),
         "--host", "localhost", *args],
        capture_output=True, text=True,
    )  # fmt: skip
    assert out.returncode == 2
    assert problem in out.stderr
