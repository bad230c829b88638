"""The SDK in OHTTP mode follows a rotation as in sealed mode: a request encapsulated to a
key config the gateway no longer holds is refused ``unknown_ohttp_key`` (400, before any
worker), and the client fetches the bundle again, verifies it and retries once."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import httpx
import numpy as np
import pytest

from tests.sealed.test_sealed_e2e import dev_policy
from tests.support import RunningStack, start_stack, write_tiny
from trustserve.client import TrustserveClient


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    """Its own stack: the test rotates the serving key out."""
    root = tmp_path_factory.mktemp("rotating-ohttp")
    store = root / "store"
    store.mkdir()
    write_tiny(store)
    running = start_stack(root / "home", store, "--key-refresh", "0.5")
    yield running
    running.stop()


def answered(stack: RunningStack, status: int) -> float:
    text = httpx.get(f"https://127.0.0.1:{stack.metrics_port}/metrics", verify=str(stack.ca)).text
    pattern = rf'trustserve_requests_total\{{api="ohttp",[^}}]*status="{status}"[^}}]*\}} (\S+)'
    return sum(float(c) for c in re.findall(pattern, text))


def test_a_client_with_a_stale_key_config_retries_once_and_gets_its_answer(
    stack: RunningStack,
) -> None:
    x = np.ones((1, 4), np.float32)
    client = TrustserveClient(stack.url, policy=dev_policy(stack), ca=stack.ca, ohttp=True)
    with client:
        stale = client.verify()
        np.testing.assert_allclose(client.infer("tiny", {"x": x})["y"], [[3, 3, 3, 3]])
        stack.rotate_serving_key()
        stack.rotate_serving_key()  # only the current and the previous key are accepted
        time.sleep(1.5)  # the frontend re-reads the bundle at most every 0.5 s
        with TrustserveClient(stack.url, policy=dev_policy(stack), ca=stack.ca) as other:
            current = other.verify(refresh=True)  # the frontend now knows the new keys
        assert current.ohttp_config is not None and stale.ohttp_config is not None
        assert current.ohttp_config.key_id == stale.ohttp_config.key_id + 2
        refused, ok = answered(stack, 400), answered(stack, 200)
        np.testing.assert_allclose(client.infer("tiny", {"x": 2 * x})["y"], [[5, 5, 5, 5]])
        assert client.verify().ohttp_config == current.ohttp_config  # fetched again
    assert (answered(stack, 400), answered(stack, 200)) == (refused + 1, ok + 1)
