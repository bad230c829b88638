"""Prometheus metrics of the frontend, served on their own port (docs/observability.md).

Worker-side figures (queue wait, preprocessing and engine time, batch size, key
refreshes) travel inside each answer's ``OutcomeMeta`` and are recorded here, by the
frontend that gets the answer: that works across hosts with the Redis broker, adds no
listener to the worker, and in standard mode the figures are authenticated with the
answer (``broker/encrypted.py``): the broker cannot forge them. It can skew the queue
wait only (measured from the enqueue time it carries in the clear), and a worker's
durations are capped at the request's own latency, which contains them. Every label
value is bounded: models are registered ones only (``unknown`` otherwise), an error
code is one of ``trustserve.errors`` (``other`` otherwise), a refresh result one of
``KEY_REFRESH_RESULTS``. The gauges (workers, queue depth) are sampled at scrape. The
KMS's log size and cosignature age come from its bundles (``log_metrics``, no labels).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import Response

from trustserve.broker.base import KEY_REFRESH_RESULTS, Broker, OutcomeMeta
from trustserve.errors import TrustserveError, error_class
from trustserve.frontend.log_metrics import KmsLogFigures
from trustserve.frontend.registry import ModelEntry

_LATENCY = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5,
    10, 30,
)  # fmt: skip
_BATCH = (1, 2, 4, 8, 16, 32, 64, 128, 256)
# every per-model series names the version too: an INT8 and an FP32 build of one model
# are different servables with different latencies. "" when the request named no
# version that exists (a 404 has no version to count against).
_MV = ["model", "version"]
OTHER_CODE = "other"  # the label of an error code trustserve does not define


def code_label(code: str | None) -> str:
    """``code`` if ``trustserve.errors`` defines it, else ``other``: never a free string."""
    if code is not None and error_class(code).code == code:
        return code
    return OTHER_CODE


class Metrics:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        # the KMS's log as its bundles show it (``log_metrics``): fed by ``FrontendKeys``
        self.kms_log = KmsLogFigures(clock)
        r.register(self.kms_log)

        def seconds(name: str, doc: str) -> Histogram:
            return Histogram(name, doc, _MV, buckets=_LATENCY, registry=r)

        self.requests = Counter(
            "trustserve_requests",
            "Inference requests by API and HTTP status",
            ["model", "version", "api", "status"],
            registry=r,
        )
        self.errors = Counter(
            "trustserve_errors",
            "Error answers by machine code (trustserve.errors)",
            ["model", "version", "code"],
            registry=r,
        )
        self.total = seconds("trustserve_request_seconds", "Request latency at the frontend")
        self.queue = seconds("trustserve_queue_seconds", "Time a request waited in the broker")
        self.preprocess = seconds(
            "trustserve_preprocess_seconds",
            "Worker time to open, parse and preprocess a request",
        )
        self.inference = seconds("trustserve_inference_seconds", "Engine time per batch")
        self.batch = Histogram(
            "trustserve_batch_size", "Rows per engine run", _MV, buckets=_BATCH, registry=r
        )
        self.wide = Counter(
            "trustserve_wide_batches",
            "Engine runs on the wide session: a lone batch given every core of the host",
            _MV,
            registry=r,
        )
        self.key_refreshes = Counter(
            "trustserve_key_refreshes",
            "Workers' serving-key refreshes by result (ok, failed, refused)",
            ["model", "version", "result"],
            registry=r,
        )
        self.restarts = Counter(
            "trustserve_worker_restarts",
            "Local worker processes restarted after an unexpected exit",
            _MV,
            registry=r,
        )
        self.workers = Gauge(
            "trustserve_workers", "Local worker processes kept by the supervisor", _MV, registry=r
        )
        self.workers_live = Gauge(
            "trustserve_workers_live",
            "Workers taking from the model's queue, any host, as the broker counts them",
            _MV,
            registry=r,
        )
        self.queue_depth = Gauge(
            "trustserve_queue_depth",
            "Jobs in the model's queue, as the broker counts them",
            _MV,
            registry=r,
        )

    def observe(
        self,
        model: str,
        version: str,
        api: str,
        status: int,
        seconds: float,
        meta: OutcomeMeta | None,
        code: str | None = None,
    ) -> None:
        """One request: its status and latency, and the figures its worker sent with the
        answer. ``code``: the machine code of an error the frontend itself answered."""
        self.requests.labels(model, version, api, str(status)).inc()
        self.total.labels(model, version).observe(seconds)
        if status >= 400:
            self.errors.labels(model, version, code_label(meta.code if meta else code)).inc()
        if meta is not None:
            self._worker_figures(model, version, seconds, meta)

    def _worker_figures(self, model: str, version: str, seconds: float, meta: OutcomeMeta) -> None:
        if meta.inference_ms is not None:  # an answer the engine ran
            self.queue.labels(model, version).observe(min(seconds, (meta.queue_ms or 0) / 1000))
            if meta.preprocess_ms is not None:
                self.preprocess.labels(model, version).observe(
                    min(seconds, meta.preprocess_ms / 1000)
                )
            if meta.batch_first:
                self.inference.labels(model, version).observe(
                    min(seconds, meta.inference_ms / 1000)
                )
                self.batch.labels(model, version).observe(meta.batch_size or 1)
                if meta.wide:
                    self.wide.labels(model, version).inc()
        for result, n in (meta.key_refreshes or {}).items():
            if result in KEY_REFRESH_RESULTS:
                self.key_refreshes.labels(model, version, result).inc(n)

    def restarted(self, entries: Iterable[ModelEntry], queue: str) -> None:
        """The supervisor restarted a worker of ``queue``."""
        for e in entries:
            if e.queue == queue:
                self.restarts.labels(e.manifest.name, e.manifest.version).inc()

    async def sample(
        self, entries: Iterable[ModelEntry], broker: Broker, local_workers: Callable[[str], int]
    ) -> None:
        """The gauges, now, for the registered models (an unregistered one disappears).
        With the broker unreachable its two gauges are left out rather than made up."""
        for gauge in (self.workers, self.workers_live, self.queue_depth):
            gauge.clear()
        listed = list(entries)
        for e in listed:
            m = e.manifest
            self.workers.labels(m.name, m.version).set(local_workers(e.queue))
            self.restarts.labels(m.name, m.version)  # a series from 0, so rate() sees the first
            for result in KEY_REFRESH_RESULTS:
                self.key_refreshes.labels(m.name, m.version, result)
        try:
            depths = await asyncio.gather(*(broker.depth(e.queue) for e in listed))
            lives = await asyncio.gather(*(broker.consumers(e.queue) for e in listed))
        except TrustserveError:
            return
        for e, depth, live in zip(listed, depths, lives, strict=True):
            self.queue_depth.labels(e.manifest.name, e.manifest.version).set(depth)
            self.workers_live.labels(e.manifest.name, e.manifest.version).set(live)

    async def endpoint(self, request: Request) -> Response:
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)
