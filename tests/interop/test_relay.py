"""Issue 24 item 4: client → an OHTTP relay run by someone else → the gateway.

Three parties on three loopback addresses (Linux routes all of 127/8 to ``lo``): the
client connects from 127.0.0.2, the relay (tests/interop/relay.py, written from RFC
9458) listens and connects onward from 127.0.0.3, the stack's frontend writes its
access log. The frontend's log shows the relay's address for the gateway request and
never the client's; the relay holds the client's address and ciphertext only, never
the model input or the answer. The attested key config was fetched before, from
another address (the bundle fetch reveals whoever makes it: docs/ohttp-relays.md).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.interop.relay import Relay
from tests.support import RunningStack, start_stack, tiny_expected, write_tiny
from trustserve.client import ClientPolicy, TrustserveClient
from trustserve.client.sdk import prepare, read_answer
from trustserve.client.verify import ServingTarget
from trustserve.crypto import ohttp
from trustserve.crypto.sealing import ATTESTATION_PATH

CLIENT, RELAY = "127.0.0.2", "127.0.0.3"
GATEWAY = "/v2/ohttp/tiny/1"
# what a browser or an SDK would send about itself: none of it may reach the gateway
IDENTIFYING = {
    "Cookie": "session=client-session-cookie",
    "User-Agent": "client-user-agent/1.0",
    "Authorization": "Bearer client-bearer-token",
    "X-Forwarded-For": CLIENT,
    "Forwarded": f"for={CLIENT}",
    "Accept-Language": "client-language",
}


def _bindable(address: str) -> bool:
    with socket.socket() as s:
        try:
            s.bind((address, 0))
        except OSError:
            return False
    return True


@pytest.fixture(scope="module")
def logged_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    if not (_bindable(CLIENT) and _bindable(RELAY)):
        pytest.skip(f"{CLIENT} and {RELAY} are not local addresses here (Linux has all of 127/8)")
    root = tmp_path_factory.mktemp("relay")
    store = root / "store"
    store.mkdir()
    write_tiny(store)
    stack = start_stack(root / "home", store, "--access-log", str(root / "access.log"))
    stack.wait_model_ready("tiny", "1")
    yield stack
    stack.stop()


@pytest.fixture
def relay(logged_stack: RunningStack) -> Iterator[Relay]:
    gateway = f"https://127.0.0.1:{logged_stack.port}{GATEWAY}"
    with Relay(gateway, listen=(RELAY, 0), source=RELAY, ca=logged_stack.ca) as r:
        yield r


def access_log(stack: RunningStack) -> Path:
    return stack.home.parent / "access.log"


def gateway_lines(stack: RunningStack, count: int, timeout: float = 60) -> list[list[str]]:
    """The access log's gateway requests (peer, method, path, status), once ``count`` are in."""
    deadline = time.monotonic() + timeout
    while True:
        text = access_log(stack).read_text() if access_log(stack).exists() else ""
        lines = [line.split()[1:] for line in text.splitlines() if f" {GATEWAY} " in line]
        if len(lines) >= count:
            return lines
        assert time.monotonic() < deadline, f"{count} gateway requests not logged:\n{text}"
        time.sleep(0.1)


def attested(stack: RunningStack) -> ServingTarget:
    """The verified bundle (with its key configs), fetched earlier from the test's own
    address: a client caches it, or fetches it over another path."""
    policy = ClientPolicy.development(stack.home)
    with TrustserveClient(stack.url, policy=policy, ca=stack.ca) as c:
        return c.verify()


def test_the_frontend_sees_the_relay_and_the_relay_sees_ciphertext(
    logged_stack: RunningStack, relay: Relay
) -> None:
    target = attested(logged_stack)
    assert target.ohttp_config is not None
    x = np.random.default_rng(9458).standard_normal((2, 4)).astype(np.float32)
    prepared = prepare("tiny", "1", {"x": x}, None, target, target.ohttp_config)
    before = len(gateway_lines(logged_stack, 0))
    from_client = httpx.Client(transport=httpx.HTTPTransport(local_address=CLIENT), timeout=60)
    with from_client:
        response = from_client.post(
            relay.url, content=prepared.body, headers={**prepared.headers, **IDENTIFYING}
        )
    answer = read_answer(prepared, response)
    y, total = tiny_expected(x)
    np.testing.assert_allclose(answer["y"], y, rtol=1e-6)
    np.testing.assert_allclose(answer["s"], total, rtol=1e-5)

    # the frontend: the relay's address, never the client's
    assert gateway_lines(logged_stack, before + 1)[before:] == [[RELAY, "POST", GATEWAY, "200"]]
    text = access_log(logged_stack).read_text()
    assert CLIENT not in text
    # the bundle fetch is seen from where it was made (here 127.0.0.1): the documented caveat
    fetches = [line.split()[1:3] for line in text.splitlines() if ATTESTATION_PATH in line]
    assert fetches and all(f == ["127.0.0.1", "GET"] for f in fetches)

    # the relay: the client's address and ciphertext; nothing about the client went on
    [seen] = relay.seen
    assert seen.client == CLIENT
    assert seen.received_headers["content-type"] == ohttp.REQUEST_TYPE
    assert seen.forwarded_body == seen.received_body == prepared.body
    for secret in (x.tobytes(), y.tobytes(), total.tobytes(), b"/v2/models/tiny", b"infer"):
        assert secret not in seen.received_body and secret not in seen.answer
    forwarded = json.dumps(seen.forwarded_headers)
    for name, value in IDENTIFYING.items():
        assert value not in forwarded, f"the client's {name} reached the gateway"
    assert seen.forwarded_headers["user-agent"] == "trustserve-test-relay"  # the relay's own
    assert {"x-forwarded-for", "forwarded", "via", "x-real-ip"}.isdisjoint(seen.forwarded_headers)


def test_a_gateway_refusal_comes_back_through_the_relay(
    logged_stack: RunningStack, relay: Relay
) -> None:
    target = attested(logged_stack)
    assert target.ohttp_config is not None
    config = target.ohttp_config
    unknown = ohttp.KeyConfig((config.key_id + 1) % 256, config.public_key)
    prepared = prepare("tiny", "1", {"x": np.ones((1, 4), np.float32)}, None, target, unknown)
    with httpx.Client(transport=httpx.HTTPTransport(local_address=CLIENT), timeout=60) as c:
        r = c.post(relay.url, content=prepared.body, headers=prepared.headers)
    assert r.status_code == 400, r.text  # the client learns to fetch the key configs again
    assert "key" in r.json()["error"]
    assert relay.seen[-1].status == 400


def test_the_relay_takes_only_encapsulated_requests(relay: Relay) -> None:
    with httpx.Client(transport=httpx.HTTPTransport(local_address=CLIENT), timeout=60) as c:
        plain = c.post(relay.url, json={"inputs": []})
        fetch = c.get(relay.url)
    assert plain.status_code == 415 and "message/ohttp-req" in plain.text
    assert fetch.status_code == 405
    assert relay.seen == []  # neither went on to the gateway


def test_a_third_party_client_through_the_relay_is_answered(
    logged_stack: RunningStack, relay: Relay, ohttp_node: Path
) -> None:
    """@hpke/core + bhttp-js (tests/interop/ohttp_node/client.mjs) encapsulate, the relay
    forwards, the gateway answers: the key config is the attested one, passed in."""
    target = attested(logged_stack)
    assert target.ohttp_config is not None
    before = len(gateway_lines(logged_stack, 0))
    x = [0.5, -1.5, 2.25, 4.0]
    body = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": x}]}
    done = subprocess.run(
        [
            "node",
            "client.mjs",
            "send",
            f"https://127.0.0.1:{logged_stack.port}",
            "tiny",
            "1",
            "--key-config",
            target.ohttp_config.encode().hex(),
            "--via",
            relay.url,
            "--content-type",
            "application/json",
            "--body",
            json.dumps(body),
        ],
        cwd=ohttp_node,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "NODE_EXTRA_CA_CERTS": str(logged_stack.ca)},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    inner = json.loads(done.stdout)
    assert inner["status"] == 200, inner
    outputs = {o["name"]: o["data"] for o in json.loads(inner["body"])["outputs"]}
    y, total = tiny_expected(np.array([x], np.float32))
    np.testing.assert_allclose(outputs["y"], y.ravel(), rtol=1e-6)
    np.testing.assert_allclose(outputs["s"], total.ravel(), rtol=1e-5)
    assert gateway_lines(logged_stack, before + 1)[before:] == [[RELAY, "POST", GATEWAY, "200"]]
    [seen] = relay.seen
    assert np.array([x], np.float32).tobytes() not in seen.received_body
    assert b'"inputs"' not in seen.received_body


def test_the_relay_runs_as_its_own_process(logged_stack: RunningStack) -> None:
    """``python -m tests.interop.relay``: the same relay, for a user trying it by hand."""
    gateway = f"https://127.0.0.1:{logged_stack.port}{GATEWAY}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.interop.relay", "--gateway", gateway,
         "--listen", f"{RELAY}:0", "--source", RELAY, "--ca", str(logged_stack.ca)],
        stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[2],
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith(f"http://{RELAY}:"), url
        target = attested(logged_stack)
        x = np.arange(4, dtype=np.float32).reshape(1, 4)
        prepared = prepare("tiny", "1", {"x": x}, None, target, target.ohttp_config)
        with httpx.Client(transport=httpx.HTTPTransport(local_address=CLIENT), timeout=60) as c:
            response = c.post(url, content=prepared.body, headers=prepared.headers)
        np.testing.assert_allclose(read_answer(prepared, response)["y"], tiny_expected(x)[0])
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
    assert proc.returncode == 0
