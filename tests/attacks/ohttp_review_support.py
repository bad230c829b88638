"""What the OHTTP review's worker-side attack tests share: a worker's reader holding one
serving key (with its OHTTP key config), and an OHTTP job encapsulated to that key the way
any client (or an attacker with the public key config) can make one."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

from tests.support import tiny_manifest
from trustserve.broker.base import Job, JobKind, JobMeta
from trustserve.client.ohttp import encapsulate, inner_request
from trustserve.crypto import bhttp, ohttp
from trustserve.crypto.keys import ServingKey, ServingKeySet
from trustserve.worker.keys import KeyRing
from trustserve.worker.replay import ReplayGuard, SqliteNonceStore
from trustserve.worker.sealed import SealedReader

MANIFEST = tiny_manifest()
V2_PATH = "/v2/models/tiny/versions/1/infer"


def reader(tmp_path: Path) -> tuple[SealedReader, ServingKey]:
    key = ServingKey.generate(time.time() + 600, ohttp_key_id=7)
    ring = KeyRing(None, None)
    ring.serving = ServingKeySet((key,))
    guard = ReplayGuard(SqliteNonceStore(tmp_path / "nonces.db"), 300)
    return SealedReader(ring, guard, MANIFEST), key


def ohttp_job(
    key: ServingKey, body: bytes, headers: dict[str, str], path: str = V2_PATH
) -> tuple[Job, ohttp.ClientContext]:
    payload, context = encapsulate(key.ohttp_config, inner_request(path, body, headers))
    meta = JobMeta(key_id=key.key_id, version="1")
    return Job(uuid.uuid4().hex, "tiny:1", JobKind.OHTTP, payload, time.time() + 30, meta), context


def inner(context: ohttp.ClientContext, payload: bytes) -> bhttp.Response:
    return bhttp.decode_response(context.open_response(payload))
