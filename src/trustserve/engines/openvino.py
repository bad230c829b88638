"""OpenVINO engine (the ``openvino`` extra): reads the ONNX model from bytes in memory."""

from __future__ import annotations

import numpy as np

from trustserve.archive import Manifest
from trustserve.engines.base import Tensors, check_io
from trustserve.errors import ArchiveError, ConfigError


class OpenVinoEngine:
    name = "openvino"

    def __init__(self, model_bytes: bytes, manifest: Manifest, threads: int) -> None:
        try:
            import openvino as ov
        except ImportError:
            msg = "engine 'openvino' needs: pip install 'trustserve[openvino]'"
            raise ConfigError(msg) from None
        core = ov.Core()
        try:
            model = core.read_model(model=model_bytes, weights=b"")
        except Exception as exc:  # OpenVINO raises RuntimeError subclasses of its own
            raise ArchiveError(f"model '{manifest.name}' does not load: {exc}") from None
        inputs = [p.get_any_name() for p in model.inputs]
        outputs = [p.get_any_name() for p in model.outputs]
        check_io(manifest, inputs, outputs)
        # LATENCY: one stream using every thread, which is what a worker's one synchronous
        # call per batch feeds; THROUGHPUT makes several streams and a synchronous call
        # leaves all but one idle. No CPU pinning: on a machine whose cores other processes
        # share (the frontend, other workers, other tenants) a pinned thread waits for its
        # core while another is free. f32: on a CPU with bf16 (this one) OpenVINO's default
        # runs the model's floating-point layers in bf16, which moves resnet50 FP32's
        # logits by 0.8% of their range; a served model computes what its owner shipped
        # (docs/performance.md has the side-by-side figures).
        config = {
            "INFERENCE_NUM_THREADS": threads,
            "PERFORMANCE_HINT": "LATENCY",
            "ENABLE_CPU_PINNING": False,
            "INFERENCE_PRECISION_HINT": "f32",
        }
        self._compiled = core.compile_model(model, "CPU", config)
        self._outputs = [o.name for o in manifest.outputs]

    def infer(self, inputs: Tensors) -> Tensors:
        result = self._compiled(inputs)
        return {n: np.asarray(result[n]) for n in self._outputs}
