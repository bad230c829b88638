"""Rotation revokes on running workers: a key the KMS stops listing is dropped in bounded time.

A real stack's KMS (embedded, simulated attestation), a real worker process with
``--key-refresh 1``, and the test in the frontend's place (the frontend is
untrusted: it could forward a request sealed to a rotated-out key), submitting
sealed jobs straight to the broker the worker reads.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.attacks.kms_fixtures import genuine_kms, https_server, throwaway_ca, tiny_encrypted
from tests.support import RunningStack, start_stack, wait_for_worker, write_tiny
from trustserve.attestation import Policy, make_provider
from trustserve.broker.base import Job, JobKind, JobMeta, Outcome
from trustserve.broker.embedded import EmbeddedBroker
from trustserve.broker.encrypted import EncryptingBroker
from trustserve.client.sdk import prepare
from trustserve.client.verify import ClientPolicy, ServingTarget, verify
from trustserve.errors import UnknownKeyId
from trustserve.frontend.keys import FrontendKeys
from trustserve.keyrelease.client import KmsClient
from trustserve.keyrelease.trust import KmsTrust
from trustserve.kms.app import create_app
from trustserve.worker.keys import KeyRing

REFRESH_S = 1.0


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[RunningStack]:
    store = tmp_path / "store"
    store.mkdir()
    write_tiny(store)
    s = start_stack(tmp_path / "home", store)
    yield s
    s.stop()


def _rotate(stack: RunningStack) -> str:
    token = (stack.home / "kms" / "admin.token").read_text().strip()
    r = httpx.post(
        f"{stack.kms_url}/v1/keys/serving/rotate",
        headers={"Authorization": f"Bearer {token}"},
        verify=str(stack.ca),
    )
    assert r.status_code == 200, r.text
    return str(r.json()["key_id"])


async def _sealed(broker: EncryptingBroker, target: ServingTarget) -> Outcome:
    x = np.ones((1, 4), np.float32)
    p = prepare("tiny", None, {"x": x}, None, target)
    assert p.route is not None
    meta = JobMeta(key_id=target.key_id, version=p.route.version)
    job = Job(uuid.uuid4().hex, "tiny:1", JobKind.SEALED, p.body, time.time() + 30, meta)
    return await broker.submit(job)


async def test_a_key_rotated_out_twice_is_dropped_by_a_running_worker(
    stack: RunningStack, tmp_path: Path
) -> None:
    trust = KmsTrust.from_options(stack.kms_identity, None)
    keys = FrontendKeys(
        KmsClient(stack.kms_url, ca_file=stack.ca, trust=trust), make_provider("sim", stack.home)
    )
    policy = ClientPolicy.development(stack.home)
    plain = EmbeddedBroker()
    sock = tmp_path / "broker.sock"
    await plain.serve_workers(sock)
    broker = EncryptingBroker(plain, await keys.broker_key())
    worker = subprocess.Popen(
        [
            sys.executable, "-m", "trustserve.worker",
            "--archive", str(stack.store / "tiny-1.tsm"),
            "--broker", f"unix:{sock}",
            "--kms", stack.kms_url, "--kms-identity", stack.kms_identity,
            "--key-refresh", str(REFRESH_S),
            "--home", str(stack.home), "--threads", "1",
        ]
    )  # fmt: skip
    try:
        await wait_for_worker(plain, "tiny:1", worker)
        first = verify(await keys.bundle(), policy)
        assert (await _sealed(broker, first)).status == 200

        _rotate(stack)
        newest = _rotate(stack)  # the first key is now in no list the KMS releases
        await asyncio.sleep(REFRESH_S + 2.0)  # the bound: one refresh interval (+ the release)

        stale = await _sealed(broker, first)
        assert stale.status == 400
        assert b"unknown serving key id" in stale.payload and newest.encode() in stale.payload
        current = verify(await keys.bundle(refresh=True), policy)
        assert current.key_id == newest
        assert (await _sealed(broker, current)).status == 200
    finally:
        worker.terminate()
        await asyncio.to_thread(worker.wait, 20)
        await broker.close()
        keys.client.close()


async def test_a_worker_the_kms_stops_admitting_drops_its_serving_keys(tmp_path: Path) -> None:
    """The KMS's release policy changes (say a measurement is withdrawn): at the next
    refresh the KMS refuses, and the worker holds no serving key any more."""
    genuine = genuine_kms(tmp_path / "kms")
    held = tiny_encrypted(genuine)
    tls = throwaway_ca(tmp_path / "tls")
    with https_server(create_app(genuine.service, genuine.sim), tls) as url:
        client = KmsClient(url, ca_file=tls.ca, trust=genuine.trust)
        ring = KeyRing(client, genuine.sim, refresh_interval=0.2)
        await asyncio.to_thread(ring.obtain, held)
        assert ring.serving is not None
        genuine.service.policy = Policy.default()  # sim evidence no longer admitted
        stop = asyncio.Event()
        refresher = asyncio.create_task(ring.keep_fresh(stop))
        await asyncio.sleep(1.5)
        stop.set()
        await refresher
        client.close()
    assert ring.serving is None
    with pytest.raises(UnknownKeyId):
        ring.serving_private_key(genuine.service.serving_public_keys()[0]["key_id"], time.time())
