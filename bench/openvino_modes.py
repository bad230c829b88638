"""OpenVINO CPU settings side by side with ONNX Runtime, on one ONNX file, interleaved.

    .venv/bin/python bench/openvino_modes.py MODEL.onnx [--seconds 8] [--rounds 3]

Rows per second at ``--batch`` with ``--threads`` threads, the payload in memory:
ONNX Runtime; OpenVINO with the LATENCY hint, called synchronously; OpenVINO with the
THROUGHPUT hint called synchronously (one stream fed); and THROUGHPUT with an
AsyncInferQueue fed the batch split across its streams. Prints the median of each over
the rounds and its ratio to ONNX Runtime from the same rounds.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np


def rate(run: Callable[[], None], rows: int, seconds: float) -> float:
    for _ in range(3):
        run()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        run()
        n += 1
    return n * rows / (time.perf_counter() - t0)


def modes(model: bytes, x: np.ndarray, threads: int) -> dict[str, Callable[[], None]]:
    import onnxruntime as ort
    import openvino as ov

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    core = ov.Core()
    ov_model = core.read_model(model=model, weights=b"")
    latency = core.compile_model(
        ov_model, "CPU", {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"}
    )
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

    return {
        "onnxruntime": lambda: sess.run(None, {name: x}) and None,
        "openvino LATENCY sync": lambda: latency({0: x}) and None,
        "openvino THROUGHPUT sync": lambda: through({0: x}) and None,
        f"openvino THROUGHPUT AsyncInferQueue({streams})": async_queue,
    }


def measure(
    model: bytes, batch: int, threads: int, seconds: float, rounds: int
) -> dict[str, list[float]]:
    """Rows per second of every setting, ``rounds`` times, interleaved."""
    x = np.random.default_rng(1).standard_normal((batch, 3, 224, 224)).astype(np.float32)
    runs = modes(model, x, threads)
    got: dict[str, list[float]] = {k: [] for k in runs}
    for r in range(rounds):
        for k, run in runs.items():
            got[k].append(rate(run, batch, seconds))
            print(f"round {r + 1}: {k}: {got[k][-1]:.1f} rows/s", flush=True)
    return got


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model", type=Path)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    got = measure(args.model.read_bytes(), args.batch, args.threads, args.seconds, args.rounds)
    ort_median = statistics.median(got["onnxruntime"])
    print(f"\nbatch {args.batch}, {args.threads} threads, median of {args.rounds} interleaved")
    for k, values in got.items():
        median = statistics.median(values)
        print(f"| {k} | {median:.1f} | {median / ort_median:.2f} |")


if __name__ == "__main__":
    main()
