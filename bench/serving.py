"""Serving benchmark: raw engine vs served through the HTTPS frontend, in one run.

    .venv/bin/python bench/serving.py [--seconds 20] [--in-flight 32] [--threads 2]

Raw: the engine alone at batch 16 with the same thread count as the worker.
Served: `trustserve serve` (embedded broker, one worker process), binary v2
tensors of one image each, ``--in-flight`` requests kept in flight by a
low-CPU client. Writes bench/results/serving.json and prints the table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import time

import numpy as np
from common import RESULTS, demo_models, raw_engine, served, tls_context, v2_binary_body
from loadgen import build_request, run_load


def served_rps(stack, model: str, x: np.ndarray, in_flight: int, seconds: float, tls: bool):  # type: ignore[no-untyped-def]
    body, hlen = v2_binary_body("input", x)
    req = build_request(
        f"localhost:{stack.port}",
        f"/v2/models/{model}/infer",
        body,
        {"Inference-Header-Content-Length": str(hlen), "Content-Type": "application/octet-stream"},
    )
    return asyncio.run(
        run_load(
            "127.0.0.1",
            stack.port,
            req,
            in_flight=in_flight,
            duration_s=seconds,
            warmup_s=5,
            ssl_context=tls_context(stack) if tls else None,
        )
    )


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=float, default=20)
    p.add_argument("--in-flight", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=16)
    args = p.parse_args()
    models = demo_models()
    int8 = models["resnet50-int8"]
    raw = raw_engine("onnxruntime", int8, args.batch, args.threads, args.seconds)
    print(f"raw onnxruntime resnet50 INT8 batch {args.batch}: {raw:.1f} img/s", flush=True)
    x = np.random.default_rng(2).standard_normal((1, 3, 224, 224)).astype(np.float32)
    with served([int8], "--threads", str(args.threads), name="serving") as stack:
        r = served_rps(stack, "resnet50", x, args.in_flight, args.seconds, tls=True)
    ratio = r.rps / raw
    print(
        f"served HTTPS binary, {args.in_flight} in flight: {r.rps:.1f} img/s  "
        f"p50 {r.percentile(50):.0f} ms  p99 {r.percentile(99):.0f} ms  errors {r.errors}  "
        f"client CPU {r.client_cpu_share:.0%} of a core",
        flush=True,
    )
    print(f"served / raw = {ratio:.3f}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "serving.json").write_text(
        json.dumps(
            {
                "when": time.strftime("%Y-%m-%d %H:%M:%S"),
                "machine": platform.platform(),
                "threads": args.threads,
                "batch": args.batch,
                "in_flight": args.in_flight,
                "raw_img_s": raw,
                "served_img_s": r.rps,
                "served_p50_ms": r.percentile(50),
                "served_p99_ms": r.percentile(99),
                "errors": r.errors,
                "client_cpu_share": r.client_cpu_share,
                "ratio": ratio,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
