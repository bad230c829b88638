"""Shape overflow: dimensions whose product numpy cannot hold must be a 400, not a crash.

Before: ``"shape": [0, 2**40, 2**40]`` with empty data (0 elements, so the
count check passed) reached ``reshape``, which raised a bare ValueError ("array
is too big"): an uncaught error, 500 with a traceback in the log; the same
with ``binary_data_size: 0``. Now a shape is at most ``MAX_RANK`` dimensions
and ``MAX_ELEMENTS`` elements (a 0 dimension counted as 1), checked first.
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from tests.frontend.inprocess import local_frontend
from trustserve.errors import InvalidInput
from trustserve.tensors import MAX_RANK, parse_request

SHAPES = [[0, 2**40, 2**40], [2**62, 2**62], [0, 2**63 - 1, 2**63 - 1], [1] * (MAX_RANK + 1)]


def _json_body(shape: list[int]) -> bytes:
    return orjson.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": shape, "data": []}]})


def _binary_body(shape: list[int]) -> tuple[bytes, str]:
    head = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "datatype": "FP32",
                    "shape": shape,
                    "parameters": {"binary_data_size": 0},
                }
            ]
        }
    )
    return head, str(len(head))


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_parser_refuses_with_its_own_error(shape: list[int]) -> None:
    with pytest.raises(InvalidInput, match="shape"):
        parse_request(_json_body(shape), None)
    body, head_len = _binary_body(shape)
    with pytest.raises(InvalidInput, match="shape"):
        parse_request(body, head_len)


@pytest.mark.parametrize("shape", SHAPES[:2], ids=str)
async def test_http_answer_is_400(tmp_path: Path, shape: list[int]) -> None:
    client, _ = local_frontend(tmp_path / "store")
    body, head_len = _binary_body(shape)
    async with client:
        r = await client.post(
            "/v2/models/tiny/infer", content=_json_body(shape), headers={"Content-Type": "x"}
        )
        b = await client.post(
            "/v2/models/tiny/infer",
            content=body,
            headers={"Inference-Header-Content-Length": head_len},
        )
    assert r.status_code == 400 and "shape" in r.json()["error"], r.text
    assert b.status_code == 400 and "shape" in b.json()["error"], b.text
