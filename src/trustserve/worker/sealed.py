"""Opening sealed requests and sealing their answers, inside the worker only.

A sealed request's route (model, version, key id) is its associated data: the worker
builds it from its own manifest and the version the job claims, so a request opens
only at a worker of the version the client sealed it for. A request naming no version
(the frontend's "default") or another version is refused before it is opened
(``WrongModelVersion``); a frontend that lies about the version gets CannotOpenSealed.
"""

from __future__ import annotations

import time

from trustserve.archive import Manifest
from trustserve.broker.base import Job
from trustserve.crypto.sealing import OpenedRequest, Route, open_request
from trustserve.errors import WrongModelVersion
from trustserve.worker.keys import KeyRing
from trustserve.worker.replay import ReplayGuard


class SealedReader:
    def __init__(self, keys: KeyRing, guard: ReplayGuard, manifest: Manifest) -> None:
        self.keys = keys
        self.guard = guard
        self.manifest = manifest

    def open(self, job: Job) -> tuple[OpenedRequest, Route]:
        """The request inside, checked for freshness and single use; the route it is bound to."""
        version = job.meta.version
        if version != self.manifest.version:
            raise WrongModelVersion(
                f"sealed request is for {self.manifest.name} version {version or '(none)'!r}; "
                f"this worker serves version {self.manifest.version!r}: seal the version you "
                "resolved from the attestation bundle"
            )
        route = Route(self.manifest.name, version, job.meta.key_id)
        now = time.time()
        opened = open_request(self.keys.serving_private_key(route.key_id, now), route, job.payload)
        self.guard.check(opened.issued_at, opened.reply.nonce, now)
        return opened, route
