"""Opening sealed requests and sealing their answers, inside the worker only.

A sealed request's route (model, version, key id) is its associated data: the worker
builds it from its own manifest and the version the job claims, so a request opens
only at a worker of the version the client sealed it for. A request naming no version
(the frontend's "default") or another version is refused before it is opened
(``WrongModelVersion``); a frontend that lies about the version gets CannotOpenSealed.

Both end-to-end kinds (sealed here, OHTTP in ``worker/ohttp.py``) open into an
``Inner`` request: a v2 or torchserve body and the ``AnswerSealer`` its answer (or
an error found once it is open) is sealed with, so the rest of the worker reads and
answers them as it does a standard request.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

from trustserve.archive import Manifest
from trustserve.broker.base import Job, JobKind
from trustserve.crypto.sealing import OpenedRequest, ResponseKey, Route, open_request, seal_response
from trustserve.errors import TrustserveError, WrongModelVersion
from trustserve.worker.keys import KeyRing
from trustserve.worker.replay import ReplayGuard


class AnswerSealer(Protocol):
    """Seals one answer (or error: its status and machine code) to the request's client."""

    def seal(
        self, body: bytes, header_length: int | None, status: int, code: str | None
    ) -> bytes: ...


@dataclass(frozen=True)
class SealedTo:
    """A sealed request's answer: under the client's response key, bound to the route."""

    reply: ResponseKey
    route: Route

    def seal(self, body: bytes, header_length: int | None, status: int, code: str | None) -> bytes:
        return seal_response(self.reply, self.route, body, header_length, status, code)


@dataclass(frozen=True)
class Inner:
    """An opened end-to-end request: ``kind`` V2 or TORCHSERVE, read as a standard one."""

    kind: JobKind
    body: bytes
    header_length: int | None
    to: AnswerSealer


class RefusedInside(Exception):
    """An error found once a request is open: answered sealed to its client, like any answer."""

    def __init__(self, error: TrustserveError, to: AnswerSealer) -> None:
        super().__init__(str(error))
        self.error = error
        self.to = to


def check_version(job: Job, manifest: Manifest, what: str) -> str:
    """The version the job claims, if it is this worker's; WrongModelVersion otherwise."""
    version = job.meta.version
    if version != manifest.version:
        raise WrongModelVersion(
            f"{what} is for {manifest.name} version {version or '(none)'!r}; "
            f"this worker serves version {manifest.version!r}: seal the version you "
            "resolved from the attestation bundle"
        )
    return version


class SealedReader:
    def __init__(self, keys: KeyRing, guard: ReplayGuard, manifest: Manifest) -> None:
        self.keys = keys
        self.guard = guard
        self.manifest = manifest

    def open(self, job: Job) -> tuple[OpenedRequest, Route]:
        """The request inside, checked for freshness and single use; the route it is bound to."""
        version = check_version(job, self.manifest, "sealed request")
        route = Route(self.manifest.name, version, job.meta.key_id)
        now = time.time()
        opened = open_request(self.keys.serving_private_key(route.key_id, now), route, job.payload)
        self.guard.check(opened.issued_at, opened.reply.nonce, now)
        return opened, route

    def read(self, job: Job) -> Inner:
        opened, route = self.open(job)
        to = SealedTo(opened.reply, route)
        return Inner(JobKind(opened.kind), opened.body, opened.header_length, to)
