"""Every bad request gets a clear 4xx naming what was wrong, and the server keeps serving.

The inference app in-process with its workers; the last test asks every door of a real stack."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest

from tests.frontend.inprocess import Frontend
from tests.support import RunningStack

GOOD = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}


async def still_serving(frontend: Frontend) -> None:
    r = await frontend.client.post("/v2/models/tiny/infer", json=GOOD)
    assert r.status_code == 200, r.text


def bad(
    name: str = "x", datatype: str = "FP32", shape: list[int] | None = None, data: object = None
) -> bytes:
    shape = shape or [1, 4]
    return json.dumps(
        {
            "inputs": [
                {"name": name, "datatype": datatype, "shape": shape, "data": data or [1, 2, 3, 4]}
            ]
        }
    ).encode()


CASES = {
    "malformed JSON": (b'{"inputs": [', 400, "not valid JSON"),
    "wrong input name": (bad(name="z"), 400, "unknown input"),
    "wrong datatype": (bad(datatype="INT32"), 400, "datatype INT32 given"),
    "wrong shape": (bad(shape=[1, 5], data=[1, 2, 3, 4, 5]), 400, "does not match model shape"),
    "data count does not fit shape": (bad(shape=[2, 4]), 400, "needs 8"),
    "batch over the model's maximum": (
        bad(shape=[9, 4], data=list(range(36))),
        400,
        "batch size 9",
    ),
    "non-numeric data": (bad(data=["a", "b", "c", "d"]), 400, "does not hold"),
    "inputs missing": (b'{"outputs": []}', 400, "'inputs' must be a list"),
}


@pytest.mark.parametrize("case", list(CASES))
async def test_bad_json_requests(tiny_frontend: Frontend, case: str) -> None:
    body, status, words = CASES[case]
    r = await tiny_frontend.client.post(
        "/v2/models/tiny/infer", content=body, headers={"Content-Type": "application/json"}
    )
    assert r.status_code == status, r.text
    assert words in r.json()["error"]
    await still_serving(tiny_frontend)


@pytest.mark.parametrize(
    ("header_length", "words"),
    [("9999", "does not fit the body"), ("abc", "must be an integer"), ("10", "not valid JSON")],
)
async def test_binary_header_length_that_does_not_match_the_body(
    tiny_frontend: Frontend, header_length: str, words: str
) -> None:
    x = np.ones((1, 4), np.float32)
    head = json.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "datatype": "FP32",
                    "shape": [1, 4],
                    "parameters": {"binary_data_size": 16},
                }
            ]
        }
    ).encode()
    r = await tiny_frontend.client.post(
        "/v2/models/tiny/infer",
        content=head + x.tobytes(),
        headers={"Inference-Header-Content-Length": header_length},
    )
    assert r.status_code == 400
    assert words in r.json()["error"]
    await still_serving(tiny_frontend)


async def test_binary_size_that_does_not_match_the_tensor(tiny_frontend: Frontend) -> None:
    head = json.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "datatype": "FP32",
                    "shape": [1, 4],
                    "parameters": {"binary_data_size": 12},
                }
            ]
        }
    ).encode()
    c = tiny_frontend.client
    r = await c.post(
        "/v2/models/tiny/infer",
        content=head + bytes(12),
        headers={"Inference-Header-Content-Length": str(len(head))},
    )
    assert r.status_code == 400 and "binary_data_size 12 does not match" in r.json()["error"]
    r = await c.post(
        "/v2/models/tiny/infer",
        content=head.replace(b"12", b"16") + bytes(20),
        headers={"Inference-Header-Content-Length": str(len(head))},
    )
    assert r.status_code == 400 and "account for 16 bytes" in r.json()["error"]
    await still_serving(tiny_frontend)


async def test_body_over_the_limit_is_413(tiny_frontend: Frontend) -> None:
    r = await tiny_frontend.client.post(
        "/v2/models/tiny/infer", content=b"[" + b"0," * 600_000 + b"0]"
    )
    assert r.status_code == 413
    assert "limit" in r.json()["error"]
    await still_serving(tiny_frontend)


async def test_image_that_does_not_decode_is_400(tiny_frontend: Frontend) -> None:
    r = await tiny_frontend.client.post(
        "/predictions/colour", content=b"\x89PNG\r\n\x1a\nthis is not really a png"
    )
    assert r.status_code == 400
    assert "image" in r.json()["error"]
    await still_serving(tiny_frontend)


async def test_unknown_model_on_torchserve_api_is_404(tiny_frontend: Frontend) -> None:
    r = await tiny_frontend.client.post("/predictions/nope", content=b"[1,2,3,4]")
    assert r.status_code == 404 and "unknown model 'nope'" in r.json()["error"]
    assert "(this server serves: colour, tiny)" in r.json()["error"]  # what to ask instead


@pytest.mark.parametrize(
    ("door", "method", "path", "status", "code", "words"),
    [
        ("inference", "GET", "/v3/nothing-here", 404, "not_found", "no route GET /v3/nothing-here"),
        ("inference", "DELETE", "/v2/models/tiny/infer", 405, "method_not_allowed", "POST"),
        ("management", "GET", "/no-such-api", 404, "not_found", "no route GET /no-such-api"),
        ("kms", "GET", "/v9/keys", 404, "not_found", "no route GET /v9/keys"),
    ],
)
def test_unknown_route_or_method_answers_a_json_error(
    tiny_stack: RunningStack, door: str, method: str, path: str, status: int, code: str, words: str
) -> None:
    """A client that typed the wrong URL or method reads the same JSON error body as for
    any other mistake (with a machine code), not Starlette's plain-text 'Not Found'."""
    base = {
        "inference": tiny_stack.url,
        "management": tiny_stack.management_url,
        "kms": tiny_stack.kms_url,
    }[door]
    token = {"Authorization": f"Bearer {tiny_stack.token}"} if door == "management" else {}
    with httpx.Client(verify=str(tiny_stack.ca), timeout=30, headers=token) as c:
        r = c.request(method, base + path)
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json"), r.text
    assert r.json()["code"] == code and words in r.json()["error"], r.json()
    if status == 405:
        assert "POST" in r.headers["allow"]
