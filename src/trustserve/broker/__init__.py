"""Brokers: the one place a broker URL becomes an implementation."""

from __future__ import annotations

from pathlib import Path

from trustserve.broker.base import Broker, Job, JobSource, Outcome, queue_name
from trustserve.errors import ConfigError


async def connect_job_source(url: str, queue: str) -> JobSource:
    """The worker side of the broker at ``url`` (``unix:PATH`` or ``redis[s]://``)."""
    if url.startswith("unix:"):
        from trustserve.broker.embedded import SocketJobSource

        return await SocketJobSource.connect(Path(url.removeprefix("unix:")), queue)
    if url.startswith(("redis://", "rediss://")):
        from trustserve.broker.redis import RedisStreamsBroker

        return await RedisStreamsBroker.connect(url, consumer_queue=queue)
    raise ConfigError(f"unknown broker URL {url!r}: use unix:PATH or rediss://HOST:PORT")


__all__ = ["Broker", "Job", "JobSource", "Outcome", "connect_job_source", "queue_name"]
