"""The inference API: Open Inference Protocol v2 and TorchServe-compatible predictions.

The frontend checks what it can from the model's public manifest (4xx before
anything is queued), hands each request to the broker as one job (a v2 request
with its inputs as binary data, its id, parameters and requested outputs kept),
and forwards the worker's answer as the worker encoded it: the worker reads the
requested outputs and response format from the request, as for a sealed one.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from trustserve import __version__
from trustserve.broker.base import Broker, Job, JobKind, JobMeta, Outcome
from trustserve.crypto.sealing import ATTESTATION_PATH, KEY_ID_HEADER
from trustserve.crypto.sealing import CONTENT_TYPE as SEALED_TYPE
from trustserve.errors import (
    BadRequest,
    BrokerTampered,
    NotFound,
    PayloadTooLarge,
    TrustserveError,
    Unavailable,
    UnknownKeyId,
)
from trustserve.frontend.jobs import JOBS_PATH, Jobs, wants_async
from trustserve.frontend.keys import FrontendKeys
from trustserve.frontend.metrics import Metrics
from trustserve.frontend.registry import ModelEntry, ModelRegistry
from trustserve.keyrelease.bundle import parse_nonce
from trustserve.openapi import openapi_route
from trustserve.responses import (
    EXCEPTION_HANDLERS,
    error_response,
    json_response,
    status_error,
)
from trustserve.tensors import as_binary_request, check_against, parse_request

# a handler answers with the job it would submit: its kind, payload and metadata
Handler = Callable[[Request, "ModelEntry", bytes], Awaitable[tuple[JobKind, bytes, JobMeta]]]
EXTENSIONS = ["binary_tensor_data", "model_repository", "trustserve_sealed"]
PARSE_INLINE_BYTES = 256 * 1024
LIVE_MEMO_S = 1.0  # a worker counted this recently makes its model servable (no recount)
UNKNOWN_MODEL = "unknown"  # the metrics label of requests for a model that is not registered


class InferenceApi:
    def __init__(
        self,
        registry: ModelRegistry,
        broker: Broker,
        metrics: Metrics,
        *,
        timeout_s: float = 30.0,
        max_body_bytes: int = 64 * 1024 * 1024,
        keys: FrontendKeys | None = None,
        require: tuple[str, ...] = (),
        jobs: Jobs | None = None,
    ) -> None:
        self.keys = keys
        self.jobs = jobs
        self.require = require
        self.registry = registry
        self.broker = broker
        self.metrics = metrics
        self.timeout_s = timeout_s
        self.max_body_bytes = max_body_bytes
        self._seen_live: dict[str, float] = {}  # queue -> when a worker was last counted

    def app(self) -> Starlette:
        v = "/v2/models/{model}/versions/{version}"
        m = "/v2/models/{model}"
        routes = [
            Route("/v2", self.server_metadata),
            Route("/v2/health/live", self.live),
            Route("/v2/health/ready", self.ready),
            Route(m, self.model_metadata),
            Route(v, self.model_metadata),
            Route(m + "/ready", self.model_ready),
            Route(v + "/ready", self.model_ready),
            Route(m + "/infer", self.infer, methods=["POST"]),
            Route(v + "/infer", self.infer, methods=["POST"]),
            Route(JOBS_PATH + "/{job}", self.job),
            Route(ATTESTATION_PATH, self.attestation),
            Route("/ping", self.ping),
            Route("/predictions/{model}", self.predict, methods=["POST"]),
            Route("/predictions/{model}/{version}", self.predict, methods=["POST"]),
            openapi_route("inference"),
        ]
        return Starlette(routes=routes, exception_handlers=EXCEPTION_HANDLERS)

    # -- health and metadata -------------------------------------------------

    async def server_metadata(self, request: Request) -> Response:
        return json_response(
            {"name": "trustserve", "version": __version__, "extensions": EXTENSIONS}
        )

    async def live(self, request: Request) -> Response:
        return json_response({"live": True})

    async def ready(self, request: Request) -> Response:
        """ "This frontend can answer": a model has a live worker, and every required one does.

        A load balancer routes by this; per-model readiness is ``/v2/models/{m}/ready``.
        """
        ready, names = await self.readiness()
        if not ready:
            return json_response({"ready": False, "waiting_for": names}, 503)
        return json_response({"ready": True, "models": names})

    async def readiness(self) -> tuple[bool, list[str]]:
        """(ready, the models served) or (not ready, the models waited for): for every
        protocol the frontend speaks."""
        live: set[str] = set()  # model names, and ``name:version`` for each live version
        names: set[str] = set()
        for entry in self.registry.entries():
            if await self.broker.consumers(entry.queue):
                live |= {entry.manifest.name, entry.queue}
                names.add(entry.manifest.name)
        missing = [name for name in self.require if name not in live]
        if missing:
            return False, missing
        if not names:
            waiting = sorted({e.manifest.name for e in self.registry.entries()})
            return False, waiting or ["any model"]
        return True, sorted(names)

    async def attestation(self, request: Request) -> Response:
        """The KMS's attestation bundle: what a client verifies before it seals anything."""
        if self.keys is None:
            raise NotFound("this server runs without a key service: no sealed inference")
        refresh = "no-cache" in request.headers.get("cache-control", "")
        nonce = parse_nonce(request.query_params.get("nonce"))
        return json_response(await self.keys.bundle(refresh=refresh, nonce=nonce))

    async def ping(self, request: Request) -> Response:
        ready = (await self.ready(request)).status_code == 200
        return json_response({"status": "Healthy" if ready else "Unhealthy"}, 200 if ready else 500)

    def _entry(self, request: Request) -> ModelEntry:
        return self.registry.resolve(
            request.path_params["model"], request.path_params.get("version")
        )

    async def model_metadata(self, request: Request) -> Response:
        return json_response(self.metadata(self._entry(request)))

    def metadata(self, entry: ModelEntry) -> dict[str, Any]:
        """A model's v2 metadata (REST and gRPC answer the same)."""
        m = entry.manifest
        return {
            "name": m.name,
            "versions": self.registry.versions(m.name),
            "platform": m.platform,
            "inputs": [t.to_json() for t in m.inputs],
            "outputs": [t.to_json() for t in m.outputs],
        }

    async def model_ready(self, request: Request) -> Response:
        entry = self._entry(request)
        if await self.broker.consumers(entry.queue):
            return json_response({"name": entry.manifest.name, "ready": True})
        message = f"model '{entry.manifest.name}' has no worker ready"
        return status_error(400, message, Unavailable.code)

    # -- inference -----------------------------------------------------------

    async def body(self, request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                raise BadRequest("Content-Length must be a number")
            if int(declared) > self.max_body_bytes:
                raise PayloadTooLarge(f"request body over the {self.max_body_bytes}-byte limit")
        chunks = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.max_body_bytes:
                raise PayloadTooLarge(f"request body over the {self.max_body_bytes}-byte limit")
            chunks.append(chunk)
        return b"".join(chunks)

    async def submit(
        self, entry: ModelEntry, kind: JobKind, payload: bytes, meta: JobMeta
    ) -> tuple[JobKind, Outcome]:
        await self.check_workers(entry)
        job = Job(
            id=uuid.uuid4().hex,
            queue=entry.queue,
            kind=kind,
            payload=payload,
            deadline=time.time() + self.timeout_s,
            meta=meta,
        )
        return kind, await self.broker.submit(job)

    async def check_workers(self, entry: ModelEntry) -> None:
        """503 at once, naming the model and why, when no worker takes its queue (rather
        than a job that waits out its deadline). A worker seen within the last second
        counts, so a busy model costs the broker one count a second, not one a request."""
        now = time.monotonic()
        if now - self._seen_live.get(entry.queue, -LIVE_MEMO_S) < LIVE_MEMO_S:
            return
        if await self.broker.consumers(entry.queue):
            self._seen_live[entry.queue] = now
            return
        m = entry.manifest
        if entry.failed:
            raise Unavailable(entry.failed, retry_after=60)
        raise Unavailable(
            f"model '{m.name}' version {m.version} has no worker ready (still starting, "
            "stopped, or none is configured for it): retry later; its /ready says when",
            retry_after=5,
        )

    async def job(self, request: Request) -> Response:
        """An async job: 202 while pending, then the answer the request would have had."""
        if self.jobs is None:
            raise NotFound("this server runs no async jobs")
        return await self.jobs.get(request)

    async def infer(self, request: Request) -> Response:
        return await self._measured(request, "v2", self._infer)

    async def predict(self, request: Request) -> Response:
        return await self._measured(request, "torchserve", self._predict)

    async def _measured(self, request: Request, api: str, handler: Handler) -> Response:
        """Run ``handler`` for the request's model and body; every outcome goes to metrics."""
        started = time.perf_counter()
        status, meta, version, code = 500, None, "", None
        observed = False
        label = UNKNOWN_MODEL  # never a name from the URL: each label is kept forever
        try:
            entry = self._entry(request)
            label, version = entry.manifest.name, entry.manifest.version
            kind, payload, job_meta = await handler(request, entry, await self.body(request))
            await self.check_workers(entry)  # an async job too: refused now, not later
            if self.jobs is not None and wants_async(request):
                measure = (label, version, api, started)
                accepted = await self.jobs.start(
                    lambda: self._job(entry, kind, payload, job_meta, measure)
                )
                observed = True  # counted once, with the worker's figures, when it is done
                return accepted
            kind, outcome = await self.submit(entry, kind, payload, job_meta)
            status, meta = outcome.status, outcome.meta
            return forward(kind, outcome)
        except TrustserveError as exc:
            status, code = exc.status, exc.code
            return error_response(exc)
        finally:
            if not observed:
                elapsed = time.perf_counter() - started
                self.metrics.observe(label, version, api, status, elapsed, meta, code)

    async def _job(
        self,
        entry: ModelEntry,
        kind: JobKind,
        payload: bytes,
        meta: JobMeta,
        measure: tuple[str, str, str, float],
    ) -> Response:
        """An async job's work: the synchronous answer, counted in metrics as one."""
        label, version, api, started = measure
        try:
            _, done = await self.submit(entry, kind, payload, meta)
        except TrustserveError as exc:
            elapsed = time.perf_counter() - started
            self.metrics.observe(label, version, api, exc.status, elapsed, None, exc.code)
            raise
        elapsed = time.perf_counter() - started
        self.metrics.observe(label, version, api, done.status, elapsed, done.meta, None)
        return forward(kind, done)

    async def _infer(
        self, request: Request, entry: ModelEntry, body: bytes
    ) -> tuple[JobKind, bytes, JobMeta]:
        if request.headers.get("content-type", "").startswith(SEALED_TYPE):
            return await self._sealed(request, entry, body)
        header_length = request.headers.get("inference-header-content-length")
        return await self.v2_job(entry, body, header_length)

    async def submit_v2(
        self, entry: ModelEntry, body: bytes, header_length: str | None
    ) -> tuple[JobKind, Outcome]:
        """A standard v2 request body, checked against the model, as one broker job (the
        gRPC frontend hands its requests here too, in this encoding)."""
        kind, payload, meta = await self.v2_job(entry, body, header_length)
        return await self.submit(entry, kind, payload, meta)

    async def v2_job(
        self, entry: ModelEntry, body: bytes, header_length: str | None
    ) -> tuple[JobKind, bytes, JobMeta]:
        """A standard v2 request body checked against the model: the job to submit."""
        if json_bytes(body, header_length) > PARSE_INLINE_BYTES:  # parsed off the event loop
            req = await run_in_threadpool(parse_request, body, header_length, entry.manifest)
        else:
            req = parse_request(body, header_length, entry.manifest)
        check_against(req, entry.manifest)
        if header_length is not None and req.all_binary:
            payload, head_len = body, int(header_length)  # checked; the worker reads it as is
        else:
            payload, head_len = as_binary_request(req)  # no JSON numbers parsed twice
        return JobKind.V2, payload, JobMeta(header_length=head_len)

    async def _predict(
        self, request: Request, entry: ModelEntry, body: bytes
    ) -> tuple[JobKind, bytes, JobMeta]:
        if not body:
            raise BadRequest("request body is empty: send an image or JSON")
        return JobKind.TORCHSERVE, body, JobMeta()

    async def _sealed(
        self, request: Request, entry: ModelEntry, body: bytes
    ) -> tuple[JobKind, bytes, JobMeta]:
        """Routed on the clear model name; the body goes to the broker as it came."""
        if self.keys is None:
            raise BadRequest("this server has no key service: send a standard request")
        key_id = request.headers.get(KEY_ID_HEADER)
        known = await self.keys.serving_key_ids(expect=key_id)
        if not known:
            raise Unavailable("the key service holds no valid serving key")
        if key_id not in known:
            raise UnknownKeyId(
                f"unknown serving key id {key_id!r}; the current key id is {known[0]!r}: "
                f"fetch {ATTESTATION_PATH} again"
            )
        version = request.path_params.get("version", "")
        return JobKind.SEALED, body, JobMeta(key_id=key_id, version=version)


def json_bytes(body: bytes, header_length: str | None) -> int:
    """How much of ``body`` is JSON to parse: binary tensor data after the header costs
    nothing to read (``np.frombuffer``), so a binary request is parsed inline."""
    if header_length is None:
        return len(body)
    try:
        return min(max(int(header_length), 0), len(body))
    except ValueError:  # parse_request refuses it, with a clear message
        return 0


def forward(kind: JobKind, outcome: Outcome) -> Response:
    """The worker's answer as the worker encoded it, or its error as an error body."""
    if kind is JobKind.SEALED and outcome.meta.sealed:
        # only the client can open it, and it checks the status sealed inside against ours
        return Response(outcome.payload, status_code=outcome.status, media_type=SEALED_TYPE)
    if outcome.status != 200:
        message = outcome.payload.decode(errors="replace")
        return status_error(outcome.status, message, outcome.meta.code or TrustserveError.code)
    if kind is JobKind.SEALED or outcome.meta.sealed:
        raise BrokerTampered("an answer does not match the kind of its request")
    head_len = outcome.meta.header_length
    if head_len is None:
        return Response(outcome.payload, media_type="application/json")
    return Response(
        outcome.payload,
        media_type="application/octet-stream",
        headers={"Inference-Header-Content-Length": str(head_len)},
    )
