"""ONNX Runtime engine: loads a model from bytes in memory, never from a file."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from trustserve.archive import Manifest
from trustserve.engines.base import Tensors, check_io
from trustserve.errors import ArchiveError


class OnnxRuntimeEngine:
    name = "onnxruntime"

    def __init__(self, model_bytes: bytes, manifest: Manifest, threads: int) -> None:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        # An intra-op thread that spins after its work keeps a core busy, and runnable in
        # the kernel's count, for milliseconds: it takes the core from a sibling worker
        # that has just been given a batch, and makes the host look loaded to the lone
        # batch check (worker/cores.py). Sleeping instead costs no measurable throughput
        # (resnet50 INT8, 2 threads: batch 1 0.998, batch 16 0.994 of spinning).
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self._session = ort.InferenceSession(
                model_bytes, sess_options=opts, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # ORT raises its own untyped errors
            raise ArchiveError(f"model '{manifest.name}' does not load: {exc}") from None
        check_io(manifest, [i.name for i in self._session.get_inputs()], self.output_names())
        self._outputs = [o.name for o in manifest.outputs]

    def output_names(self) -> list[str]:
        return [o.name for o in self._session.get_outputs()]

    def infer(self, inputs: Tensors) -> Tensors:
        results = self._session.run(self._outputs, inputs)
        return {n: np.asarray(r) for n, r in zip(self._outputs, results, strict=True)}
