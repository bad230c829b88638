"""A shard list in another order (docs/redis.md): a worker or a frontend that lists the
Redis shards in another order than the processes before it is refused at start. Before
the check, such a worker still got its jobs (frontends follow the workers) but kept its
replay guard's nonces on another server than its model's other workers, so a sealed
request replayed through the other server was not caught. Two, then three, real TLS+ACL
redis-servers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.broker.redis_server import RedisServer
from trustserve.broker import connect_job_source
from trustserve.broker.shards import ShardedBroker, shard_of
from trustserve.errors import ConfigError


@pytest.fixture
async def servers(tmp_path: Path) -> AsyncIterator[list[RedisServer]]:
    started = []
    try:
        for i in range(3):
            server = RedisServer(tmp_path / f"redis{i}")
            server.start()
            started.append(server)
        yield started
    finally:
        for server in started:
            server.stop()


def queue_at(position: int, count: int) -> str:
    return next(q for k in range(1000) if shard_of(q := f"model-{k}:1", count) == position)


async def test_a_worker_listing_the_shards_in_another_order_is_refused(
    servers: list[RedisServer],
) -> None:
    a, b, _ = servers
    front = await ShardedBroker.connect(f"{a.url()} {b.url()}", max_queue=8, max_deliveries=2)
    try:
        swapped = f"{b.url(host='127.0.0.1')} {a.url(host='127.0.0.1')}"
        with pytest.raises(ConfigError, match="same order"):
            await connect_job_source(swapped, queue_at(0, 2))
        same = f"{a.url(host='127.0.0.1')} {b.url(host='127.0.0.1')}"
        source = await connect_job_source(same, queue_at(0, 2))  # the right order is taken
        await source.close()
    finally:
        await front.close()


async def test_a_frontend_with_another_order_is_refused_one_added_at_the_end_is_not(
    servers: list[RedisServer],
) -> None:
    a, b, c = servers
    first = await ShardedBroker.connect(f"{a.url()} {b.url()}", max_queue=8, max_deliveries=2)
    await first.close()
    with pytest.raises(
        ConfigError, match="position 0 is the server other trustserve processes list at position 1"
    ):
        await ShardedBroker.connect(f"{b.url()} {a.url()}", max_queue=8, max_deliveries=2)
    grown = await ShardedBroker.connect(
        f"{a.url()} {b.url()} {c.url()}", max_queue=8, max_deliveries=2
    )
    await grown.close()
    for server, position in ((a, "0"), (b, "1"), (c, "2")):
        with server.client() as client:
            assert client.get("trustserve:shard") in (position, position.encode())
