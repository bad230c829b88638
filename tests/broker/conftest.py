"""Broker implementations under one contract: each param yields a BrokerPair."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from trustserve.broker.base import Broker, JobSource
from trustserve.broker.embedded import EmbeddedBroker, SocketJobSource


@dataclass
class BrokerPair:
    """A frontend-side broker and a way to connect worker-side job sources to it."""

    broker: Broker
    connect: Callable[[str], Awaitable[JobSource]]


async def embedded_pair(tmp_path: Path, max_queue: int) -> AsyncIterator[BrokerPair]:
    broker = EmbeddedBroker(max_queue=max_queue, max_deliveries=2)
    sock = tmp_path / "run" / "broker.sock"
    await broker.serve_workers(sock)
    sources: list[JobSource] = []

    async def connect(queue: str) -> JobSource:
        source = await SocketJobSource.connect(sock, queue)
        sources.append(source)
        return source

    yield BrokerPair(broker, connect)
    for s in sources:
        await s.close()
    await broker.close()


async def redis_pair(tmp_path: Path, max_queue: int) -> AsyncIterator[BrokerPair]:
    """A real redis-server (TLS with client certificates, ACL user, appendonly)."""
    from tests.broker.redis_server import RedisServer
    from trustserve.broker.redis import RedisStreamsBroker

    server = RedisServer(tmp_path / "redis")
    server.start()
    url = server.url(visibility_s="0.5")
    broker = await RedisStreamsBroker.connect(url, max_queue=max_queue, max_deliveries=2)
    sources: list[JobSource] = []

    async def connect(queue: str) -> JobSource:
        source = await RedisStreamsBroker.connect(url, consumer_queue=queue)
        sources.append(source)
        return source

    try:
        yield BrokerPair(broker, connect)
        for s in sources:
            await s.close()
        await broker.close()
    finally:
        server.stop()


async def sharded_pair(tmp_path: Path, max_queue: int) -> AsyncIterator[BrokerPair]:
    """Two real redis-servers as shards; the workers name them by another host name."""
    from tests.broker.redis_server import RedisServer
    from trustserve.broker import connect_job_source
    from trustserve.broker.shards import ShardedBroker

    servers = [RedisServer(tmp_path / f"redis{i}") for i in range(2)]
    try:
        for server in servers:
            server.start()
        url = " ".join(s.url(visibility_s="0.5") for s in servers)
        worker_url = " ".join(s.url(host="127.0.0.1", visibility_s="0.5") for s in servers)
        broker = await ShardedBroker.connect(url, max_queue=max_queue, max_deliveries=2)
        sources: list[JobSource] = []

        async def connect(queue: str) -> JobSource:
            source = await connect_job_source(worker_url, queue)
            sources.append(source)
            return source

        yield BrokerPair(broker, connect)
        for s in sources:
            await s.close()
        await broker.close()
    finally:
        for server in servers:
            server.stop()


BROKERS: dict[str, Callable[[Path, int], AsyncIterator[BrokerPair]]] = {
    "embedded": embedded_pair,
    "redis": redis_pair,
    "redis-sharded": sharded_pair,
}


@pytest.fixture(params=sorted(BROKERS))
async def pair(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[BrokerPair]:
    async for p in BROKERS[request.param](tmp_path, 4):
        yield p
