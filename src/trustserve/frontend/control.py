"""What the two APIs that change the models served share: the management API
(``management.py``) and the model repository extension (``repository.py``).

Both drive the worker pool through ``ModelControl`` (start a model's workers, retire a
model: unregistered, its accepted requests drained, its workers stopped) and both are
closed without the management token (``responses.BearerToken``, the one check; as
``TokenGuard`` middleware for the management app).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from trustserve.broker.base import Broker
from trustserve.frontend.registry import ModelEntry, ModelRegistry
from trustserve.responses import BearerToken

DRAIN_S = 30.0  # requests already accepted are answered before the workers stop


class Worker(Protocol):
    """One worker process as the management API describes it."""

    @property
    def pid(self) -> int | None: ...

    restarts: int


class WorkerPool(Protocol):
    """What the management APIs need of the processes that serve a queue."""

    async def scale(self, queue: str, archive: Path, n: int) -> None: ...

    async def stop(self, queue: str) -> None: ...

    def workers(self, queue: str) -> Sequence[Worker]: ...


class TokenGuard:
    """ASGI middleware: ``app`` closed to every HTTP request without ``token``."""

    def __init__(self, app: ASGIApp, token: BearerToken) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            refused = self.token.refused(Headers(scope=scope))
            if refused is not None:
                await refused(scope, receive, send)
                return
        await self.app(scope, receive, send)


class ModelControl:
    """Starts and retires models' workers; ``default_workers`` per model unless asked."""

    def __init__(
        self, registry: ModelRegistry, broker: Broker, pool: WorkerPool, default_workers: int
    ) -> None:
        self.registry = registry
        self.broker = broker
        self.pool = pool
        self.default_workers = default_workers

    async def start(self, entry: ModelEntry, n: int) -> None:
        """``n`` workers for ``entry``; asking again after a load failure tries afresh."""
        entry.failed = None
        entry.min_workers = n
        await self.pool.scale(entry.queue, entry.path, n)

    async def retire(self, entries: Sequence[ModelEntry]) -> None:
        """Unregistered at once (no new request is taken); requests already accepted are
        answered (up to ``DRAIN_S`` in all), then the workers stop."""
        for entry in entries:
            self.registry.unregister(entry.manifest.name, entry.manifest.version)
        deadline = time.monotonic() + DRAIN_S
        for entry in entries:
            while await self.broker.depth(entry.queue) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            await self.pool.stop(entry.queue)
