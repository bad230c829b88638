"""Async jobs: ``Prefer: respond-async`` on an inference request, ``GET /v2/jobs/{id}`` later.

A request that asks for it is checked exactly as a synchronous one (a bad request is
still refused at once, with its 4xx), then answered ``202 Accepted`` with
``Location: /v2/jobs/{id}`` while the frontend waits for the worker in the
background. The answer it gets is the very response the synchronous call would have
given (status, headers, body: a sealed answer stays sealed, only the client can open
it), kept in a ``JobStore`` for ``retention_s``: ``GET /v2/jobs/{id}`` answers
``202`` with ``Retry-After`` while pending, that response once done (as often as
asked, until it expires: GET is idempotent), ``404`` for an id that is unknown,
malformed or expired (the three are not told apart).

The store is untrusted (Redis is): every record is AES-GCM-sealed under the broker key
with the job id as associated data, so a store that hands back another job's record,
or a forged one, is refused with ``BrokerTampered`` (502). A job id is 256 random bits
(``secrets``): knowing it is what lets one fetch the answer.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import Response

from trustserve.broker.encrypted import PayloadCipher
from trustserve.broker.wire import frame, unframe
from trustserve.errors import (
    BrokerTampered,
    CannotOpenSealed,
    NotFound,
    TooManyRequests,
    TrustserveError,
)
from trustserve.responses import error_response, json_response

log = logging.getLogger(__name__)

JOBS_PATH = "/v2/jobs"
_ID = re.compile(r"[A-Za-z0-9_-]{43}")  # secrets.token_urlsafe(32): 256 bits
_KEPT_HEADERS = ("content-type", "inference-header-content-length", "retry-after")
POLL_AFTER_S = 1
GONE = "unknown or expired job (results are kept for a limited time)"


def wants_async(request: Request) -> bool:
    """RFC 7240: ``Prefer: respond-async`` (among other preferences, any case)."""
    prefs = ",".join(request.headers.getlist("prefer")).lower()
    return any(p.split(";")[0].strip() == "respond-async" for p in prefs.split(","))


class JobStore(Protocol):
    """Where job records wait for their client: opaque bytes, each kept ``ttl_s``."""

    async def put(self, job_id: str, record: bytes, ttl_s: float) -> None: ...

    async def get(self, job_id: str) -> bytes | None:
        """The record, or None when unknown or expired."""
        ...


class MemoryJobStore:
    """This frontend's memory: the embedded broker's store (jobs die with the frontend)."""

    def __init__(self) -> None:
        self._records: dict[str, tuple[float, bytes]] = {}

    async def put(self, job_id: str, record: bytes, ttl_s: float) -> None:
        self._prune()
        self._records[job_id] = (time.monotonic() + ttl_s, record)

    async def get(self, job_id: str) -> bytes | None:
        self._prune()
        held = self._records.get(job_id)
        return None if held is None else held[1]

    def _prune(self) -> None:
        now = time.monotonic()
        for job_id in [j for j, (until, _) in self._records.items() if until <= now]:
            del self._records[job_id]


def _aad(job_id: str) -> bytes:
    return f"trustserve-job-v1|{job_id}".encode()


class Jobs:
    """Starts async jobs, keeps their answers, answers ``GET /v2/jobs/{id}``.

    ``key``: the broker key (None only on a server without a key service, whose broker
    payloads are clear too). ``pending_s``: how long a job may stay pending (the
    request deadline). ``max_jobs``: jobs this frontend holds, pending or kept; one
    more is refused with 429 so a flood of submissions cannot exhaust its memory.
    """

    def __init__(
        self,
        store: JobStore,
        key: bytes | None,
        *,
        retention_s: float = 600.0,
        pending_s: float = 30.0,
        max_jobs: int = 1024,
    ) -> None:
        self.store = store
        self.cipher = None if key is None else PayloadCipher(key)
        self.retention_s = retention_s
        self.pending_s = pending_s
        self.max_jobs = max_jobs
        self._held: dict[str, float] = {}  # job id -> when this frontend may forget it
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self, work: Callable[[], Awaitable[Response]]) -> Response:
        """Runs ``work`` (the synchronous request's handling) in the background: 202."""
        now = time.monotonic()
        self._held = {j: until for j, until in self._held.items() if until > now}
        if len(self._held) >= self.max_jobs:
            raise TooManyRequests(
                f"this server holds {self.max_jobs} async jobs (pending or not yet expired): "
                "fetch results or retry later",
                retry_after=POLL_AFTER_S,
            )
        job_id = secrets.token_urlsafe(32)
        await self.store.put(job_id, self._seal(job_id, {"state": "pending"}), self._held_s())
        self._held[job_id] = now + self._held_s()
        task = asyncio.create_task(self._run(job_id, work))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        location = f"{JOBS_PATH}/{job_id}"
        body = {"id": job_id, "status": "pending", "location": location}
        return json_response(body, 202, {"Location": location, "Retry-After": str(POLL_AFTER_S)})

    def _held_s(self) -> float:
        return self.pending_s + self.retention_s

    async def _run(self, job_id: str, work: Callable[[], Awaitable[Response]]) -> None:
        try:
            response = await work()
        except TrustserveError as exc:
            response = error_response(exc)
        except Exception:
            log.exception("async job %s failed", job_id)
            response = error_response(TrustserveError("internal error"))
        headers = {k: v for k, v in response.headers.items() if k in _KEPT_HEADERS}
        head = {"state": "done", "status": response.status_code, "headers": headers}
        try:
            record = self._seal(job_id, head, bytes(response.body))
            await self.store.put(job_id, record, self.retention_s)
        except TrustserveError as exc:  # the store is down: the job expires as pending
            log.warning("could not keep the answer of async job %s: %s", job_id, exc)

    async def get(self, request: Request) -> Response:
        job_id = request.path_params["job"]
        if not _ID.fullmatch(job_id):
            raise NotFound(GONE)
        raw = await self.store.get(job_id)
        if raw is None:
            raise NotFound(GONE)
        head, body = self._open(job_id, raw)
        if head.get("state") == "pending":
            body_json = {"id": job_id, "status": "pending"}
            return json_response(body_json, 202, {"Retry-After": str(POLL_AFTER_S)})
        status, headers = head.get("status"), head.get("headers")
        if type(status) is not int or not isinstance(headers, dict):
            raise BrokerTampered("a stored job answer is malformed")
        return Response(
            body, status_code=status, headers={str(k): str(v) for k, v in headers.items()}
        )

    def _seal(self, job_id: str, head: dict[str, Any], body: bytes = b"") -> bytes:
        record = frame(head, body)
        return record if self.cipher is None else self.cipher.seal(record, _aad(job_id))

    def _open(self, job_id: str, raw: bytes) -> tuple[dict[str, Any], bytes]:
        try:
            plain = raw if self.cipher is None else self.cipher.open(raw, _aad(job_id))
            return unframe(plain)
        except (CannotOpenSealed, ValueError):
            log.warning("the stored record of async job %s failed authentication", job_id)
            raise BrokerTampered("a stored job answer failed authentication") from None

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
