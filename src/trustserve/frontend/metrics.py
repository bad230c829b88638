"""Prometheus metrics of the frontend, served on their own port."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import Response

from trustserve.broker.base import OutcomeMeta

_LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_BATCH = (1, 2, 4, 8, 16, 32, 64, 128)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "trustserve_requests", "Inference requests", ["model", "api", "status"], registry=r
        )
        self.total = Histogram(
            "trustserve_request_seconds", "Request latency", ["model"], buckets=_LATENCY, registry=r
        )
        self.queue = Histogram(
            "trustserve_queue_seconds",
            "Time a request waited in the broker",
            ["model"],
            buckets=_LATENCY,
            registry=r,
        )
        self.inference = Histogram(
            "trustserve_inference_seconds",
            "Engine time of the batch a request ran in",
            ["model"],
            buckets=_LATENCY,
            registry=r,
        )
        self.batch = Histogram(
            "trustserve_batch_size", "Rows per engine run", ["model"], buckets=_BATCH, registry=r
        )
        self.workers = Gauge("trustserve_workers", "Worker processes", ["model"], registry=r)

    def observe(
        self, model: str, api: str, status: int, seconds: float, meta: OutcomeMeta | None
    ) -> None:
        self.requests.labels(model, api, str(status)).inc()
        self.total.labels(model).observe(seconds)
        if meta is not None and meta.inference_ms is not None:
            self.queue.labels(model).observe((meta.queue_ms or 0.0) / 1000)
            self.inference.labels(model).observe(meta.inference_ms / 1000)
            self.batch.labels(model).observe(meta.batch_size or 1)

    async def endpoint(self, request: Request) -> Response:
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)
