"""Adaptive batching against the old fixed window, side by side, through the embedded broker.

    .venv/bin/python bench/batching_window.py [--window-ms 50] [--seconds 5]

A stand-in engine that sleeps like a batching model (a fixed cost per call plus a cost per
row) behind a real WorkerLoop and EmbeddedBroker socket; closed-loop clients at 1 and 32 in
flight. Prints p50 latency and jobs/s for each policy, interleaved.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support import tiny_manifest
from tests.worker.test_loop import v2
from trustserve.broker.embedded import EmbeddedBroker, SocketJobSource
from trustserve.engines.base import Tensors
from trustserve.worker import loop


class SleepEngine:
    name = "sleep"

    def infer(self, inputs: Tensors) -> Tensors:
        x = inputs["x"]
        time.sleep(0.008 + 0.004 * x.shape[0])
        return {"y": 2 * x + 1, "s": x.sum(axis=1, keepdims=True)}


async def point(fixed: bool, window_ms: int, in_flight: int, seconds: float) -> tuple[float, float]:
    saved = loop.BatchWindow.next
    if fixed:
        loop.BatchWindow.next = lambda self: self.delay_s  # type: ignore[method-assign]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            broker = EmbeddedBroker()
            sock = Path(tmp) / "run" / "broker.sock"
            await broker.serve_workers(sock)
            source = await SocketJobSource.connect(sock, "tiny:1")
            manifest = tiny_manifest(max_batch_size=16, max_batch_delay_ms=window_ms)
            stop = asyncio.Event()
            worker = loop.WorkerLoop(source, "tiny:1", manifest, SleepEngine())  # type: ignore[arg-type]
            running = asyncio.create_task(worker.run(stop))
            latencies: list[float] = []
            end = time.monotonic() + seconds

            async def client() -> None:
                while time.monotonic() < end:
                    t0 = time.monotonic()
                    await broker.submit(v2(np.ones((1, 4), np.float32)))
                    latencies.append(time.monotonic() - t0)

            t0 = time.monotonic()
            await asyncio.gather(*(client() for _ in range(in_flight)))
            rate = len(latencies) / (time.monotonic() - t0)
            stop.set()
            await running
            await source.close()
            await broker.close()
            return statistics.median(latencies) * 1000, rate
    finally:
        loop.BatchWindow.next = saved  # type: ignore[method-assign]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--window-ms", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    print(f"window {args.window_ms} ms; engine sleeps 8 ms + 4 ms per row; batch ≤ 16")
    print("| policy | in flight | p50 ms | jobs/s |\n|---|---|---|---|")
    for _ in range(args.rounds):
        for n in (1, 32):
            for fixed in (True, False):
                p50, rate = asyncio.run(point(fixed, args.window_ms, n, args.seconds))
                name = "fixed window (old)" if fixed else "adaptive (new)"
                print(f"| {name} | {n} | {p50:.1f} | {rate:.1f} |", flush=True)


if __name__ == "__main__":
    main()
