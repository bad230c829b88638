"""Throughput with the Redis broker versus the number of workers, each on its own "host".

Each worker runs in its own network namespace (a veth pair to this namespace, private
10.77.N.0/24 addresses that never leave the machine) and reaches Redis over TLS with
the ACL user, as a worker on another machine would. The frontend (`trustserve serve
--broker rediss://... --workers 0`) and Redis stay in this namespace.

A CPU-bound model makes workers the bottleneck: an MLP of ``--layers`` 1024x1024
MatMuls, batch up to 16, one engine thread per worker. This machine has few cores,
so past that many workers the measured curve flattens for lack of CPU, not because
of the broker; the script also measures the broker's own ceiling (tiny model, many
requests in flight) and prints the model ``min(N x one-worker rate, ceiling)`` for
N hosts.

    sudo .venv/bin/python bench/redis_scaling.py [--workers 1,2,3,4] [--seconds 8]

Needs root (ip netns). Results go to stdout as a Markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import raw_engine, v2_binary_body  # noqa: E402
from bench.loadgen import LoadResult, build_request, run_load  # noqa: E402
from tests.broker.redis_server import RedisServer  # noqa: E402
from tests.support import RunningStack, start_stack, write_tiny  # noqa: E402
from trustserve import archive  # noqa: E402
from trustserve.files import write_atomic  # noqa: E402

WIDTH = 1024


def write_mlp(store: Path, layers: int) -> Path:
    rng = np.random.default_rng(7)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", WIDTH])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", WIDTH])
    inits, nodes, prev = [], [], "x"
    for i in range(layers):
        w = (rng.standard_normal((WIDTH, WIDTH)) / np.sqrt(WIDTH)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        out = "y" if i == layers - 1 else f"h{i}"
        nodes.append(helper.make_node("MatMul", [prev, f"w{i}"], [f"m{i}"]))
        nodes.append(helper.make_node("Relu", [f"m{i}"], [out]))
        prev = out
    graph = helper.make_graph(nodes, "mlp", [x], [y], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    manifest = archive.Manifest.from_json(
        {
            "name": "mlp",
            "version": "1",
            "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, WIDTH]}],
            "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, WIDTH]}],
            "max_batch_size": 16,
            "max_batch_delay_ms": 5,
        }
    )
    path = store / "mlp-1.tsm"
    write_atomic(path, archive.pack(manifest, model.SerializeToString()))
    return path


def sh(*args: str) -> None:
    subprocess.run(args, check=True)


@contextmanager
def namespaces(n: int) -> Iterator[list[tuple[str, str]]]:
    """``n`` namespaces tsbenchI, each linked to this one: [(namespace, our address)]."""
    made: list[tuple[str, str]] = []
    try:
        for i in range(1, n + 1):
            ns, host_if, ns_if = f"tsbench{i}", f"tsbh{i}", f"tsbw{i}"
            sh("ip", "netns", "add", ns)
            made.append((ns, f"10.77.{i}.1"))
            sh("ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if)
            sh("ip", "link", "set", ns_if, "netns", ns)
            sh("ip", "addr", "add", f"10.77.{i}.1/24", "dev", host_if)
            sh("ip", "link", "set", host_if, "up")
            sh("ip", "netns", "exec", ns, "ip", "addr", "add", f"10.77.{i}.2/24", "dev", ns_if)
            sh("ip", "netns", "exec", ns, "ip", "link", "set", ns_if, "up")
            sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
        yield made
    finally:
        for i, (ns, _) in enumerate(made, 1):
            subprocess.run(["ip", "link", "del", f"tsbh{i}"], check=False)
            subprocess.run(["ip", "netns", "del", ns], check=False)


def start_workers(
    redis: RedisServer, hosts: list[tuple[str, str]], path: Path, log: Path
) -> list[subprocess.Popen[bytes]]:
    procs = []
    for ns, address in hosts:
        url = redis.url(host=address)
        cmd = ["ip", "netns", "exec", ns, sys.executable, "-m", "trustserve.cli", "worker"]
        cmd += ["--archive", str(path), "--broker", url, "--threads", "1"]
        with log.open("ab") as out:
            procs.append(subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT))
    return procs


def ready_workers(stack: RunningStack, model: str) -> int:
    with stack.management() as m:
        return int(m.get(f"/models/{model}").json()[0]["readyWorkers"])


def measure(
    stack: RunningStack, body: bytes, head: int, model: str, in_flight: int, s: float
) -> LoadResult:
    req = build_request(
        f"localhost:{stack.port}",
        f"/v2/models/{model}/infer",
        body,
        {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(head)},
    )
    ctx = ssl.create_default_context(cafile=str(stack.ca))
    return asyncio.run(
        run_load(
            "127.0.0.1",
            stack.port,
            req,
            in_flight=in_flight,
            duration_s=s,
            warmup_s=2,
            ssl_context=ctx,
        )
    )


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--workers", default="1,2,3,4")
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--seconds", type=float, default=8)
    args = p.parse_args()
    counts = [int(c) for c in args.workers.split(",")]
    root = Path(tempfile.mkdtemp(prefix="ts-redis-bench-"))
    store = root / "store"
    store.mkdir()
    mlp, tiny = write_mlp(store, args.layers), write_tiny(store)
    x = np.random.default_rng(1).standard_normal((1, WIDTH)).astype(np.float32)
    body, head = v2_binary_body("x", x)
    tbody, thead = v2_binary_body("x", np.ones((1, 4), np.float32))
    raw16 = raw_engine("onnxruntime", mlp, 16, 1, 5)
    rows = []
    with namespaces(max(counts)) as hosts:
        redis = RedisServer(root / "redis", addresses=["127.0.0.1", *(a for _, a in hosts)])
        redis.start()
        procs: list[subprocess.Popen[bytes]] = []
        try:
            # Workers first (the stack is ready only once a worker is), one per namespace.
            procs = start_workers(redis, hosts[:1], tiny, root / "workers.log")
            procs += start_workers(redis, hosts[:1], mlp, root / "workers.log")
            stack = start_stack(
                root / "home", store, "--broker", redis.url(), "--workers", "0", dev=False
            )
            try:
                ceiling = measure(stack, tbody, thead, "tiny", 64, args.seconds).rps
                running = 1
                for n in counts:
                    procs += start_workers(redis, hosts[running:n], mlp, root / "workers.log")
                    running = max(running, n)
                    deadline = time.monotonic() + 120
                    while ready_workers(stack, "mlp") < n:
                        assert time.monotonic() < deadline, "workers did not come up"
                        time.sleep(0.2)
                    r = measure(stack, body, head, "mlp", 24 * n, args.seconds)
                    rows.append((n, r.rps, r.percentile(50), r.percentile(99), r.errors))
            finally:
                stack.stop()
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.wait(20)
            redis.stop()
    one = rows[0][1]
    print(f"\nmachine: {os.cpu_count()} cores; MLP {args.layers}x{WIDTH}^2, 1 thread/worker")
    print(f"raw engine, batch 16, 1 thread: {raw16:.0f} rows/s")
    print(f"broker ceiling (tiny model, 64 in flight): {ceiling:.0f} req/s\n")
    print("| workers (namespaces) | measured req/s | p50 ms | p99 ms | errors | model req/s |")
    print("|---|---|---|---|---|---|")
    for n, rps, p50, p99, errors in rows:
        model = min(n * one, ceiling)
        print(f"| {n} | {rps:.0f} | {p50:.1f} | {p99:.1f} | {errors} | {model:.0f} |")
    print(f"\nserved / raw (1 worker, Redis broker): {one / raw16:.2f}")
    for n in (8, 16, 32):
        print(f"model for {n} hosts: {min(n * one, ceiling):.0f} req/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
