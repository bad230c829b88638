"""The broker seam: frontends submit jobs, workers take them in batches and answer.

A broker only ever moves opaque payload bytes plus clear routing metadata (queue
name, id, deadline). Two implementations: ``EmbeddedBroker`` (one machine, the
default) and ``RedisStreamsBroker`` (scale-out). Both pass ``tests/broker``'s
contract suite.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


def queue_name(model: str, version: str) -> str:
    return f"{model}:{version}"


@dataclass(frozen=True)
class Job:
    """One request on its way to a worker.

    ``kind`` says how the worker must read ``payload`` (``v2``, ``torchserve``,
    ``sealed``); ``deadline`` is a unix time after which nobody waits for it.
    """

    id: str
    queue: str
    kind: str
    payload: bytes
    deadline: float
    meta: dict[str, Any] = field(default_factory=dict)
    enqueued_at: float = 0.0
    deliveries: int = 0


@dataclass(frozen=True)
class Outcome:
    """A worker's answer to one job: an HTTP-like status and the response body bytes.

    ``meta`` carries clear, non-secret facts for metrics and the frontend
    (``content_type``, ``inference_ms``, ``queue_ms``, ``batch_size``, ``json_size``).
    """

    id: str
    status: int
    payload: bytes
    meta: dict[str, Any] = field(default_factory=dict)


class Broker(Protocol):
    """Frontend side."""

    async def submit(self, job: Job) -> Outcome:
        """Queue ``job`` and wait for its outcome.

        Raises ``Unavailable`` when the queue is full or the broker is down (nothing
        was accepted) and ``DeadlineExceeded`` when the deadline passes first.
        """
        ...

    async def depth(self, queue: str) -> int: ...

    async def consumers(self, queue: str) -> int:
        """How many workers are taking from ``queue`` (a model is ready when > 0)."""
        ...

    async def close(self) -> None: ...


class JobSource(Protocol):
    """Worker side."""

    async def take(self, queue: str, max_items: int, max_delay_s: float) -> list[Job]:
        """Up to ``max_items`` jobs: returns when that many are queued or the oldest
        has waited ``max_delay_s``; an empty list after an idle poll interval."""
        ...

    async def answer(self, job: Job, outcome: Outcome) -> None: ...

    async def close(self) -> None: ...


def broker_failure(job_id: str, message: str) -> Outcome:
    """An answer the broker itself gives (no worker could): clear text, marked as the broker's."""
    return Outcome(job_id, 500, message.encode(), {"broker": True})
