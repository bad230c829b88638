"""Issue 21 item 2: a rotated-out serving key must not live on while the host blocks the KMS.

The host runs the worker and can drop its traffic to the KMS. Before the fix a worker
whose refreshes failed kept its last released set, and a rotated-out key its original
30-day ``not_after``: days after a rotation it still opened requests sealed to it. Now
every released set carries a lease the KMS signs; the worker counts it on its own
monotonic clock and, when it ends unrenewed, drops the keys and answers 503
``serving_key_lease_expired``.

A real KMS (in process, over real TLS, simulated attestation: no TEE hardware here)
and the worker's own key ring and sealed-request reader; the test plays the untrusted
frontend, forwarding requests sealed to the rotated-out key. The worker's monotonic
clock is a seam (``KeyRing(clock=...)``) so that an hour passes without waiting one.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from tests.attacks.kms_fixtures import genuine_kms, https_server, throwaway_ca, tiny_encrypted
from tests.support import tiny_manifest
from trustserve.broker.base import Job, JobKind, JobMeta, Outcome
from trustserve.crypto.keys import ServingKeySet
from trustserve.crypto.sealing import Route, seal_request
from trustserve.errors import Unavailable
from trustserve.keyrelease.client import KmsClient
from trustserve.keyrelease.protocol import DEFAULT_LEASE
from trustserve.kms.app import create_app
from trustserve.tensors import Tensor, encode_binary
from trustserve.worker.batching import Decoded, decode
from trustserve.worker.keys import KeyRing
from trustserve.worker.replay import ReplayGuard, SqliteNonceStore
from trustserve.worker.sealed import SealedReader

MANIFEST = tiny_manifest()


class Monotonic:
    """The worker's monotonic clock, moved by the test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def sealed_job(public_key: bytes, key_id: str) -> Job:
    """What a client that verified an older bundle sends: sealed to ``key_id``."""
    body, hlen = encode_binary(
        {}, "inputs", [Tensor("x", "FP32", (1, 4), np.ones((1, 4), np.float32))]
    )
    sealed, _ = seal_request(public_key, Route("tiny", "1", key_id), body, hlen)
    meta = JobMeta(key_id=key_id, version="1")
    return Job(uuid.uuid4().hex, "tiny:1", JobKind.SEALED, sealed, time.time() + 30, meta)


async def test_a_rotated_out_key_dies_with_the_lease_while_the_kms_is_blocked(
    tmp_path: Path,
) -> None:
    genuine = genuine_kms(tmp_path / "kms")
    held = tiny_encrypted(genuine)
    tls = throwaway_ca(tmp_path / "tls")
    clock = Monotonic()
    with https_server(create_app(genuine.service, genuine.sim), tls) as url:
        client = KmsClient(url, ca_file=tls.ca, trust=genuine.trust, timeout=5)
        ring = KeyRing(client, genuine.sim, clock=clock)
        await asyncio.to_thread(ring.obtain, held)
        assert ring.serving is not None
        old = ring.serving.current
        genuine.service.rotate_serving_key()  # the KMS now accepts `old` for a day at most
    # the host blocks the KMS from here on: every refresh fails
    with pytest.raises(Unavailable):
        await asyncio.to_thread(ring.refresh)
    client.close()
    reader = SealedReader(ring, ReplayGuard(SqliteNonceStore(tmp_path / "n.db"), 300), MANIFEST)

    clock.now += DEFAULT_LEASE - 1  # within the lease: the bound is the lease, not less
    assert isinstance(
        decode(sealed_job(old.public_key, old.key_id), MANIFEST, None, reader), Decoded
    )

    clock.now += 2  # the lease has ended, unrenewed (before the fix: 30 days of this)
    refused = decode(sealed_job(old.public_key, old.key_id), MANIFEST, None, reader)
    assert isinstance(refused, Outcome)
    assert (refused.status, refused.meta.code) == (503, "serving_key_lease_expired")
    assert b"lease" in refused.payload and not refused.meta.sealed
    assert ring.serving is None  # the key material is gone, not just refused

    # any key, the current one too: the worker cannot know what the KMS still accepts
    current = genuine.service.state.serving_keys(time.time())
    assert isinstance(current, ServingKeySet) and current.current.key_id != old.key_id
    also = decode(
        sealed_job(current.current.public_key, current.current.key_id), MANIFEST, None, reader
    )
    assert isinstance(also, Outcome) and also.status == 503


async def test_a_rotated_out_key_ends_with_its_grace_when_that_comes_first(tmp_path: Path) -> None:
    """A refresh after the rotation carries the old key's shortened end; the KMS then goes
    away. The old key is dropped at that end, the current one lives on to the lease's."""
    genuine = genuine_kms(tmp_path / "kms")
    genuine.service.rotation_grace = 600.0
    held = tiny_encrypted(genuine)
    tls = throwaway_ca(tmp_path / "tls")
    clock = Monotonic()
    with https_server(create_app(genuine.service, genuine.sim), tls) as url:
        client = KmsClient(url, ca_file=tls.ca, trust=genuine.trust, timeout=5)
        ring = KeyRing(client, genuine.sim, clock=clock)
        await asyncio.to_thread(ring.obtain, held)
        assert ring.serving is not None
        old = ring.serving.current
        genuine.service.rotate_serving_key()
        await asyncio.to_thread(ring.refresh)
        client.close()
    assert ring.serving is not None and len(ring.serving.keys) == 2
    new = ring.serving.current
    clock.now += 601  # past the grace, well within the lease
    ring.expire()
    assert [k.key_id for k in ring.serving.keys] == [new.key_id]
    reader = SealedReader(ring, ReplayGuard(SqliteNonceStore(tmp_path / "n.db"), 300), MANIFEST)
    fine = decode(sealed_job(new.public_key, new.key_id), MANIFEST, None, reader)
    assert isinstance(fine, Decoded)
    assert old.key_id not in {k.key_id for k in ring.serving.keys}


async def test_an_idle_worker_drops_its_keys_when_the_lease_ends(tmp_path: Path) -> None:
    """No request needed: the refresher itself drops the keys once the lease is over."""
    genuine = genuine_kms(tmp_path / "kms")
    held = tiny_encrypted(genuine)
    tls = throwaway_ca(tmp_path / "tls")
    clock = Monotonic()
    with https_server(create_app(genuine.service, genuine.sim), tls) as url:
        client = KmsClient(url, ca_file=tls.ca, trust=genuine.trust, timeout=5)
        ring = KeyRing(client, genuine.sim, refresh_interval=0.1, clock=clock)
        await asyncio.to_thread(ring.obtain, held)
    stop = asyncio.Event()
    refresher = asyncio.create_task(ring.keep_fresh(stop))
    try:
        clock.now += DEFAULT_LEASE / 2
        await asyncio.sleep(0.5)  # a few failed refreshes: the keys are still within the lease
        assert ring.serving is not None
        clock.now += DEFAULT_LEASE / 2
        deadline = time.monotonic() + 60  # generous: a loaded machine
        while ring.serving is not None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert ring.serving is None
    finally:
        stop.set()
        await refresher
        client.close()
