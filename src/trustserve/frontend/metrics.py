"""Prometheus metrics of the frontend, served on their own port."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import Response

from trustserve.broker.base import OutcomeMeta

_LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_BATCH = (1, 2, 4, 8, 16, 32, 64, 128)
# every per-model series names the version too: an INT8 and an FP32 build of one model
# are different servables with different latencies. "" when the request named no
# version that exists (a 404 has no version to count against).
_MV = ["model", "version"]


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "trustserve_requests",
            "Inference requests",
            ["model", "version", "api", "status"],
            registry=r,
        )
        self.total = Histogram(
            "trustserve_request_seconds", "Request latency", _MV, buckets=_LATENCY, registry=r
        )
        self.queue = Histogram(
            "trustserve_queue_seconds",
            "Time a request waited in the broker",
            _MV,
            buckets=_LATENCY,
            registry=r,
        )
        self.inference = Histogram(
            "trustserve_inference_seconds",
            "Engine time of the batch a request ran in",
            _MV,
            buckets=_LATENCY,
            registry=r,
        )
        self.batch = Histogram(
            "trustserve_batch_size", "Rows per engine run", _MV, buckets=_BATCH, registry=r
        )
        self.workers = Gauge("trustserve_workers", "Worker processes", _MV, registry=r)

    def observe(
        self,
        model: str,
        version: str,
        api: str,
        status: int,
        seconds: float,
        meta: OutcomeMeta | None,
    ) -> None:
        self.requests.labels(model, version, api, str(status)).inc()
        self.total.labels(model, version).observe(seconds)
        if meta is not None and meta.inference_ms is not None:
            self.queue.labels(model, version).observe((meta.queue_ms or 0.0) / 1000)
            self.inference.labels(model, version).observe(meta.inference_ms / 1000)
            self.batch.labels(model, version).observe(meta.batch_size or 1)

    async def endpoint(self, request: Request) -> Response:
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)
