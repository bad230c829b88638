"""A worker's wide session (``--lone-threads``) answers exactly as its narrow one.

The model is a small convolutional net with seeded random weights, large enough that
ONNX Runtime and OpenVINO split its work across threads. Measured: identical bits on
this model, and on the demo resnet50 INT8 and FP32 (docs/performance.md); the assertion
allows float rounding (1e-6 relative), since a library may reorder a reduction.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from trustserve import archive
from trustserve.engines import ENGINES, load_engine


def conv_net() -> tuple[bytes, archive.Manifest]:
    rng = np.random.default_rng(25)

    def weight(name: str, *shape: int) -> onnx.TensorProto:
        return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)

    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 32, 32])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])
    nodes = [
        helper.make_node("Conv", ["input", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("GlobalAveragePool", ["r2"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"]),
        helper.make_node("Gemm", ["flat", "w3", "b3"], ["logits"], transB=1),
    ]
    inits = [
        weight("w1", 32, 3, 3, 3),
        weight("b1", 32),
        weight("w2", 64, 32, 3, 3),
        weight("b2", 64),
        weight("w3", 10, 64),
        weight("b3", 10),
    ]
    graph = helper.make_graph(nodes, "convnet", [x], [y], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    manifest = archive.Manifest.from_json(
        {
            "name": "convnet",
            "version": "1",
            "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 3, 32, 32]}],
            "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, 10]}],
            "max_batch_size": 8,
        }
    )
    return bytes(model.SerializeToString()), manifest


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("rows", [1, 4])
def test_the_wide_session_answers_as_the_narrow_one(engine: str, rows: int) -> None:
    if engine == "openvino":
        pytest.importorskip("openvino")
    model, manifest = conv_net()
    narrow = load_engine(engine, model, manifest, 1)
    wide = load_engine(engine, model, manifest, 2)
    x = np.random.default_rng(rows).standard_normal((rows, 3, 32, 32)).astype(np.float32)
    a, b = narrow.infer({"input": x})["logits"], wide.infer({"input": x})["logits"]
    assert a.shape == (rows, 10)
    np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-6 * float(np.abs(a).max()))
