"""Open Inference Protocol v2, JSON and binary, against the inference app with its workers."""

from __future__ import annotations

import asyncio
import json

import httpx
import numpy as np
import pytest

from tests.frontend.inprocess import Frontend
from tests.support import tiny_expected


def json_request(x: np.ndarray, **extra: object) -> dict[str, object]:
    return {
        "inputs": [
            {"name": "x", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}
        ],
        **extra,
    }


def outputs_of(r: httpx.Response) -> dict[str, np.ndarray]:
    hlen = r.headers.get("inference-header-content-length")
    body = r.content
    head = json.loads(body[: int(hlen)] if hlen else body)
    offset = int(hlen) if hlen else 0
    out = {}
    for o in head["outputs"]:
        if "data" in o:
            out[o["name"]] = np.array(o["data"], dtype=np.float32).reshape(o["shape"])
        else:
            n = o["parameters"]["binary_data_size"]
            out[o["name"]] = np.frombuffer(body[offset : offset + n], np.float32).reshape(
                o["shape"]
            )
            offset += n
    return out


async def test_server_health_and_metadata(tiny_frontend: Frontend) -> None:
    c = tiny_frontend.client
    meta = (await c.get("/v2")).json()
    assert meta["name"] == "trustserve" and "binary_tensor_data" in meta["extensions"]
    assert (await c.get("/v2/health/live")).status_code == 200
    assert (await c.get("/v2/health/ready")).status_code == 200
    model = (await c.get("/v2/models/tiny")).json()
    assert model["versions"] == ["1"]
    assert model["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]
    assert (await c.get("/v2/models/tiny/versions/1")).json()["name"] == "tiny"
    assert (await c.get("/v2/models/tiny/ready")).status_code == 200
    assert (await c.get("/v2/models/tiny/versions/1/ready")).status_code == 200


async def test_json_infer(tiny_frontend: Frontend) -> None:
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    r = await tiny_frontend.client.post("/v2/models/tiny/infer", json=json_request(x, id="req-7"))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    assert r.json()["id"] == "req-7" and r.json()["model_version"] == "1"
    out = outputs_of(r)
    y, s = tiny_expected(x)
    np.testing.assert_allclose(out["y"], y)
    np.testing.assert_allclose(out["s"], s)


async def test_binary_request_and_selected_binary_output(tiny_frontend: Frontend) -> None:
    x = np.random.default_rng().standard_normal((3, 4)).astype(np.float32)
    head = json.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "datatype": "FP32",
                    "shape": [3, 4],
                    "parameters": {"binary_data_size": x.nbytes},
                }
            ],
            "outputs": [{"name": "s", "parameters": {"binary_data": True}}, {"name": "y"}],
        }
    ).encode()
    r = await tiny_frontend.client.post(
        "/v2/models/tiny/versions/1/infer",
        content=head + x.tobytes(),
        headers={"Inference-Header-Content-Length": str(len(head))},
    )
    assert r.status_code == 200, r.text
    assert "inference-header-content-length" in r.headers
    header = json.loads(r.content[: int(r.headers["inference-header-content-length"])])
    assert [o["name"] for o in header["outputs"]] == ["s", "y"]
    assert (
        "binary_data_size" in header["outputs"][0]["parameters"] and "data" in header["outputs"][1]
    )
    out = outputs_of(r)
    y, s = tiny_expected(x)
    np.testing.assert_allclose(out["y"], y, rtol=1e-6)
    np.testing.assert_allclose(out["s"], s, rtol=1e-5)


async def test_binary_data_output_parameter_makes_every_output_binary(
    tiny_frontend: Frontend,
) -> None:
    x = np.ones((1, 4), np.float32)
    r = await tiny_frontend.client.post(
        "/v2/models/tiny/infer", json=json_request(x, parameters={"binary_data_output": True})
    )
    assert r.status_code == 200
    header = json.loads(r.content[: int(r.headers["inference-header-content-length"])])
    assert all("binary_data_size" in o["parameters"] for o in header["outputs"])
    np.testing.assert_allclose(outputs_of(r)["y"], [[3, 3, 3, 3]])


async def test_concurrent_requests_are_batched_and_each_gets_its_own_answer(
    tiny_frontend: Frontend,
) -> None:
    rows = [np.full((1, 4), i, np.float32) for i in range(24)]
    c = tiny_frontend.client
    results = await asyncio.gather(
        *(c.post("/v2/models/tiny/infer", json=json_request(x)) for x in rows)
    )
    for x, r in zip(rows, results, strict=True):
        assert r.status_code == 200
        np.testing.assert_allclose(outputs_of(r)["y"], 2 * x + 1)


@pytest.mark.parametrize("path", ["/v2/models/nope/infer", "/v2/models/tiny/versions/9/infer"])
async def test_unknown_model_or_version_is_404(tiny_frontend: Frontend, path: str) -> None:
    c = tiny_frontend.client
    r = await c.post(path, json=json_request(np.ones((1, 4), np.float32)))
    assert r.status_code == 404
    assert "error" in r.json()
    assert (await c.get(path.removesuffix("/infer"))).status_code == 404
