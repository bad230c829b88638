"""Brokers: the one place a broker URL becomes an implementation."""

from __future__ import annotations

from pathlib import Path

from trustserve.broker.base import Broker, Job, JobSource, Outcome, queue_name
from trustserve.errors import ConfigError

REDIS_SCHEMES = ("rediss://", "redis://", "rediss+sentinel://", "redis+sentinel://")


def is_redis_url(url: str) -> bool:
    """Whether ``url`` names a Redis broker: one server, Sentinels that name the primary, or
    several such shards separated by white space (``trustserve.broker.shards``)."""
    shards = url.split()
    return bool(shards) and all(s.startswith(REDIS_SCHEMES) for s in shards)


def is_local(url: str) -> bool:
    """Whether a worker's broker URL is the embedded broker on this host."""
    return url.startswith("unix:")


async def connect_job_source(
    url: str, queue: str, spread: int = 1, clear: bool = False
) -> JobSource:
    """The worker side of the broker at ``url`` (``unix:PATH`` or ``redis[s]://``; of
    several Redis shards, the one that holds ``queue``, or with ``spread`` N the
    least-manned of its first N). ``clear``: local jobs come in clear (embedded only)."""
    if is_local(url):
        from trustserve.broker.embedded import SocketJobSource

        return await SocketJobSource.connect(Path(url.removeprefix("unix:")), queue, clear)
    if is_redis_url(url):
        from trustserve.broker.redis import RedisStreamsBroker
        from trustserve.broker.shards import check_position, join_shard, split_shards

        shards = split_shards(url)
        joined = await join_shard(url, queue, spread)
        source = await RedisStreamsBroker.connect(joined, consumer_queue=queue)
        if len(shards) > 1:
            try:
                await check_position(source.client, source.keys, shards.index(joined))
            except BaseException:
                await source.close()
                raise
        return source
    raise ConfigError(
        f"unknown broker URL {url!r}: use unix:PATH, rediss://HOST:PORT or rediss+sentinel://HOSTS/SERVICE"
    )


def takes_clear(source: JobSource) -> bool:
    """Whether ``source`` hands over local jobs in clear (the worker's decision and its
    frontend's both): then no broker-key decryption is wrapped around it."""
    from trustserve.broker.embedded import SocketJobSource

    return isinstance(source, SocketJobSource) and source.clear


async def open_broker(
    url: str | None, socket: Path, max_queue: int, max_deliveries: int, clear: bool = False
) -> tuple[Broker, str]:
    """The frontend side of the broker, and the URL its workers connect to.

    ``url`` None is the embedded broker, reached by local workers over ``socket``, its
    jobs in clear if ``clear`` (``attestation.registry.clear_local_jobs``).
    """
    if url is None:
        from trustserve.broker.embedded import EmbeddedBroker

        embedded = EmbeddedBroker(max_queue, max_deliveries, clear_jobs=clear)
        await embedded.serve_workers(socket)
        return embedded, f"unix:{socket}"
    if is_redis_url(url):
        from trustserve.broker.redis import RedisStreamsBroker
        from trustserve.broker.shards import ShardedBroker, split_shards

        if len(split_shards(url)) > 1:
            sharded = await ShardedBroker.connect(
                url, max_queue=max_queue, max_deliveries=max_deliveries
            )
            return sharded, url
        broker = await RedisStreamsBroker.connect(
            url, max_queue=max_queue, max_deliveries=max_deliveries
        )
        return broker, url
    raise ConfigError(
        f"unknown broker URL {url!r}: use rediss://HOST:PORT or "
        "rediss+sentinel://HOSTS/SERVICE, several separated by spaces (or none: embedded)"
    )


__all__ = [
    "Broker",
    "Job",
    "JobSource",
    "Outcome",
    "connect_job_source",
    "open_broker",
    "queue_name",
]
