"""The inference API over REST: Open Inference Protocol v2 and TorchServe-compatible predictions.

A thin transport over the data plane (``dataplane.py``): each handler reads the body,
parses it (a v2 request, a TorchServe body, a sealed request routed on the clear model
name, an OHTTP-encapsulated request routed on its gateway URL and key config id) and
hands it to ``DataPlane.infer``, which checks it against the model's public
manifest (4xx before anything is queued), admits it, submits it to the broker as one
job and counts it; the worker's answer is forwarded as the worker encoded it: the worker
reads the requested outputs and response format from the request, as for a sealed one.

The OHTTP gateway (``POST /v2/ohttp/{model}/{version}``, RFC 9458; docs/ohttp.md) answers
an encapsulated response with status 200 whatever happened inside: the worker's status
is in the Binary HTTP response only the client can open. A request refused before any
worker decapsulated it (a wrong media type, an unknown key config id, too large, one the
worker cannot open) gets an ordinary error body with its 4xx, as RFC 9458 section 5.2 says.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from trustserve import __version__
from trustserve.broker.base import JobKind, JobMeta, Outcome
from trustserve.crypto import ohttp
from trustserve.crypto.sealing import (
    ATTESTATION_PATH,
    KEY_ID_HEADER,
    TRANSPARENCY_CHECKPOINT_PATH,
    TRANSPARENCY_CONSISTENCY_PATH,
)
from trustserve.crypto.sealing import CONTENT_TYPE as SEALED_TYPE
from trustserve.errors import (
    BadRequest,
    NotFound,
    PayloadTooLarge,
    TrustserveError,
    Unavailable,
    UnsupportedMediaType,
)
from trustserve.frontend.dataplane import (
    OHTTP_KEYS_PATH,
    PARSE_INLINE_BYTES,
    DataPlane,
    Work,
    verified,
)
from trustserve.frontend.jobs import JOBS_PATH, Jobs, wants_async
from trustserve.frontend.keys import FrontendKeys
from trustserve.frontend.registry import ModelEntry
from trustserve.keyrelease.bundle import parse_nonce
from trustserve.openapi import openapi_route
from trustserve.responses import (
    EXCEPTION_HANDLERS,
    error_response,
    json_response,
    status_error,
)
from trustserve.tensors import parse_request

# parses a request's body, for its model, into the work the data plane submits
Parse = Callable[[Request, ModelEntry, bytes], Awaitable[Work]]
EXTENSIONS = ["binary_tensor_data", "model_repository", "trustserve_sealed", "ohttp"]
OHTTP_PATH = "/v2/ohttp/{model}/{version}"


class InferenceApi:
    """The REST transport: parses each request, then hands it to ``plane`` (the one the
    gRPC servicer shares). ``max_body_bytes`` has no default here: the stack's settings
    (``stack/config.py``) are its one definition."""

    def __init__(self, plane: DataPlane, *, max_body_bytes: int, jobs: Jobs | None = None) -> None:
        self.plane = plane
        self.jobs = jobs
        self.max_body_bytes = max_body_bytes

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
            Route(OHTTP_PATH, self.ohttp, methods=["POST"]),
            Route(OHTTP_KEYS_PATH, self.ohttp_keys),
            Route(TRANSPARENCY_CHECKPOINT_PATH, self.log_checkpoint),
            Route(TRANSPARENCY_CONSISTENCY_PATH, self.log_consistency),
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
        """(ready, the models served) or (not ready, the models waited for)."""
        return await self.plane.readiness()

    async def attestation(self, request: Request) -> Response:
        """The KMS's attestation bundle: what a client verifies before it seals anything."""
        keys = self.plane.keys
        if keys is None:
            raise NotFound("this server runs without a key service: no sealed inference")
        refresh = "no-cache" in request.headers.get("cache-control", "")
        nonce = parse_nonce(request.query_params.get("nonce"))
        return json_response(await keys.bundle(refresh=refresh, nonce=nonce))

    def _log_keys(self) -> FrontendKeys:
        if self.plane.keys is None:
            raise NotFound("this server runs without a key service: no transparency log")
        return self.plane.keys

    async def log_checkpoint(self, request: Request) -> Response:
        """The KMS's newest signed checkpoint, unchanged: a client checks it itself."""
        text = await self._log_keys().log_checkpoint()
        return Response(text, media_type="text/plain; charset=utf-8")

    async def log_consistency(self, request: Request) -> Response:
        """The KMS's consistency proof between two sizes of its log, unchanged (it proves
        itself); only the two sizes are checked here, so nothing else reaches the KMS."""
        old = _size(request, "old")
        new = _size(request, "new")
        return json_response(await self._log_keys().log_consistency(old, new))

    async def ohttp_keys(self, request: Request) -> Response:
        """RFC 9540 discovery: the current serving keys' OHTTP key configs, current first.
        Unverified here: a client encapsulates only to one its verified bundle holds."""
        keys = self.plane.keys
        if keys is None:
            raise NotFound("this server runs without a key service: no OHTTP gateway")
        configs = [ohttp.KeyConfig.decode(c) for _, c in (await keys.ohttp_keys()).values()]
        return Response(
            ohttp.encode_key_configs(configs),
            media_type=ohttp.KEYS_TYPE,
            headers={"Cache-Control": "max-age=60"},
        )

    async def ping(self, request: Request) -> Response:
        ready = (await self.ready(request)).status_code == 200
        return json_response({"status": "Healthy" if ready else "Unhealthy"}, 200 if ready else 500)

    def _entry(self, request: Request) -> ModelEntry:
        return self.plane.model(request.path_params["model"], request.path_params.get("version"))

    async def model_metadata(self, request: Request) -> Response:
        return json_response(self.plane.metadata(self._entry(request)))

    async def model_ready(self, request: Request) -> Response:
        entry = self._entry(request)
        if await self.plane.model_ready(entry):
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

    async def job(self, request: Request) -> Response:
        """An async job: 202 while pending, then the answer the request would have had."""
        if self.jobs is None:
            raise NotFound("this server runs no async jobs")
        return await self.jobs.get(request)

    async def infer(self, request: Request) -> Response:
        return await self._through_plane(request, "v2", self._infer)

    async def predict(self, request: Request) -> Response:
        return await self._through_plane(request, "torchserve", self._predict)

    async def ohttp(self, request: Request) -> Response:
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media != ohttp.REQUEST_TYPE:
            return error_response(
                UnsupportedMediaType(
                    f"the OHTTP gateway takes {ohttp.REQUEST_TYPE} (RFC 9458), "
                    f"not {media or 'a body without Content-Type'}"
                )
            )
        return await self._through_plane(request, "ohttp", self._ohttp)

    async def _ohttp(self, request: Request, entry: ModelEntry, body: bytes) -> Work:
        return await self.plane.ohttp_work(entry, body, request.path_params["version"])

    async def _through_plane(self, request: Request, api: str, parse: Parse) -> Response:
        """The request's body parsed by ``parse``, answered by the data plane (an async job
        when the request prefers one); any error as an error body."""

        async def prepare(entry: ModelEntry) -> Work:
            return await parse(request, entry, await self.body(request))

        defer = self.jobs.start if self.jobs is not None and wants_async(request) else None
        path = request.path_params
        try:
            return await self.plane.infer(
                api, path["model"], path.get("version"), prepare, _forward_work, defer
            )
        except TrustserveError as exc:
            return error_response(exc)

    async def _infer(self, request: Request, entry: ModelEntry, body: bytes) -> Work:
        if request.headers.get("content-type", "").startswith(SEALED_TYPE):
            key_id = request.headers.get(KEY_ID_HEADER)
            version = request.path_params.get("version", "")
            return await self.plane.sealed_work(entry, body, key_id, version)
        header_length = request.headers.get("inference-header-content-length")
        if json_bytes(body, header_length) > PARSE_INLINE_BYTES:  # parsed off the event loop
            req = await run_in_threadpool(parse_request, body, header_length, entry.manifest)
        else:
            req = parse_request(body, header_length, entry.manifest)
        encoded = None if header_length is None else (body, int(header_length))
        return self.plane.v2_work(entry, req, encoded)

    async def _predict(self, request: Request, entry: ModelEntry, body: bytes) -> Work:
        return self.plane.torchserve_work(entry, body)


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
    outcome = verified(Work(kind, b"", JobMeta()), outcome)
    if kind is JobKind.SEALED and outcome.meta.sealed:
        # only the client can open it, and it checks the status sealed inside against ours
        return Response(outcome.payload, status_code=outcome.status, media_type=SEALED_TYPE)
    if kind is JobKind.OHTTP and outcome.meta.sealed:
        # RFC 9458: the gateway's answer is 200; the worker's status is inside
        return Response(outcome.payload, media_type=ohttp.RESPONSE_TYPE)
    if outcome.status != 200:
        message = outcome.payload.decode(errors="replace")
        return status_error(outcome.status, message, outcome.meta.code or TrustserveError.code)
    head_len = outcome.meta.header_length
    if head_len is None:
        return Response(outcome.payload, media_type="application/json")
    return Response(
        outcome.payload,
        media_type="application/octet-stream",
        headers={"Inference-Header-Content-Length": str(head_len)},
    )


def _forward_work(work: Work, outcome: Outcome) -> Response:
    return forward(work.kind, outcome)


def _size(request: Request, name: str) -> int:
    """A log size from the query: a decimal number (BadRequest naming it otherwise)."""
    text = request.query_params.get(name)
    if text is None or not text.isdigit() or len(text) > 19 or (len(text) > 1 and text[0] == "0"):
        raise BadRequest(f"query parameter {name} must be a log size (a decimal number)")
    return int(text)
