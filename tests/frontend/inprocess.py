"""The frontend in-process: its ASGI app through ``httpx.ASGITransport`` on an embedded broker.

For what the frontend does without other processes: no TLS, no uvicorn, no worker start-up.
``local_frontend`` has no worker (for requests the frontend itself must answer, as the attacks
do); ``serving`` adds a stand-in worker per model: the real ``WorkerLoop`` and ONNX Runtime
engine on the plaintext archive, in this event loop, taking from the same broker.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from starlette.applications import Starlette

from tests.support import write_tiny
from trustserve import archive
from trustserve.broker.base import Job, Outcome, queue_name
from trustserve.broker.embedded import EmbeddedBroker
from trustserve.engines import load_engine
from trustserve.frontend.dataplane import DataPlane
from trustserve.frontend.inference import InferenceApi
from trustserve.frontend.metrics import Metrics
from trustserve.frontend.registry import ModelRegistry
from trustserve.worker.loop import WorkerLoop
from trustserve.worker.main import preprocessor

CLIENT = ("198.51.100.5", 40000)


def inference_app(
    registry: ModelRegistry, broker: EmbeddedBroker, metrics: Metrics, max_body_bytes: int
) -> Starlette:
    """The REST app over its data plane, with the stack's default request timeout."""
    plane = DataPlane(registry, broker, metrics, timeout_s=30.0)
    return InferenceApi(plane, max_body_bytes=max_body_bytes).app()


def local_frontend(
    store: Path, max_body_bytes: int = 64 << 20
) -> tuple[httpx.AsyncClient, Metrics]:
    """A client of an inference app serving the tiny model (x: FP32 [-1, 4], batch <= 8)."""
    store.mkdir(parents=True, exist_ok=True)
    write_tiny(store)
    registry = ModelRegistry(store)
    registry.register("tiny-1.tsm", 0)
    metrics = Metrics()
    app = inference_app(registry, EmbeddedBroker(), metrics, max_body_bytes)
    transport = httpx.ASGITransport(app=app, client=CLIENT)
    return httpx.AsyncClient(transport=transport, base_url="http://frontend"), metrics


class InProcessSource:
    """A worker's side of an ``EmbeddedBroker`` in the same process (``SocketJobSource``
    without the socket): counted as the queue's consumer until closed."""

    def __init__(self, broker: EmbeddedBroker, queue: str) -> None:
        self.broker = broker
        self.queue = queue
        self.cid = broker.open_consumer(queue)

    async def take(self, queue: str, max_items: int, max_delay_s: float) -> list[Job]:
        return await self.broker.take(self.cid, queue, max_items, max_delay_s)

    async def answer(self, job: Job, outcome: Outcome) -> None:
        self.broker.answer(self.cid, outcome)

    async def close(self) -> None:
        await self.broker.close_consumer(self.cid, self.queue)


def stand_in_worker(broker: EmbeddedBroker, path: Path) -> WorkerLoop:
    """What a worker process runs for a plaintext archive, minus the process."""
    model = archive.load(path)
    manifest = model.manifest
    engine = load_engine("onnxruntime", model.payload, manifest, 1)
    queue = queue_name(manifest.name, manifest.version)
    source = InProcessSource(broker, queue)
    return WorkerLoop(source, queue, manifest, engine, preprocessor(manifest))


@dataclass
class Frontend:
    client: httpx.AsyncClient
    metrics: Metrics
    registry: ModelRegistry


@asynccontextmanager
async def serving(
    store: Path, *archives: str, max_body_bytes: int = 64 << 20
) -> AsyncIterator[Frontend]:
    """The inference app on ``store``'s ``archives`` (file names), each with a stand-in worker."""
    registry = ModelRegistry(store)
    broker = EmbeddedBroker()
    metrics = Metrics()
    workers = []
    for name in archives:
        registry.register(name, 1)
        workers.append(stand_in_worker(broker, store / name))
    app = inference_app(registry, broker, metrics, max_body_bytes)
    stop = asyncio.Event()
    running = [asyncio.create_task(w.run(stop)) for w in workers]
    transport = httpx.ASGITransport(app=app, client=CLIENT)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://frontend") as client:
            yield Frontend(client, metrics, registry)
    finally:
        stop.set()
        await asyncio.gather(*running)
        for w in workers:
            await w.source.close()
        await broker.close()
