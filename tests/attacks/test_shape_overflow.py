"""Shape overflow: dimensions whose product numpy cannot hold must be a 400, not a crash.

Before: ``"shape": [0, 2**40, 2**40]`` with empty data (0 elements, so the
count check passed) reached ``reshape``, which raised a bare ValueError ("array
is too big"): an uncaught error, 500 with a traceback in the log; the same
with ``binary_data_size: 0``. Now a shape is at most ``MAX_RANK`` dimensions
and ``MAX_ELEMENTS`` elements (a 0 dimension counted as 1), checked first.

gRPC too (found in the review of the data-plane change): raw contents of 0 bytes for
``[1, 0, 2**62]`` on a model with free dimensions passed the byte count and reached
``reshape``: INTERNAL and a logged traceback per request. The gRPC header check now
applies the same limits before any conversion.
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from tests.frontend.inprocess import local_frontend
from tests.support import tiny_manifest, tiny_onnx
from trustserve import archive
from trustserve.broker.embedded import EmbeddedBroker
from trustserve.errors import InvalidInput
from trustserve.files import write_atomic
from trustserve.frontend.dataplane import DataPlane
from trustserve.frontend.grpc_service import GrpcInference
from trustserve.frontend.grpc_v2 import grpc_predict_v2_pb2 as pb
from trustserve.frontend.metrics import Metrics
from trustserve.frontend.registry import ModelRegistry
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


def free_dims_servicer(store: Path) -> GrpcInference:
    """gRPC over a model whose input has free dimensions after the batch ([-1, -1, -1]),
    so only the request-wide limits stand between a huge shape and numpy."""
    store.mkdir(parents=True)
    free = [{"name": "x", "datatype": "FP32", "shape": [-1, -1, -1]}]
    write_atomic(
        store / "free-1.tsm", archive.pack(tiny_manifest("free", inputs=free), tiny_onnx())
    )
    registry = ModelRegistry(store)
    registry.register("free-1.tsm", 0)
    return GrpcInference(DataPlane(registry, EmbeddedBroker(), Metrics(), timeout_s=30.0))


@pytest.mark.parametrize("raw", [True, False], ids=["raw", "typed"])
async def test_grpc_refuses_an_overflowing_shape_as_invalid_input(
    tmp_path: Path, raw: bool
) -> None:
    request = pb.ModelInferRequest(model_name="free")
    tensor = request.inputs.add(name="x", datatype="FP32", shape=[1, 0, 2**62])
    if raw:
        request.raw_input_contents.append(b"")
    else:
        tensor.contents.SetInParent()
    with pytest.raises(InvalidInput, match="element limit"):
        await free_dims_servicer(tmp_path / "store").model_infer(request)
