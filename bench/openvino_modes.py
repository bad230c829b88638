"""OpenVINO CPU settings side by side with ONNX Runtime, on one ONNX file, interleaved.

    .venv/bin/python bench/openvino_modes.py MODEL.onnx [--seconds 2] [--rounds 9]
        [--only served]

Rows per second at ``--batch`` with ``--threads`` threads, the payload in memory. Every
round runs each setting for ``--seconds`` in turn, in a fresh order each round, so a
noisy minute of this shared machine hits every setting alike; the figure that decides is
the median over the rounds of each setting's ratio to ONNX Runtime *in the same round*
(the speed of the machine cancels out), not a ratio of two medians taken minutes apart.

Settings: ONNX Runtime and OpenVINO exactly as the engines serve them
(``trustserve.engines``), then OpenVINO variants: the THROUGHPUT hint called
synchronously (one stream fed) and with an AsyncInferQueue fed the batch split across its
streams, and the LATENCY hint with one stream and CPU pinning, pinning alone (the
engine's setting before issue 14), and f32 precision forced (this CPU defaults to bf16
for the layers left in floating point).
``--only served`` runs the two engines as served.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ORT = "onnxruntime (as served)"
OV = "openvino (as served)"
# OpenVINO compile settings tried beside the served one (INFERENCE_NUM_THREADS is added)
VARIANTS: dict[str, dict[str, Any]] = {
    "openvino THROUGHPUT, sync": {"PERFORMANCE_HINT": "THROUGHPUT"},
    "openvino LATENCY, NUM_STREAMS 1, pinning on": {
        "PERFORMANCE_HINT": "LATENCY",
        "NUM_STREAMS": 1,
        "ENABLE_CPU_PINNING": True,
    },
    "openvino LATENCY, pinning on": {"PERFORMANCE_HINT": "LATENCY", "ENABLE_CPU_PINNING": True},
    "openvino LATENCY, pinning off, precision f32": {
        "PERFORMANCE_HINT": "LATENCY",
        "ENABLE_CPU_PINNING": False,
        "INFERENCE_PRECISION_HINT": "f32",
    },
}


def rate(run: Callable[[], None], rows: int, seconds: float) -> float:
    run()  # a warm call: shape-specific kernels are chosen on first use
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        run()
        n += 1
    return n * rows / (time.perf_counter() - t0)


def _manifest(model: bytes) -> Any:
    import onnxruntime as ort

    from trustserve.archive import Manifest, TensorSpec

    s = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    i, o = s.get_inputs()[0], s.get_outputs()[0]
    spec = (TensorSpec(i.name, "FP32", (-1, 3, 224, 224)),)
    return Manifest("bench", "1", spec, (TensorSpec(o.name, "FP32", (-1, 1000)),))


def modes(model: bytes, x: np.ndarray, threads: int, only: str) -> dict[str, Callable[[], None]]:
    from trustserve.engines import load_engine

    manifest = _manifest(model)
    name = manifest.inputs[0].name
    served = {e: load_engine(e, model, manifest, threads) for e in ("onnxruntime", "openvino")}
    runs: dict[str, Callable[[], None]] = {
        ORT: lambda: served["onnxruntime"].infer({name: x}) and None,
        OV: lambda: served["openvino"].infer({name: x}) and None,
    }
    if only == "served":
        return runs
    import openvino as ov

    core = ov.Core()
    ov_model = core.read_model(model=model, weights=b"")
    for label, config in VARIANTS.items():
        compiled = core.compile_model(ov_model, "CPU", {**config, "INFERENCE_NUM_THREADS": threads})
        runs[label] = lambda c=compiled: c({0: x}) and None
    through = core.compile_model(
        ov_model, "CPU", {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "THROUGHPUT"}
    )
    streams = int(through.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
    queue = ov.AsyncInferQueue(through, streams)
    parts = np.array_split(x, streams)

    def async_queue() -> None:
        for part in parts:
            queue.start_async({0: part})
        queue.wait_all()

    runs[f"openvino THROUGHPUT, AsyncInferQueue({streams})"] = async_queue
    return runs


def measure(
    model: bytes, batch: int, threads: int, seconds: float, rounds: int, only: str = "all"
) -> dict[str, list[float]]:
    """Rows per second of every setting, ``rounds`` times, interleaved in a shuffled order
    (seeded: the same order on every run); index ``r`` of every list is round ``r``."""
    x = np.random.default_rng(1).standard_normal((batch, 3, 224, 224)).astype(np.float32)
    runs = modes(model, x, threads, only)
    got: dict[str, list[float]] = {k: [] for k in runs}
    order = list(runs)
    shuffle = random.Random(14)
    for r in range(rounds):
        shuffle.shuffle(order)
        for k in order:
            got[k].append(rate(runs[k], batch, seconds))
            print(f"round {r + 1}: {k}: {got[k][-1]:.1f} rows/s", file=sys.stderr, flush=True)
    return got


def ratios(got: dict[str, list[float]]) -> dict[str, float]:
    """Each setting's median over the rounds of its ratio to ONNX Runtime in that round."""
    base = got[ORT]
    return {
        k: statistics.median(v / b for v, b in zip(vs, base, strict=True)) for k, vs in got.items()
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model", type=Path)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=2)
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--only", choices=("all", "served"), default="all")
    args = ap.parse_args()
    got = measure(
        args.model.read_bytes(), args.batch, args.threads, args.seconds, args.rounds, args.only
    )
    r = ratios(got)
    print(f"\nbatch {args.batch}, {args.threads} threads, {args.rounds} interleaved rounds")
    print("| engine and setting | median img/s | median ÷ ORT in the same round | range |")
    print("|---|---|---|---|")
    base = got[ORT]
    for k, values in sorted(got.items(), key=lambda kv: -r[kv[0]]):
        each = [v / b for v, b in zip(values, base, strict=True)]
        print(
            f"| {k} | {statistics.median(values):.1f} | {r[k]:.2f} | "
            f"{min(each):.2f} to {max(each):.2f} |"
        )


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
    main()
