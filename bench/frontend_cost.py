"""Frontend cost (issue 14): served INT8 and sealed INT8 as ratios to adjacent raw, old code
against new, interleaved, with each process's CPU per request and an optional py-spy profile.

    .venv/bin/python bench/frontend_cost.py --old-src /tmp/old/src --rounds 3 --seconds 8
    .venv/bin/python bench/frontend_cost.py --rounds 1 --profile bench/results/profile

``--old-src``: the ``src`` folder of a second checkout (``git worktree add``); its stack runs
with that folder first on PYTHONPATH, everything else (client, load generator) is shared.
The order of old and new alternates per round, so a noisy minute does not pick a side.
``--profile DIR``: py-spy samples the frontend (and one worker) during each load and writes
collapsed stacks plus a summary of the hottest frames there.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bare_server import running
from common import (
    RESULTS,
    demo_models,
    load,
    raw_engine,
    sealed_requests,
    served,
    tls_context,
    v2_request,
)

from tests.support import RunningStack

TICK = os.sysconf("SC_CLK_TCK")
NATIVE = False  # --native: C frames too (OpenSSL, uvloop), at a higher sampling cost


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of one process (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


@contextmanager
def spied(pid: int, out: Path | None, seconds: float) -> Iterator[None]:
    """py-spy record on ``pid`` for ``seconds`` while the body runs (nothing without ``out``)."""
    if out is None:
        yield
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [
            *["py-spy", "record", "--pid", str(pid), "--format", "raw", "--output", str(out)],
            *["--duration", str(int(seconds)), "--rate", "200", "--threads"],
            *([] if NATIVE else ["--nonblocking"]),
            *(["--native"] if NATIVE else []),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"},
    )
    try:
        yield
    finally:
        proc.wait(timeout=seconds + 30)
        summarize(out)


def summarize(collapsed: Path, top: int = 25) -> None:
    """Self time and inclusive time per frame, from py-spy's collapsed stacks."""
    self_t: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        frames = stack.split(";")
        count = int(n)
        total += count
        self_t[frames[-1]] += count
        for f in set(frames):
            incl[f] += count
    lines = [f"{total} samples"]
    lines += ["", "self:"] + [f"{n / total:6.1%} {f}" for f, n in self_t.most_common(top)]
    lines += ["", "inclusive:"] + [f"{n / total:6.1%} {f}" for f, n in incl.most_common(top)]
    collapsed.with_suffix(".txt").write_text("\n".join(lines) + "\n")


def measure(stack: RunningStack, what: str, request: Any, args: Any, tag: str) -> dict[str, Any]:
    front = stack.process.pid
    workers = children(front)
    pids = [front, *workers]
    before = {p: cpu_s(p) for p in pids}
    prof = Path(args.profile) / f"{tag}-{what}" if args.profile else None
    with (
        spied(front, prof and prof.with_name(prof.name + "-frontend.raw"), args.seconds + 3),
        spied(workers[0], prof and prof.with_name(prof.name + "-worker.raw"), args.seconds + 3),
    ):
        r = load("127.0.0.1", stack.port, request, args.in_flight, args.seconds, tls_context(stack))
    after = {p: cpu_s(p) for p in pids}
    # CPU over warm-up + run, per request answered in the run (the warm-up is ~4 s of the same
    # load, so both scale alike; reported as per request over the whole span)
    span = 4 + args.seconds
    done = max(1, r.requests + int(r.rps * 4))
    return {
        "img_s": r.rps,
        "errors": r.errors,
        "p50_ms": r.percentile(50),
        "frontend_cpu_share": (after[front] - before[front]) / span,
        "frontend_ms_per_req": (after[front] - before[front]) / done * 1000,
        "workers_ms_per_req": sum(after[p] - before[p] for p in workers) / done * 1000,
        "client_ms_per_req": r.client_cpu_s / max(1, r.requests) * 1000,
    }


def floors() -> list[str]:
    """The bare servers this machine can run (granian only if the bench extras put it in)."""
    return ["uvicorn", *(["granian"] if importlib.util.find_spec("granian") else [])]


def bare(server: str, request: bytes, args: Any) -> dict[str, Any]:
    """``bare_server.py`` under the same load as the frontend: its CPU ms per request; then
    one request at a time: the p50 of an HTTPS round trip of the same body that does nothing."""
    with running(server) as (port, ctx, pid):
        before = cpu_s(pid)
        r = load("127.0.0.1", port, request, args.in_flight, args.seconds, ctx)
        spent = cpu_s(pid) - before
        alone = load("127.0.0.1", port, request, 1, args.seconds / 2, ctx)
    done = max(1, r.requests + int(r.rps * 4))  # over warm-up + run, as measure() counts
    return {
        "ms_per_req": spent / done * 1000,
        "img_s": r.rps,
        "errors": r.errors + alone.errors,
        "p50_alone_ms": alone.percentile(50),
    }


def cheap_archive(out: Path) -> Path:
    """``resnet50`` version ``cheap``: resnet50's input and output shapes, a mean and one
    matrix product in between, so a served run measures what serving costs, not the model."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper

    from trustserve import archive

    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 224, 224])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 1000])
    w = np.random.default_rng(3).standard_normal((3, 1000)).astype(np.float32)
    nodes = [
        helper.make_node("ReduceMean", ["input"], ["m"], axes=[2, 3], keepdims=0),
        helper.make_node("MatMul", ["m", "w"], ["logits"]),
    ]
    init = [helper.make_tensor("w", TensorProto.FLOAT, w.shape, w.reshape(-1).tolist())]
    graph = helper.make_graph(nodes, "cheap", [x], [y], initializer=init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    manifest = archive.Manifest.from_json(
        {
            "name": "resnet50",
            "version": "cheap",
            "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 3, 224, 224]}],
            "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, 1000]}],
            "max_batch_size": 16,
            "max_batch_delay_ms": 5,
        }
    )
    out.mkdir(parents=True, exist_ok=True)
    path = out / "cheap.tsm"
    path.write_bytes(archive.pack(manifest, onnx.ModelProto.SerializeToString(model)))
    return path


def round_of(name: str, src: str | None, k: int, args: Any, int8: Path) -> dict[str, Any]:
    env = {"PYTHONPATH": src} if src else None
    t = args.threads
    if args.cheap:
        return cheap_round(name, env, k, args, int8)
    raw = [raw_engine("onnxruntime", int8, 16, t, args.seconds / 2)]
    out: dict[str, Any] = {"variant": name, "round": k}
    with served([int8], "--threads", "1", "--workers", str(t), name=f"fc-{name}", env=env) as s:
        out["standard"] = measure(s, "standard", v2_request(s, "resnet50"), args, f"{name}{k}")
        raw.append(raw_engine("onnxruntime", int8, 16, t, args.seconds / 2))
        count = int(raw[0] * (args.seconds + 4) * 2) + 2 * args.in_flight
        pool = sealed_requests(s, "resnet50", count)
        out["sealed"] = measure(s, "sealed", iter(pool), args, f"{name}{k}")
    raw.append(raw_engine("onnxruntime", int8, 16, t, args.seconds / 2))
    out["raw"] = raw
    out["standard"]["ratio"] = out["standard"]["img_s"] / ((raw[0] + raw[1]) / 2)
    out["sealed"]["ratio"] = out["sealed"]["img_s"] / ((raw[1] + raw[2]) / 2)
    return out


def cheap_round(
    name: str, env: dict[str, str] | None, k: int, args: Any, cheap: Path
) -> dict[str, Any]:
    out: dict[str, Any] = {"variant": name, "round": k}
    t = str(args.threads)
    with served([cheap], "--threads", "1", "--workers", t, name=f"fc-{name}", env=env) as s:
        out["standard"] = measure(s, "standard", v2_request(s, "resnet50"), args, f"{name}{k}")
        count = int(out["standard"]["img_s"] * (args.seconds + 4) * 1.5) + 2 * args.in_flight
        pool = sealed_requests(s, "resnet50", count)
        out["sealed"] = measure(s, "sealed", iter(pool), args, f"{name}{k}")
        request = v2_request(s, "resnet50")
        alone = load("127.0.0.1", s.port, request, 1, args.seconds / 2, tls_context(s))
        out["standard"]["p50_alone_ms"] = alone.percentile(50)
    for what in ("standard", "sealed"):
        out[what]["ratio"] = float("nan")
    if name == "new":  # the floor under the frontend, in the same round
        out["floor"] = {server: bare(server, request, args) for server in floors()}
    return out


def cheap_cost(rounds: int, seconds: float, threads: int, in_flight: int) -> dict[str, Any]:
    """`make bench`'s frontend-cost row: the cheap model served, binary v2 and sealed, CPU ms
    per request of each process (medians over ``rounds`` stacks, one started per round)."""
    args = argparse.Namespace(
        seconds=seconds, threads=threads, in_flight=in_flight, profile=None, cheap=True
    )
    cheap = cheap_archive(RESULTS / "run" / "cheap")
    got = [cheap_round("new", None, k, args, cheap) for k in range(1, rounds + 1)]
    out: dict[str, Any] = {"rounds": rounds, "seconds": seconds}
    for what in ("standard", "sealed"):
        out[what] = {
            key: statistics.median(g[what][key] for g in got)
            for key in ("frontend_ms_per_req", "workers_ms_per_req", "client_ms_per_req", "img_s")
        }
        out[what]["frontend_ms_per_round"] = [g[what]["frontend_ms_per_req"] for g in got]
    out["floor"] = {
        server: statistics.median(g["floor"][server]["ms_per_req"] for g in got)
        for server in got[0]["floor"]
    }
    out["standard_p50_alone_ms"] = statistics.median(g["standard"]["p50_alone_ms"] for g in got)
    out["floor_p50_alone_ms"] = {
        server: statistics.median(g["floor"][server]["p50_alone_ms"] for g in got)
        for server in got[0]["floor"]
    }
    return out


def checks(cost: dict[str, Any]) -> list[tuple[str, str]]:
    """Rows of the report's targets table."""
    out = []
    for what, label in (("standard", "binary v2"), ("sealed", "sealed")):
        c = cost[what]
        per = ", ".join(f"{x:.2f}" for x in c["frontend_ms_per_round"])
        out.append(
            (
                f"CPU ms per request, cheap model, {label}, {cost['rounds']} rounds of "
                f"{cost['seconds']:.0f} s (`bench/frontend_cost.py`): frontend / workers / client",
                f"{c['frontend_ms_per_req']:.2f} (rounds {per}) / {c['workers_ms_per_req']:.2f}"
                f" / {c['client_ms_per_req']:.2f}; {c['img_s']:.0f} req/s",
            )
        )
    floor = cost.get("floor")
    if floor:
        names = ", ".join(f"{k} {v:.2f}" for k, v in floor.items())
        own = cost["standard"]["frontend_ms_per_req"] - floor["uvicorn"]
        out.append(
            (
                "the floor under it: CPU ms per request of a bare HTTPS server that only reads "
                "the body, same requests, load and rounds (`bench/bare_server.py`; uvicorn is "
                "the stack's own server)",
                f"{names}; the frontend above uvicorn's floor: {own:.2f}",
            )
        )
        alone = ", ".join(f"{k} {v:.1f}" for k, v in cost["floor_p50_alone_ms"].items())
        alone += f"; the stack serving the cheap model: {cost['standard_p50_alone_ms']:.1f}"
        out.append(
            (
                "the floor under the p50 gap at 1 in flight: p50 ms of the same 602 KB binary v2 "
                "request, one at a time, to that bare server (a round trip that does no work), "
                "and to the stack",
                alone,
            )
        )
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--old-src", help="src/ of the old checkout, run side by side")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--in-flight", type=int, default=32)
    p.add_argument("--profile", help="folder for py-spy profiles")
    p.add_argument("--native", action="store_true", help="py-spy --native (C frames)")
    p.add_argument(
        "--cheap", action="store_true", help="a near-free model of resnet50's shapes: the cost"
    )
    args = p.parse_args()
    global NATIVE
    NATIVE = args.native
    int8 = cheap_archive(RESULTS / "run" / "cheap") if args.cheap else demo_models()["resnet50"]
    variants: list[tuple[str, str | None]] = [("new", None)]
    if args.old_src:
        variants.append(("old", str(Path(args.old_src).resolve())))
    rows = []
    for k in range(1, args.rounds + 1):
        order = variants if k % 2 else variants[::-1]
        for name, src in order:
            print(f"-- round {k}: {name}", flush=True)
            rows.append(round_of(name, src, k, args, int8))
            print(json.dumps(rows[-1]), flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / ("frontend_cost_cheap.json" if args.cheap else "frontend_cost.json")
    out.write_text(json.dumps(rows, indent=2))
    print("\n| variant | request | median ÷ adjacent raw | per round | frontend ms/req | "
          "frontend CPU | workers ms/req | client ms/req | req/s |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for name, _ in variants:
        for what in ("standard", "sealed"):
            got = [r[what] for r in rows if r["variant"] == name]

            def med(key: str, got: list[dict[str, Any]] = got) -> float:
                return statistics.median(g[key] for g in got)

            per = ", ".join(f"{g['ratio']:.2f}" for g in got)
            print(
                f"| {name} | {what} | {med('ratio'):.2f} | {per} | "
                f"{med('frontend_ms_per_req'):.2f} | {med('frontend_cpu_share'):.0%} | "
                f"{med('workers_ms_per_req'):.2f} | {med('client_ms_per_req'):.2f} | "
                f"{med('img_s'):.0f} |"
            )
    for server in floors():
        got = [r["floor"][server] for r in rows if "floor" in r]
        if got:
            ms = statistics.median(g["ms_per_req"] for g in got)
            alone = statistics.median(g["p50_alone_ms"] for g in got)
            print(f"floor, bare {server}: {ms:.2f} ms/req (rounds "
                  + ", ".join(f"{g['ms_per_req']:.2f}" for g in got)
                  + f"); p50 one at a time {alone:.1f} ms")  # fmt: skip


if __name__ == "__main__":
    main()
