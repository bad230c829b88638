"""Redis shards: the model -> shard mapping (pure, seeded) and a ShardedBroker over two real
TLS+ACL redis-servers, each holding only its own models' streams and job records."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.broker.redis_server import RedisServer
from trustserve.broker import connect_job_source, is_redis_url, open_broker
from trustserve.broker.base import Job, JobKind, JobMeta, JobSource, Outcome
from trustserve.broker.shards import (
    ShardedBroker,
    join_shard,
    ranked,
    shard_of,
    shard_url,
    split_shards,
)
from trustserve.errors import ConfigError

SENTINEL = "rediss+sentinel://frontend@s1:26379,s2:26379,s3:26379/ts/0?ca=/c/ca.pem&cert=/c/f.pem"


def names(n: int, seed: int = 25) -> list[str]:
    rng = random.Random(seed)
    return [f"model{rng.randrange(10**9)}:{rng.randrange(1, 9)}" for _ in range(n)]


def on_each_shard(count: int) -> list[str]:
    """The first queue names (model-K:1) that land on shard 0, 1, ..., count-1."""
    found: dict[int, str] = {}
    for k in range(1000):
        found.setdefault(shard_of(f"model-{k}:1", count), f"model-{k}:1")
        if len(found) == count:
            return [found[i] for i in range(count)]
    raise AssertionError("no spread")


def test_the_mapping_is_a_pure_function_of_key_and_count() -> None:
    keys = names(2000)
    first = [shard_of(k, 4) for k in keys]
    assert first == [shard_of(k, 4) for k in keys]
    # known answers: a change of the hash would move every deployed model's queue
    assert [shard_of(f"resnet50:{v}", 3) for v in range(1, 7)] == KNOWN
    counts = [first.count(i) for i in range(4)]
    assert all(400 <= c <= 600 for c in counts), counts
    assert all(shard_of(k, 1) == 0 for k in keys[:50])


KNOWN = [1, 1, 0, 0, 2, 0]


def test_the_ranking_is_a_permutation_that_starts_with_the_shard() -> None:
    for key in names(200, seed=3):
        order = ranked(key, 5)
        assert sorted(order) == list(range(5)) and order[0] == shard_of(key, 5)


def test_adding_a_shard_moves_keys_only_to_the_new_shard() -> None:
    keys = names(2000, seed=7)
    for n in (1, 2, 5):
        moved = [k for k in keys if shard_of(k, n + 1) != shard_of(k, n)]
        assert all(shard_of(k, n + 1) == n for k in moved)
        assert 0.5 / (n + 1) < len(moved) / len(keys) < 1.5 / (n + 1)


def test_shards_are_split_on_white_space_only() -> None:
    one = "rediss://worker@a:6380/0?ca=/x/ca.pem&cert=/x/w.pem&key=/x/w-key.pem"
    assert split_shards(f"  {one}\n {SENTINEL} ") == [one, SENTINEL]
    assert split_shards(SENTINEL) == [SENTINEL]  # its commas separate Sentinels, not shards
    assert is_redis_url(f"{one} {SENTINEL}")
    assert not is_redis_url(f"{one} unix:/run/broker.sock")
    with pytest.raises(ConfigError, match="empty"):
        split_shards("  ")


def test_a_queue_goes_to_the_url_at_its_position_whatever_the_url_says() -> None:
    """Frontends and workers name the shards with different users and files: only the
    position counts."""
    frontend = ["rediss://frontend@a:6380/0?cert=f.pem", "rediss://frontend@b:6380/0?cert=f.pem"]
    worker = ["rediss://worker@a:6380/0?cert=w.pem", "rediss://worker@b:6380/0?cert=w.pem"]
    for queue in names(50):
        i = shard_of(queue, 2)
        assert shard_url(" ".join(frontend), queue) == frontend[i]
        assert shard_url(" ".join(worker), queue) == worker[i]


@pytest.fixture
async def servers(tmp_path: Path) -> AsyncIterator[list[RedisServer]]:
    started = []
    try:
        for i in range(2):
            server = RedisServer(tmp_path / f"redis{i}")
            server.start()
            started.append(server)
        yield started
    finally:
        for server in started:
            server.stop()


def job(queue: str) -> Job:
    return Job(uuid.uuid4().hex, queue, JobKind.V2, queue.encode(), time.time() + 30, JobMeta(1))


async def echo(source: JobSource, queue: str, stop: asyncio.Event) -> None:
    while not stop.is_set():
        for j in await source.take(queue, 8, 0):
            await source.answer(j, Outcome(j.id, 200, b"answer:" + j.payload))


async def test_models_spread_over_both_primaries_and_each_job_is_answered_once(
    servers: list[RedisServer],
) -> None:
    queues = on_each_shard(2)
    # the workers reach the same servers by another name and with other parameters
    front_url = " ".join(s.url(visibility_s="2") for s in servers)
    worker_url = " ".join(s.url(host="127.0.0.1", visibility_s="3") for s in servers)
    broker, _ = await open_broker(front_url, Path("/nonexistent"), 64, 2)
    assert isinstance(broker, ShardedBroker)
    sources = [await connect_job_source(worker_url, q) for q in queues]
    stop = asyncio.Event()
    tasks = [asyncio.create_task(echo(s, q, stop)) for s, q in zip(sources, queues, strict=True)]
    try:
        for q in queues:
            deadline = time.monotonic() + 30
            while not await broker.consumers(q):
                assert time.monotonic() < deadline, f"no worker seen on {q}"
                await asyncio.sleep(0.05)
        jobs = [job(q) for q in queues for _ in range(20)]
        outcomes = await asyncio.gather(*(broker.submit(j) for j in jobs))
        assert [o.id for o in outcomes] == [j.id for j in jobs]
        assert all(o.payload == b"answer:" + j.payload for o, j in zip(outcomes, jobs, strict=True))
        assert [await broker.depth(q) for q in queues] == [0, 0]
        for i, server in enumerate(servers):
            with server.client() as c:
                for j, q in enumerate(queues):
                    held = c.pttl(f"trustserve:q:{q}") != -2  # -2: no such key
                    assert held == (i == j), f"shard {i} {'lacks' if i == j else 'holds'} {q}"
        # async job records: each on the shard of its id, found through the shard list
        store = broker.job_store()
        ids = [f"job-{k}" for k in range(12)]
        for job_id in ids:
            await store.put(job_id, job_id.encode(), 30)
        assert [await store.get(job_id) for job_id in ids] == [i.encode() for i in ids]
        spread = {shard_of(job_id, 2) for job_id in ids}
        assert spread == {0, 1}
        for job_id in ids:
            for i, server in enumerate(servers):
                with server.client() as c:
                    held = c.pttl(f"trustserve:job:{job_id}") > 0
                    assert held == (i == shard_of(job_id, 2))
    finally:
        stop.set()
        await asyncio.gather(*tasks)
        for s in sources:
            await s.close()
        await broker.close()


async def test_a_hot_models_workers_spread_over_its_first_shards_and_the_frontend_follows(
    servers: list[RedisServer],
) -> None:
    """``--broker-spread 2``: the second worker joins the shard the first left empty; the
    frontend sends jobs to both (a seeded choice), each answered once."""
    queue = "hot:1"
    url = " ".join(s.url() for s in servers)
    worker_url = " ".join(s.url(host="127.0.0.1") for s in servers)
    with pytest.raises(ConfigError, match="at least 1"):
        await join_shard(worker_url, queue, 0)
    sources = [await connect_job_source(worker_url, queue, 2) for _ in range(2)]
    broker = await ShardedBroker.connect(url, max_queue=64, max_deliveries=2, rng=random.Random(25))
    answered: list[list[str]] = [[], []]

    async def serve(k: int, stop: asyncio.Event) -> None:
        while not stop.is_set():
            for j in await sources[k].take(queue, 8, 0):
                answered[k].append(j.id)
                await sources[k].answer(j, Outcome(j.id, 200, b"answer:" + j.payload))

    stop = asyncio.Event()
    tasks = [asyncio.create_task(serve(k, stop)) for k in range(2)]
    try:
        for server in servers:  # one worker's live set on each primary
            with server.client() as c:
                assert c.pttl(f"trustserve:c:{queue}") != -2
        assert await broker.consumers(queue) == 2
        jobs = [job(queue) for _ in range(40)]
        outcomes = await asyncio.gather(*(broker.submit(j) for j in jobs))
        assert all(o.payload == b"answer:" + j.payload for o, j in zip(outcomes, jobs, strict=True))
        assert sorted(answered[0] + answered[1]) == sorted(j.id for j in jobs)
        assert answered[0] and answered[1]
    finally:
        stop.set()
        await asyncio.gather(*tasks)
        for source in sources:
            await source.close()
        await broker.close()
