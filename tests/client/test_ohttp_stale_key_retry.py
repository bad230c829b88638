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
from trustserve.crypto import ohttp
from trustserve.errors import AttestationRefused


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


def test_discovery_handing_out_the_previous_key_config_is_refused_before_sending(
    stack: RunningStack,
) -> None:
    """After a rotation the bundle and discovery hold the previous key's config too: a
    frontend that gave it to one client could pick that client's requests out behind a
    relay by their key id. The SDK encapsulates to the current one only."""
    stack.rotate_serving_key()
    with TrustserveClient(stack.url, policy=dev_policy(stack), ca=stack.ca) as other:
        target = other.verify(refresh=True)
    assert len(target.ohttp_configs) == 2  # the current and the previous key
    current, previous = target.ohttp_configs
    with httpx.Client(base_url=stack.url, verify=str(stack.ca)) as http:
        deadline = time.monotonic() + 60
        while True:  # the frontend re-reads the bundle every 0.5 s: wait for the new keys
            listed = ohttp.decode_key_configs(http.get("/.well-known/ohttp-gateway").content)
            if listed[0] == current or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    assert listed == [current, previous]  # the previous one is what it could hand one client
    x = np.ones((1, 4), np.float32)
    sent = answered(stack, 400) + answered(stack, 200)
    client = TrustserveClient(
        stack.url, policy=dev_policy(stack), ca=stack.ca, ohttp_key_config=previous.encode()
    )
    with client, pytest.raises(AttestationRefused) as refused:
        client.infer("tiny", {"x": x})
    assert refused.value.claim == "ohttp_key_config"
    assert "previous key" in refused.value.detail
    assert answered(stack, 400) + answered(stack, 200) == sent  # nothing reached the gateway
    client = TrustserveClient(
        stack.url, policy=dev_policy(stack), ca=stack.ca, ohttp_key_config=current.encode()
    )
    with client:  # the current one, from wherever, is the one every client uses
        np.testing.assert_allclose(client.infer("tiny", {"x": x})["y"], [[3, 3, 3, 3]])
