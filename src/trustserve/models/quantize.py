"""INT8 static quantization (ONNX Runtime, QDQ, per-channel) and FP32-vs-INT8 comparison.

Activations unsigned and weights signed 8-bit (U8S8): on x86 ONNX Runtime
runs U8S8 convolutions on its VNNI / AVX2 integer kernels, where S8S8 QDQ
measured 4x slower here. Weights per output channel; activation ranges from a
MinMax calibration over the samples given. On a CPU without VNNI (AVX2 only),
``reduce_range`` (7-bit weights) avoids the saturation of its 16-bit
intermediate sums. The model is first run through ONNX Runtime's
quantization pre-processing (shape inference, graph optimisation).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process
from tqdm import tqdm

from trustserve.errors import InvalidInput

Array = npt.NDArray[np.float32]


class _Reader(CalibrationDataReader):  # type: ignore[misc]
    """Feeds calibration batches to ONNX Runtime, advancing a progress bar."""

    def __init__(self, input_name: str, batches: Iterable[Array], bar: tqdm) -> None:
        self._name = input_name
        self._it: Iterator[Array] = iter(batches)
        self._bar = bar
        self.samples = 0

    def get_next(self) -> dict[str, Array] | None:
        batch = next(self._it, None)
        if batch is None:
            return None
        self.samples += len(batch)
        self._bar.update(len(batch))
        return {self._name: np.ascontiguousarray(batch, dtype=np.float32)}


def model_input(model: onnx.ModelProto) -> tuple[str, tuple[int, ...]]:
    """The single input of a model: its name and shape (-1 for a free dimension)."""
    initializers = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise InvalidInput(
            f"quantization calibrates single-input models; this one has {len(inputs)} inputs"
        )
    dims = inputs[0].type.tensor_type.shape.dim
    return inputs[0].name, tuple(d.dim_value if d.HasField("dim_value") else -1 for d in dims)


def quantize_model(
    model_in: Path,
    model_out: Path,
    calibration: Iterable[Array],
    *,
    total: int | None = None,
    progress: bool = True,
    reduce_range: bool = False,
    keep_fp32: Sequence[str] = (),
) -> int:
    """Quantize ``model_in`` to ``model_out`` (QDQ, per-channel U8S8); returns samples used.

    ``calibration`` yields FP32 batches for the model's single input. Nodes named in
    ``keep_fp32`` stay in FP32 (a classifier's last layer: its logits are not clipped
    to the range seen in calibration).
    """
    model = onnx.load(str(model_in), load_external_data=False)
    name, _ = model_input(model)
    with (
        tqdm(total=total, desc="calibrating", unit="sample", disable=not progress) as bar,
        tempfile.TemporaryDirectory(prefix="trustserve-quant-") as tmp,
    ):
        reader = _Reader(name, calibration, bar)
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(
            str(model_in), str(prepared), skip_optimization=True, skip_symbolic_shape=True
        )
        quantize_static(
            str(prepared),
            str(model_out),
            reader,
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            reduce_range=reduce_range,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=list(keep_fp32),
            calibrate_method=CalibrationMethod.MinMax,
            extra_options={"CalibTensorRangeSymmetric": False, "CalibMaxIntermediateOutputs": 8},
            calibration_cache_path=Path(tmp) / "calibration.cache",
        )
    if reader.samples == 0:
        raise InvalidInput("no calibration samples")
    return reader.samples


def session(model: Path | bytes, threads: int = 2) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    src = str(model) if isinstance(model, Path) else model
    return ort.InferenceSession(src, opts, providers=["CPUExecutionProvider"])


def predict(sess: ort.InferenceSession, x: Array, batch_size: int = 64) -> Array:
    """The model's first output over ``x``, in batches."""
    name = sess.get_inputs()[0].name
    outs = [sess.run(None, {name: x[i : i + batch_size]})[0] for i in range(0, len(x), batch_size)]
    return np.asarray(np.concatenate(outs), dtype=np.float32)


@dataclass(frozen=True)
class Comparison:
    samples: int
    fp32_accuracy: float | None
    int8_accuracy: float | None
    top1_agreement: float

    def lines(self) -> list[str]:
        out = [f"samples: {self.samples}"]
        if self.fp32_accuracy is not None and self.int8_accuracy is not None:
            drop = 100 * (self.fp32_accuracy - self.int8_accuracy)
            out += [
                f"FP32 accuracy: {100 * self.fp32_accuracy:.2f}%",
                f"INT8 accuracy: {100 * self.int8_accuracy:.2f}%",
                f"drop: {drop:.2f} points",
            ]
        out.append(f"FP32/INT8 top-1 agreement: {100 * self.top1_agreement:.2f}%")
        return out


def compare(
    fp32: Path | bytes,
    int8: Path | bytes,
    x: Array,
    labels: npt.NDArray[np.int64] | None = None,
    *,
    threads: int = 2,
) -> Comparison:
    """Top-1 accuracy of both models on ``x`` (when labelled) and how often they agree."""
    a = predict(session(fp32, threads), x).argmax(axis=1)
    b = predict(session(int8, threads), x).argmax(axis=1)
    acc_a = float(np.mean(a == labels)) if labels is not None else None
    acc_b = float(np.mean(b == labels)) if labels is not None else None
    return Comparison(len(x), acc_a, acc_b, float(np.mean(a == b)))


def is_quantized(model: onnx.ModelProto) -> bool:
    """Whether a model carries QDQ pairs on its weights (what ``quantize_model`` produces)."""
    ops = {n.op_type for n in model.graph.node}
    return "QuantizeLinear" in ops and "DequantizeLinear" in ops
