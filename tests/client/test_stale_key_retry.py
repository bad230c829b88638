"""The SDK decides on error codes: a stale serving key is refreshed and the request sent again.

A client caches its verified attestation bundle. After the serving key is rotated
out, its next sealed request is refused with code ``stale_serving_key``, by the
frontend ("unknown serving key id") or by a worker ("holds no serving key");
the client fetches the bundle again, verifies it and retries once.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator

import httpx
import numpy as np
import pytest

from tests.sealed.test_sealed_e2e import dev_policy
from tests.support import RunningStack, start_stack, tiny_manifest, write_tiny
from trustserve.broker.base import Job, JobKind, JobMeta
from trustserve.client import TrustserveClient
from trustserve.client.sdk import Prepared, ServerError, _stale_key, read_answer
from trustserve.crypto.sealing import ResponseKey, Route
from trustserve.frontend.inference import forward
from trustserve.worker.batching import decode


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    """Its own stack: the test rotates the serving key out."""
    root = tmp_path_factory.mktemp("rotating")
    store = root / "store"
    store.mkdir()
    write_tiny(store)
    running = start_stack(root / "home", store, "--key-refresh", "0.5")
    yield running
    running.stop()


def answered(stack: RunningStack, status: int) -> float:
    text = httpx.get(f"https://127.0.0.1:{stack.metrics_port}/metrics", verify=str(stack.ca)).text
    pattern = rf'trustserve_requests_total\{{api="v2",model="tiny",status="{status}"\}} (\S+)'
    return sum(float(c) for c in re.findall(pattern, text))


def test_a_client_with_a_stale_bundle_retries_once_and_gets_its_answer(
    stack: RunningStack,
) -> None:
    x = np.ones((1, 4), np.float32)
    with TrustserveClient(stack.url, policy=dev_policy(stack), ca=stack.ca) as client:
        stale = client.verify()
        np.testing.assert_allclose(client.infer("tiny", {"x": x})["y"], [[3, 3, 3, 3]])
        stack.rotate_serving_key()
        stack.rotate_serving_key()  # only the current and the previous key are accepted
        time.sleep(1.5)  # the frontend re-reads the bundle at most every 0.5 s, and the
        # workers drop a rotated-out key at their next refresh (--key-refresh 0.5 here)
        with TrustserveClient(stack.url, policy=dev_policy(stack), ca=stack.ca) as other:
            current = other.verify(refresh=True)  # the frontend now knows the new keys
        assert current.key_id != stale.key_id
        refused, ok = answered(stack, 400), answered(stack, 200)
        np.testing.assert_allclose(client.infer("tiny", {"x": 2 * x})["y"], [[5, 5, 5, 5]])
        assert client.verify().key_id == current.key_id  # it fetched the bundle again
    assert (answered(stack, 400), answered(stack, 200)) == (refused + 1, ok + 1)


def test_a_workers_stale_key_refusal_makes_the_client_retry() -> None:
    """The worker's words differ from the frontend's; the code is the same, and decides."""
    route = Route("tiny", "", "srv-0123")
    job = Job("j1", "tiny:1", JobKind.SEALED, b"x" * 64, time.time() + 30, JobMeta(key_id="k"))
    outcome = decode(job, tiny_manifest(), None)  # a worker that holds no serving key
    sent = forward(JobKind.SEALED, outcome)
    response = httpx.Response(sent.status_code, headers=dict(sent.headers), content=sent.body)
    reply = ResponseKey(os.urandom(32), os.urandom(16))
    prepared = Prepared("/v2/models/tiny/infer", b"", {}, route, reply)
    with pytest.raises(ServerError) as refused:
        read_answer(prepared, response)
    assert "holds no serving key" in refused.value.message
    assert refused.value.code == "stale_serving_key" and _stale_key(refused.value)
