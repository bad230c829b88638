"""The inference app in-process (embedded broker, no worker) for attacks refused before queueing.

No worker is needed: each attack here must be answered by the frontend itself.
"""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.support import write_tiny
from trustserve.broker.embedded import EmbeddedBroker
from trustserve.frontend.inference import InferenceApi
from trustserve.frontend.metrics import Metrics
from trustserve.frontend.registry import ModelRegistry


def local_frontend(store: Path, **options: object) -> tuple[httpx.AsyncClient, Metrics]:
    """A client of an inference app serving the tiny model (x: FP32 [-1, 4], batch <= 8)."""
    store.mkdir(parents=True, exist_ok=True)
    write_tiny(store)
    registry = ModelRegistry(store)
    registry.register("tiny-1.tsm", 0)
    metrics = Metrics()
    app = InferenceApi(registry, EmbeddedBroker(), metrics, **options).app()  # type: ignore[arg-type]
    transport = httpx.ASGITransport(app=app, client=("198.51.100.5", 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://frontend"), metrics
