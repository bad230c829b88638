"""The OpenVINO engine (the ``openvino`` extra) on the tiny model: right answers, one stream."""

from __future__ import annotations

import numpy as np
import pytest

from tests.support import tiny_manifest, tiny_onnx

pytest.importorskip("openvino")

from trustserve.engines.openvino import OpenVinoEngine


def test_it_answers_a_batch_with_the_latency_hint() -> None:
    """LATENCY: the one synchronous call per batch a worker makes uses every thread
    (THROUGHPUT would split them into streams that call leaves idle)."""
    engine = OpenVinoEngine(tiny_onnx(), tiny_manifest(), threads=2)
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    out = engine.infer({"x": x})
    np.testing.assert_allclose(out["y"], 2 * x + 1)
    np.testing.assert_allclose(out["s"], x.sum(axis=1, keepdims=True))
    assert str(engine._compiled.get_property("PERFORMANCE_HINT")) == "LATENCY"
    assert engine._compiled.get_property("NUM_STREAMS") == 1


def test_its_threads_are_not_pinned_to_cores() -> None:
    """On cores shared with the frontend and other workers a pinned thread waits for its
    core while another is idle (docs/performance.md, "OpenVINO settings")."""
    engine = OpenVinoEngine(tiny_onnx(), tiny_manifest(), threads=2)
    assert engine._compiled.get_property("ENABLE_CPU_PINNING") is False
    assert engine._compiled.get_property("INFERENCE_NUM_THREADS") == 2


def test_it_computes_in_the_precision_of_the_model() -> None:
    """Not OpenVINO's bf16 default on a CPU that has bf16: the answers are the model's."""
    engine = OpenVinoEngine(tiny_onnx(), tiny_manifest(), threads=1)
    assert str(engine._compiled.get_property("INFERENCE_PRECISION_HINT")) == "<Type: 'float32'>"
    x = np.full((2, 4), 1.001, dtype=np.float32)  # 2x + 1 needs more than bf16's 8 bits
    np.testing.assert_array_equal(engine.infer({"x": x})["y"], 2 * x + 1)
