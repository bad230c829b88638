"""Oblivious HTTP (RFC 9458) against a real stack: the SDK, a hand-built inner request,
the CLI's ``--ohttp``, discovery and rotation (issue 24). The attacks are in
tests/attacks/test_ohttp_*.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import orjson

from tests.attacks.ohttp_support import answered, opened, post, target
from tests.sealed.test_sealed_e2e import dev_policy
from tests.support import RunningStack, png, tiny_expected
from trustserve.client import AsyncTrustserveClient, TrustserveClient
from trustserve.client.ohttp import encapsulate, inner_request
from trustserve.client.sdk import prepare
from trustserve.crypto import ohttp


def ohttp_client(stack: RunningStack) -> TrustserveClient:
    return TrustserveClient(stack.url, policy=dev_policy(stack), ca=stack.ca, ohttp=True)


def test_ohttp_infer_gives_what_sealed_and_standard_requests_give(
    tiny_stack: RunningStack,
) -> None:
    x = np.random.default_rng(24).standard_normal((3, 4)).astype(np.float32)
    before = answered(tiny_stack, "200")
    with (
        ohttp_client(tiny_stack) as o,
        TrustserveClient(tiny_stack.url, policy=dev_policy(tiny_stack), ca=tiny_stack.ca) as s,
        TrustserveClient(tiny_stack.url, ca=tiny_stack.ca, sealed=False) as standard,
    ):
        a, b, c = (client.infer("tiny", {"x": x}) for client in (o, s, standard))
    y, total = tiny_expected(x)
    np.testing.assert_allclose(a["s"], total, rtol=1e-5)
    np.testing.assert_allclose(a["y"], y, rtol=1e-6)
    for other in (b, c):
        np.testing.assert_array_equal(a["y"], other["y"])
        np.testing.assert_array_equal(a["s"], other["s"])
    assert answered(tiny_stack, "200") == before + 1  # counted under api="ohttp"


def test_ohttp_image_gives_the_torchserve_top_k(tiny_stack: RunningStack) -> None:
    image = png((20, 30, 240))
    with ohttp_client(tiny_stack) as c:
        encapsulated = c.predict("colour", image)
    with tiny_stack.client() as c:
        standard = c.post("/predictions/colour", content=image).json()
    assert encapsulated == standard and next(iter(encapsulated)) == "blue"


async def test_async_client(tiny_stack: RunningStack) -> None:
    async with AsyncTrustserveClient(
        tiny_stack.url, policy=dev_policy(tiny_stack), ca=tiny_stack.ca, ohttp=True
    ) as c:
        out = await c.infer("tiny", {"x": np.ones((2, 4), np.float32)}, version="1")
    np.testing.assert_allclose(out["y"], 3 * np.ones((2, 4)))


def test_a_json_inner_request_as_any_ohttp_client_sends_it(tiny_stack: RunningStack) -> None:
    """What a client in another language builds: v2 JSON, its own headers, a date."""
    body = orjson.dumps(
        {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}
    )
    config = target(tiny_stack).ohttp_config
    assert config is not None
    request = inner_request(
        "/v2/models/tiny/versions/1/infer", body, {"content-type": "application/json"}
    )
    encapsulated, context = encapsulate(config, request)
    inner = opened(context, post(tiny_stack, encapsulated))
    assert inner.status == 200 and inner.header("content-type") == "application/json"
    answer = orjson.loads(inner.body)
    assert answer["model_name"] == "tiny"
    assert {o["name"]: o["data"] for o in answer["outputs"]}["y"] == [3.0, 5.0, 7.0, 9.0]


def test_an_inner_request_without_a_date_is_refused_inside(tiny_stack: RunningStack) -> None:
    config = target(tiny_stack).ohttp_config
    assert config is not None
    request = inner_request("/v2/models/tiny/versions/1/infer", b"{}")
    undated = type(request)(
        "POST", "https", "", request.path, (("content-type", "application/json"),), b"{}"
    )
    encapsulated, context = encapsulate(config, undated)
    inner = opened(context, post(tiny_stack, encapsulated))
    assert inner.status == 400 and b"date" in inner.body
    stale = inner_request("/v2/models/tiny/versions/1/infer", b"{}", now=time.time() - 3600)
    encapsulated, context = encapsulate(config, stale)
    inner = opened(context, post(tiny_stack, encapsulated))
    assert inner.status == 400 and b"expired" in inner.body


def test_discovery_serves_the_bundles_key_configs(tiny_stack: RunningStack) -> None:
    with tiny_stack.client() as c:
        r = c.get("/.well-known/ohttp-gateway")
    assert r.status_code == 200 and r.headers["content-type"] == ohttp.KEYS_TYPE
    attested = target(tiny_stack).ohttp_configs
    assert ohttp.decode_key_configs(r.content) == list(attested)


def cli(stack: RunningStack, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"TRUSTSERVE_HOME": str(stack.home), "PATH": "/usr/bin:/bin"}
    if "PYTHONPATH" in os.environ:  # the tree under test, not another install
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return subprocess.run(
        [sys.executable, "-m", "trustserve.cli", *args, "--ca", str(stack.ca)],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip


def test_cli_predict_and_batch_with_ohttp(tiny_stack: RunningStack, tmp_path: Path) -> None:
    x = tmp_path / "x.npy"
    np.save(x, np.array([[1, 2, 3, 4]], np.float32))
    image = tmp_path / "red.png"
    image.write_bytes(png((240, 20, 20)))
    before = answered(tiny_stack, "200")
    out = cli(tiny_stack, "predict", tiny_stack.url, "tiny", str(x), "--allow-simulated", "--ohttp")
    assert out.returncode == 0, out.stderr
    assert "as OHTTP to key config" in out.stderr
    assert json.loads(out.stdout) == {"y": [[3.0, 5.0, 7.0, 9.0]], "s": [[10.0]]}
    top = cli(tiny_stack, "predict", tiny_stack.url, "colour", str(image), "--allow-simulated",
              "--ohttp")  # fmt: skip
    assert top.returncode == 0, top.stderr
    assert next(iter(json.loads(top.stdout))) == "red"
    folder, results = tmp_path / "inputs", tmp_path / "results.jsonl"
    folder.mkdir()
    for i in range(3):
        np.save(folder / f"x{i}.npy", np.full((1, 4), i, np.float32))
    run = cli(tiny_stack, "batch", tiny_stack.url, "tiny", str(folder), "-o", str(results),
              "--allow-simulated", "--ohttp")  # fmt: skip
    assert run.returncode == 0, run.stderr
    rows = {r["input"]: r for r in map(json.loads, results.read_text().splitlines())}
    assert rows["x2.npy"]["outputs"] == {"y": [[5.0] * 4], "s": [[8.0]]}
    assert answered(tiny_stack, "200") == before + 5
    both = cli(tiny_stack, "predict", tiny_stack.url, "tiny", str(x), "--standard", "--ohttp")
    assert both.returncode != 0 and "--ohttp" in both.stderr


def test_rotation_gives_a_new_key_config_id_and_keeps_the_previous_working(
    tiny_stack: RunningStack,
) -> None:
    """Runs last in this module: it rotates the stack's serving key."""
    old = target(tiny_stack)
    assert old.ohttp_config is not None
    to_old = prepare("tiny", "1", {"x": np.ones((1, 4), np.float32)}, None, old, old.ohttp_config)
    assert to_old.ohttp is not None
    tiny_stack.rotate_serving_key()
    time.sleep(1.1)  # frontend and workers refresh their view of the keys at most once a second
    new = target(tiny_stack)
    assert new.ohttp_config is not None
    assert new.ohttp_config.key_id == (old.ohttp_config.key_id + 1) % 256
    assert new.ohttp_configs[1] == old.ohttp_config  # the previous key, still accepted
    with ohttp_client(tiny_stack) as c:
        np.testing.assert_allclose(
            c.infer("tiny", {"x": np.ones((1, 4), np.float32)})["y"], [[3, 3, 3, 3]]
        )
    inner = opened(to_old.ohttp, post(tiny_stack, to_old.body))  # to the previous key config
    assert inner.status == 200, inner.body
