"""Opening sealed requests and sealing their answers, inside the worker only."""

from __future__ import annotations

import time

from trustserve.archive import Manifest
from trustserve.broker.base import Job
from trustserve.crypto.sealing import OpenedRequest, Route, open_request
from trustserve.errors import CannotOpenSealed
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
        if version not in ("", self.manifest.version):
            raise CannotOpenSealed()
        route = Route(self.manifest.name, version, job.meta.key_id)
        now = time.time()
        opened = open_request(self.keys.serving_private_key(route.key_id, now), route, job.payload)
        self.guard.check(opened.issued_at, opened.reply.nonce, now)
        return opened, route
