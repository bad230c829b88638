"""The Redis Streams path against the embedded broker and raw ONNX Runtime, interleaved.

Both stacks (``trustserve serve`` with the embedded broker, and with a local TLS+ACL
redis-server) run side by side, each INT8 resnet50 with 2 workers x 1 thread; the
load (32 in flight, binary v2 over HTTPS) goes to one at a time, in rounds of
raw / embedded / Redis, so a noisy minute on this shared machine hits all three.
For each served point it also records the CPU seconds per request of the frontend,
the workers and redis-server (from /proc), and Redis's commands per request
(``INFO commandstats``): where the time of a request goes.

    cd bench && ../.venv/bin/python redis_path.py [--rounds 3] [--seconds 12] [--old-src DIR]

Prints a Markdown table; ``--json PATH`` also writes the raw figures. ``--old-src
DIR`` adds a third stack, the Redis path run from another checkout's ``src`` (e.g.
``git worktree add --detach /tmp/old main``) against its own redis-server (with
``--old-settings``: as before issue 14, LZF in AOF rewrites and a rewrite every 64 MB),
measured in the same rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import resource
import secrets
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import redis as redis_py
from common import demo_models, raw_engine, served, tls_context, v2_binary_body
from loadgen import build_request, run_load
from stackstats import descendants

from tests.broker.redis_server import RedisServer
from tests.support import RunningStack, start_stack

IMAGE = np.random.default_rng(2).standard_normal((1, 3, 224, 224)).astype(np.float32)
TICK = 100.0  # os.sysconf("SC_CLK_TCK") on Linux


def cpu_s(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(f) for f in fields[11:15]) / TICK  # with reaped children (AOF rewrites)


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def roles(stack: RunningStack, redis: RedisServer | None) -> dict[str, list[int]]:
    """The stack's processes by role: frontend (the serve process), workers, the rest."""
    out: dict[str, list[int]] = {"frontend": [stack.process.pid], "workers": [], "other": []}
    for pid in descendants(stack.process.pid):
        out["workers" if "worker" in cmdline(pid) else "other"].append(pid)
    if redis is not None and redis.process is not None:
        out["redis"] = [redis.process.pid]
    return out


def cpu_by_role(procs: dict[str, list[int]]) -> dict[str, float]:
    return {role: sum(cpu_s(p) for p in pids) for role, pids in procs.items()}


def with_stats_user(redis: RedisServer) -> str:
    """Add to the server's config a user that may run INFO only (the broker's may not);
    returns its password (generated here)."""
    password = secrets.token_urlsafe(24)
    digest = hashlib.sha256(password.encode()).hexdigest()
    with redis.conf.open("a") as conf:
        conf.write(f"user stats on #{digest} resetkeys -@all +info\n")
    return password


def commandstats(redis: RedisServer, password: str) -> dict[str, int]:
    c = redis_py.Redis(
        host="localhost", port=redis.port, username="stats", password=password, ssl=True,
        ssl_ca_certs=str(redis.tls.ca), ssl_certfile=str(redis.client_cert),
        ssl_keyfile=str(redis.client_key),
    )  # fmt: skip
    with c:
        return {k: int(v["calls"]) for k, v in c.info("commandstats").items()}


def measure(
    stack: RunningStack, redis: RedisServer | None, in_flight: int, seconds: float, pw: str = ""
) -> dict[str, Any]:
    body, hlen = v2_binary_body("input", IMAGE)
    headers = {
        "Inference-Header-Content-Length": str(hlen),
        "Content-Type": "application/octet-stream",
    }
    req = build_request(f"localhost:{stack.port}", "/v2/models/resnet50/infer", body, headers)
    procs = roles(stack, redis)
    # warm up outside the measured window, then count CPU over the window only
    asyncio.run(
        run_load("127.0.0.1", stack.port, req, in_flight=in_flight, duration_s=2, warmup_s=0,
                 ssl_context=tls_context(stack))
    )  # fmt: skip
    cpu0, cmd0 = cpu_by_role(procs), commandstats(redis, pw) if redis else {}
    r = asyncio.run(
        run_load("127.0.0.1", stack.port, req, in_flight=in_flight, duration_s=seconds,
                 warmup_s=0, ssl_context=tls_context(stack))
    )  # fmt: skip
    cpu1, cmd1 = cpu_by_role(procs), commandstats(redis, pw) if redis else {}
    n = max(1, r.requests)
    cpu_ms = {role: (cpu1[role] - cpu0[role]) * 1000 / n for role in cpu1}
    calls = {k: (cmd1[k] - cmd0.get(k, 0)) / n for k in cmd1 if cmd1[k] - cmd0.get(k, 0)}
    return {
        "img_s": r.rps,
        "p50_ms": r.percentile(50),
        "errors": r.errors,
        "cpu_ms_per_req": cpu_ms,
        "client_cpu_ms_per_req": r.client_cpu_s * 1000 / n,
        "redis_calls_per_req": calls,
    }


@contextmanager
def served_from(src: Path, archive: Path, *extra: str) -> Iterator[RunningStack]:
    """Like ``common.served``, with the stack's processes importing ``src`` first."""
    root = Path(tempfile.mkdtemp(prefix="ts-redis-old-"))
    store = root / "store"
    store.mkdir()
    shutil.copy(archive, store / archive.name)
    env = {"PYTHONPATH": os.pathsep.join([str(src), os.environ.get("PYTHONPATH", "")])}
    stack = start_stack(root / "home", store, *extra, env=env)
    try:
        yield stack
    finally:
        stack.stop()
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=12)
    p.add_argument("--in-flight", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path)
    p.add_argument("--old-src", type=Path, help="also run the Redis path from this src/")
    p.add_argument(
        "--old-settings", action="store_true", help="its redis-server as before issue 14"
    )
    args = p.parse_args()
    int8 = demo_models()["resnet50"]
    t = args.threads
    res: dict[str, list[dict[str, Any]]] = {"raw": [], "embedded": [], "redis": [], "old": []}
    with tempfile.TemporaryDirectory() as tmp:
        redis = RedisServer(Path(tmp) / "redis")
        pw = with_stats_user(redis)
        redis.start()
        # the old code gets its own server (``--old-src`` only)
        old_redis = RedisServer(Path(tmp) / "old-redis")
        old_pw = with_stats_user(old_redis)
        settings = old_redis.conf.read_text().splitlines()
        dropped = ("rdbcompression", "auto-aof-rewrite-min-size")
        if args.old_settings:
            old_redis.conf.write_text("\n".join(x for x in settings if not x.startswith(dropped)))
        if args.old_src:
            old_redis.start()
        try:
            stack_args = ["--threads", "1", "--workers", str(t)]
            old_url = old_redis.url()
            with (
                served([int8], *stack_args, name="path-embedded") as emb,
                served([int8], *stack_args, "--broker", redis.url(), name="path-redis") as red,
                served_from(args.old_src, int8, *stack_args, "--broker", old_url)
                if args.old_src
                else contextlib.nullcontext() as old,
            ):

                def raw() -> dict[str, Any]:
                    before = resource.getrusage(resource.RUSAGE_SELF)
                    started = time.perf_counter()
                    img_s = raw_engine("onnxruntime", int8, 16, t, 6)
                    after = resource.getrusage(resource.RUSAGE_SELF)
                    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
                    # CPU ms per image (the model load is a small part of the 6 s)
                    cpu_ms = cpu * 1000 / (img_s * (time.perf_counter() - started))
                    return {"img_s": img_s, "cpu_ms_per_img": cpu_ms}

                points: list[tuple[str, Callable[[], dict[str, Any]]]] = [
                    ("raw", raw),
                    ("embedded", lambda: measure(emb, None, args.in_flight, args.seconds)),
                    ("raw", raw),
                    ("redis", lambda: measure(red, redis, args.in_flight, args.seconds, pw)),
                ]
                if old is not None:
                    points += [
                        ("raw", raw),
                        (
                            "old",
                            lambda: measure(old, old_redis, args.in_flight, args.seconds, old_pw),
                        ),
                    ]
                last: dict[str, Any] | None = None  # the served point measured last
                for k in range(args.rounds):
                    for name, go in points:
                        got = go()
                        got["round"], got["at"] = k + 1, time.time()
                        if name == "raw":
                            if last is not None:
                                last["raw_after"] = got["img_s"]
                        else:
                            got["raw_before"] = res["raw"][-1]["img_s"]
                            last = got
                        res[name].append(got)
                        print(name, json.dumps(got, default=str)[:300], flush=True)
                if last is not None:
                    last["raw_after"] = raw()["img_s"]
        finally:
            redis.stop()
            old_redis.stop()
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))
    report(res)


def ratio(point: dict[str, Any]) -> float:
    """Throughput over the mean of raw measured right before and right after it."""
    return float(point["img_s"] / ((point["raw_before"] + point["raw_after"]) / 2))


def report(res: dict[str, list[dict[str, Any]]]) -> None:
    names = [n for n in ("embedded", "redis", "old") if res[n]]
    label = {"embedded": "embedded", "redis": "Redis", "old": "Redis, old code"}
    print("\n| round | " + " | ".join(f"{label[n]} img/s | ÷ adj. raw" for n in names) + " |")
    print("|---|" + "---|---|" * len(names))
    for k in range(len(res["embedded"])):
        cells = [f"{res[n][k]['img_s']:.1f} | {ratio(res[n][k]):.2f}" for n in names]
        print(f"| {k + 1} | " + " | ".join(cells) + " |")
    med = {n: statistics.median(ratio(p) for p in res[n]) for n in names}
    print("\nmedian ÷ adjacent raw: " + ", ".join(f"{label[n]} {med[n]:.2f}" for n in names))
    raws = [r["img_s"] for r in res["raw"]]
    print(f"raw ONNX Runtime INT8 batch 16: {min(raws):.1f}-{max(raws):.1f} img/s")
    raw_cpu = statistics.median(r["cpu_ms_per_img"] for r in res["raw"] if "cpu_ms_per_img" in r)
    total = {n: statistics.median(sum(p["cpu_ms_per_req"].values()) for p in res[n]) for n in names}
    print(
        f"CPU ms per image: raw {raw_cpu:.2f}; "
        + ", ".join(f"{label[n]} {total[n]:.2f}" for n in names)
        + " (server processes, load client not counted)"
    )
    print(
        "on a machine of its own (CPU-bound), ÷ embedded: "
        + ", ".join(f"{label[n]} {total['embedded'] / total[n]:.2f}" for n in names[1:])
    )
    print("\nCPU ms per request (median over rounds):\n")
    print("| path | frontend | workers | redis-server | other | load client |")
    print("|---|---|---|---|---|---|")
    for name in names:
        rows = res[name]

        def med_cpu(role: str, rows: list[dict[str, Any]] = rows) -> float:
            return statistics.median(r["cpu_ms_per_req"].get(role, 0.0) for r in rows)

        client = statistics.median(r["client_cpu_ms_per_req"] for r in rows)
        print(
            f"| {label[name]} | {med_cpu('frontend'):.2f} | {med_cpu('workers'):.2f} "
            f"| {med_cpu('redis'):.2f} | {med_cpu('other'):.2f} | {client:.2f} |"
        )
    for name in names[1:]:
        calls = res[name][-1]["redis_calls_per_req"]
        print(f"\n{label[name]}: Redis commands per request (last round): " + ", ".join(
            f"{k.removeprefix('cmdstat_')} {v:.2f}" for k, v in sorted(calls.items())
        ))  # fmt: skip


if __name__ == "__main__":
    main()
