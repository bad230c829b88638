"""The OHTTP gateway's inside (RFC 9458), in the worker only: decapsulate, check, answer.

An OHTTP job's payload is the encapsulated request as the client (or its relay) sent
it. The worker decapsulates it with the serving key whose OHTTP key config id is its
first byte, and decodes the Binary HTTP request (RFC 9292) inside. Before anything
runs, the inner request must:

* be ``POST`` to ``/v2/models/{m}/versions/{v}/infer`` (v2, JSON or binary tensors)
  or ``/predictions/{m}/{v}`` (a TorchServe body), naming this worker's model and
  version: the gateway URL the frontend routed on is clear text, the inner path is
  authenticated, so a request encapsulated for one model is refused by another's
  worker (``WrongModelVersion``), and one naming no version too;
* carry a ``date`` header (an HTTP-date) inside the replay window sealed mode uses;
* be new: the request's HPKE ``enc`` is its nonce in the shared replay guard.

Once decapsulated, every answer, an error included, is a Binary HTTP response with
the ordinary status and body (an error: ``{"error", "code"}``) encapsulated to the
client (``OhttpTo``), and leaves the worker as status 200 with no error code
(``batching.error_outcome``): the broker and the frontend learn nothing of what happened
inside. An error before that (no such key config, cannot decapsulate) can only be
answered in the clear, as RFC 9458 section 5.2 says.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

import orjson

from trustserve.archive import Manifest
from trustserve.broker.base import Job, JobKind
from trustserve.crypto import bhttp, ohttp
from trustserve.errors import (
    BadRequest,
    CannotOpenSealed,
    MethodNotAllowed,
    NotFound,
    TrustserveError,
    WrongModelVersion,
)
from trustserve.worker.sealed import Inner, RefusedInside, SealedReader, check_version

NONCE_LABEL = b"ohttp enc "  # replay-guard nonces of OHTTP requests, apart from sealed ones
_V2 = re.compile(r"/v2/models/([^/]+)(?:/versions/([^/]+))?/infer")
_PREDICT = re.compile(r"/predictions/([^/]+)(?:/([^/]+))?")
HEADER_LENGTH = "inference-header-content-length"
_LENGTH = re.compile(r"[0-9]{1,18}")


@dataclass(frozen=True)
class OhttpTo:
    """An OHTTP request's answer: a Binary HTTP response encapsulated to its client."""

    context: ohttp.ServerContext

    def seal(self, body: bytes, header_length: int | None, status: int, code: str | None) -> bytes:
        if status != 200:
            message = body.decode(errors="replace")
            body = orjson.dumps({"error": message, "code": code or TrustserveError.code})
            headers: tuple[tuple[str, str], ...] = (("content-type", "application/json"),)
        elif header_length is None:
            headers = (("content-type", "application/json"),)
        else:
            headers = (
                ("content-type", "application/octet-stream"),
                (HEADER_LENGTH, str(header_length)),
            )
        response = bhttp.Response(status, headers, body)
        return self.context.seal_response(bhttp.encode_response(response))


def read_ohttp(reader: SealedReader, job: Job) -> Inner:
    """The inference request inside ``job``; RefusedInside for one refused once open."""
    manifest = reader.manifest
    check_version(job, manifest, "encapsulated request")
    now = time.time()
    try:
        config_id = ohttp.request_key_id(job.payload)
    except BadRequest:
        raise CannotOpenSealed() from None
    private = reader.keys.ohttp_private_key(config_id, now)
    plain, context = ohttp.decapsulate_request(private, config_id, job.payload)
    to = OhttpTo(context)
    try:
        request = bhttp.decode_request(plain)
        kind = _route(request, manifest)
        reader.guard.check(_date(request), NONCE_LABEL + context.enc, now)
        header_length = _header_length(request) if kind is JobKind.V2 else None
    except TrustserveError as exc:
        raise RefusedInside(exc, to) from None
    return Inner(kind, request.body, header_length, to)


def _header_length(request: bhttp.Request) -> int | None:
    """The inner v2 header length: ASCII digits only (``str.isdigit`` takes "1\u00b2",
    which ``int`` refuses) and few enough that ``int`` converts them at once."""
    given = request.header(HEADER_LENGTH)
    if given is None:
        return None
    if not _LENGTH.fullmatch(given):
        raise BadRequest(f"{HEADER_LENGTH} must be a number of at most 18 ASCII digits")
    return int(given)


def _route(request: bhttp.Request, manifest: Manifest) -> JobKind:
    """The inner request's kind, once its path names this worker's model and version."""
    path = request.path.split("?", 1)[0]
    if (v2 := _V2.fullmatch(path)) is not None:
        kind, (model, version) = JobKind.V2, v2.groups()
    elif (predict := _PREDICT.fullmatch(path)) is not None:
        kind, (model, version) = JobKind.TORCHSERVE, predict.groups()
    else:
        raise NotFound(
            f"the encapsulated request is for {path[:100]!r}: this gateway serves only "
            "POST /v2/models/{m}/versions/{v}/infer and /predictions/{m}/{v}"
        )
    if request.method != "POST":
        raise MethodNotAllowed(f"the encapsulated request must be POST, not {request.method}")
    if (model, version) != (manifest.name, manifest.version):
        raise WrongModelVersion(
            f"the encapsulated request is for model {model!r} version {version or '(none)'!r}; "
            f"this gateway route reaches {manifest.name!r} version {manifest.version!r}: "
            "name the model and version in both the gateway URL and the inner path"
        )
    return kind


def _date(request: bhttp.Request) -> float:
    """The inner ``date`` header as a unix time; BadRequest if missing or not an HTTP-date."""
    value = request.header("date")
    if value is None:
        raise BadRequest(
            "the encapsulated request has no date header: it must carry one (an HTTP-date, "
            "RFC 9110) for the replay window"
        )
    try:
        return parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        raise BadRequest(f"the date header {value[:64]!r} is not an HTTP-date") from None
