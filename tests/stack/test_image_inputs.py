"""Images as images (issue 25), through a real stack: a JPEG sent as v2 BYTES (standard and
sealed) or as a ``/predictions`` body reaches the worker encoded and is decoded there.

The image model here averages each channel of its preprocessed input (ONNX
``GlobalAveragePool``), so every answer can be checked against ``preprocess_image``
run locally on the same JPEG (|served - local| <= 1e-5, FP32).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import onnx
import pytest
import tritonclient.grpc as triton
from onnx import TensorProto, helper
from tritonclient.utils import InferenceServerException

from tests.support import RunningStack, start_stack, tiny_manifest, write_tiny
from trustserve import archive
from trustserve.client import ClientPolicy, TrustserveClient
from trustserve.files import write_atomic
from trustserve.imaging import preprocess_image
from trustserve.models.calibration import synthetic_image
from trustserve.tensors import Tensor, encode_binary, parse_response

PRE = {"resize": 20, "crop": 16}
ATOL = 1e-5


def means_onnx() -> bytes:
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 16, 16])
    y = helper.make_tensor_value_info("means", TensorProto.FLOAT, ["N", 3])
    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [0, 3])
    nodes = [
        helper.make_node("GlobalAveragePool", ["input"], ["pooled"]),
        helper.make_node("Reshape", ["pooled", "shape"], ["means"]),
    ]
    graph = helper.make_graph(nodes, "means", [x], [y], initializer=[shape])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


MANIFEST = tiny_manifest(
    "means",
    inputs=[{"name": "input", "datatype": "FP32", "shape": [-1, 3, 16, 16]}],
    outputs=[{"name": "means", "datatype": "FP32", "shape": [-1, 3]}],
    preprocessing=PRE,
)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    root = tmp_path_factory.mktemp("images")
    store = root / "store"
    store.mkdir()
    write_atomic(store / "means-1.tsm", archive.pack(MANIFEST, means_onnx()))
    write_tiny(store)
    s = start_stack(root / "home", store)
    try:
        yield s
    finally:
        s.stop()


def jpegs(*seeds: int) -> np.ndarray:
    array = np.empty(len(seeds), dtype=object)
    array[:] = [synthetic_image(s) for s in seeds]
    return array


def expected(images: np.ndarray) -> np.ndarray:
    assert MANIFEST.preprocessing is not None
    return np.stack([preprocess_image(j, MANIFEST.preprocessing).mean(axis=(1, 2)) for j in images])


def v2_bytes(
    stack: RunningStack, model: str, images: np.ndarray, name: str = "input"
) -> httpx.Response:
    body, head_len = encode_binary({}, "inputs", [Tensor(name, "BYTES", images.shape, images)])
    headers = {"Inference-Header-Content-Length": str(head_len)}
    with stack.client() as http:
        return http.post(f"/v2/models/{model}/infer", content=body, headers=headers)


def test_jpegs_as_v2_bytes_are_decoded_by_the_worker(stack: RunningStack) -> None:
    images = jpegs(int(np.random.default_rng().integers(1 << 30)), 11, 12)
    r = v2_bytes(stack, "means", images)
    assert r.status_code == 200, r.text
    head_len = r.headers.get("inference-header-content-length")
    _, (out,) = parse_response(r.content, None if head_len is None else int(head_len))
    np.testing.assert_allclose(out.data, expected(images), atol=ATOL)


def test_sealed_jpegs_as_v2_bytes_and_as_a_predictions_body(stack: RunningStack) -> None:
    images = jpegs(21, 22)
    policy = ClientPolicy.development(stack.home)
    with TrustserveClient(stack.url, policy=policy, ca=stack.ca) as client:
        got = client.infer("means", {"input": images})
        np.testing.assert_allclose(got["means"], expected(images), atol=ATOL)
        answer = client.predict("means", images[0])
    assert answer.keys() == {"means"}
    np.testing.assert_allclose(answer["means"], expected(images[:1])[0], atol=ATOL)


def test_bytes_to_a_model_that_takes_no_images_is_a_clear_400(stack: RunningStack) -> None:
    r = v2_bytes(stack, "tiny", jpegs(1), name="x")
    assert r.status_code == 400
    assert "datatype BYTES given, model expects FP32 (model 'tiny' takes no images)" in r.text


def test_bytes_that_are_not_an_image_are_a_clear_400(stack: RunningStack) -> None:
    r = v2_bytes(stack, "means", np.array([b"\xff\xd8\xff not a jpeg"], dtype=object))
    assert r.status_code == 400
    assert "image does not decode" in r.text


def grpc_bytes(stack: RunningStack, model: str, images: np.ndarray, name: str = "input") -> Any:
    client = triton.InferenceServerClient(
        f"localhost:{stack.grpc_port}", ssl=True, root_certificates=str(stack.ca)
    )
    try:
        tensor = triton.InferInput(name, list(images.shape), "BYTES")
        tensor.set_data_from_numpy(images)
        return client.infer(model, [tensor])
    finally:
        client.close()


def test_jpegs_as_grpc_bytes_are_decoded_by_the_worker(stack: RunningStack) -> None:
    """tritonclient sends BYTES in raw_input_contents, each element length-prefixed."""
    images = jpegs(int(np.random.default_rng().integers(1 << 30)), 31)
    answer = grpc_bytes(stack, "means", images)
    np.testing.assert_allclose(answer.as_numpy("means"), expected(images), atol=ATOL)


def test_grpc_bytes_to_a_model_that_takes_no_images_or_not_images_are_clear_errors(
    stack: RunningStack,
) -> None:
    with pytest.raises(InferenceServerException, match="model 'tiny' takes no images"):
        grpc_bytes(stack, "tiny", jpegs(1), name="x")
    with pytest.raises(InferenceServerException, match="image does not decode"):
        grpc_bytes(stack, "means", np.array([b"\xff\xd8\xff not a jpeg"], dtype=object))
