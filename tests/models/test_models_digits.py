"""The digits demo model: trained at build time, served FP32, and its INT8 quantization."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from trustserve import archive
from trustserve.models.calibration import batches
from trustserve.models.digits import digits_split
from trustserve.models.quantize import compare, is_quantized, predict, quantize_model, session


def test_digits_archive_is_a_trained_classifier(demo_store: dict[str, Path]) -> None:
    arc = archive.load(demo_store["digits"])
    m = arc.manifest
    assert (m.name, m.version, m.max_batch_size) == ("digits", "1", 64)
    assert [(t.name, t.datatype, t.shape) for t in m.inputs] == [("input", "FP32", (-1, 64))]
    assert [(t.name, t.datatype, t.shape) for t in m.outputs] == [("logits", "FP32", (-1, 10))]
    assert m.labels == tuple(str(i) for i in range(10))
    split = digits_split()
    logits = predict(session(arc.payload), split.x_test)
    assert logits.shape == (len(split.x_test), 10) and logits.dtype == np.float32
    accuracy = float(np.mean(logits.argmax(axis=1) == split.y_test))
    print(f"digits held-out accuracy: {100 * accuracy:.2f}% on {len(split.x_test)} samples")
    assert accuracy >= 0.95
    assert m.extra["held_out_accuracy"] == round(accuracy, 4)


def test_digits_graph_has_one_plain_tensor_output(demo_store: dict[str, Path]) -> None:
    model = onnx.load(str(demo_store["onnx/digits"]))
    assert [o.name for o in model.graph.output] == ["logits"]
    assert model.graph.output[0].type.HasField("tensor_type")  # no ZipMap (sequence of maps)
    assert "ZipMap" not in {n.op_type for n in model.graph.node}


def test_digits_int8_drop_is_at_most_half_a_point(
    demo_store: dict[str, Path], tmp_path: Path
) -> None:
    split = digits_split()
    out = tmp_path / "digits-int8.onnx"
    used = quantize_model(
        demo_store["onnx/digits"], out, batches([split.x_train], 64), progress=False
    )
    assert used == len(split.x_train)
    assert is_quantized(onnx.load(str(out)))
    result = compare(demo_store["onnx/digits"], out, split.x_test, split.y_test)
    assert result.fp32_accuracy is not None and result.int8_accuracy is not None
    print(
        f"digits held-out accuracy: FP32 {100 * result.fp32_accuracy:.2f}%, "
        f"INT8 {100 * result.int8_accuracy:.2f}% ({result.samples} samples)"
    )
    assert result.fp32_accuracy >= 0.95
    assert 100 * (result.fp32_accuracy - result.int8_accuracy) <= 0.5
