"""The measured inputs of docs/capacity.md: CPU time per request of each part of a stack.

One stack (``trustserve serve --dev``: the development KMS runs inside the frontend
process) with a local TLS+ACL redis-server as its broker and one worker per model. Two
cheap models keep the engine out of the way (its CPU is a worker's own, measured apart):
``resnet50:cheap`` takes the 602,112-byte FP32 tensor of a 1x3x224x224 image over binary
v2, ``jpeg:cheap`` takes a ~40 KB JPEG on TorchServe's ``/predictions`` path (the worker
decodes, resizes to 256, crops 224, normalizes). For each, after a warm-up, the script
reads the CPU *time* (utime+stime, reaped children included, from /proc/PID/stat) of the
frontend process, the workers and redis-server around ``--requests`` requests: CPU per
request, robust on a loaded machine where wall time is not. The cheap engine's own CPU
per image is measured in this process and subtracted from the worker's. The KMS: CPU of
the frontend process (which hosts the development KMS) around a loop of key releases
(challenge + attested release of the broker key, over TLS) and of fresh attestation
bundles (``GET /v1/attestation?nonce=``), minus the process's idle CPU over as long.

    PYTHONPATH=$PWD/src .venv/bin/python bench/capacity.py [--requests 600] [--kms 100]

writes bench/results/capacity.json and regenerates the tables of docs/capacity.md
(``bench/capacity_model.py``; ``--tables-only`` redoes them from the JSON).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import secrets
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from bench.capacity_model import raw_int8_rate, write_doc  # noqa: E402
from bench.common import IMAGE, tls_context, v2_binary_body  # noqa: E402
from bench.frontend_cost import cheap_archive  # noqa: E402
from bench.loadgen import build_request  # noqa: E402
from bench.redis_path import cpu_by_role, cpu_s, roles  # noqa: E402
from tests.broker.redis_server import RedisServer  # noqa: E402
from tests.support import RunningStack, start_stack  # noqa: E402
from trustserve import archive  # noqa: E402
from trustserve.files import write_atomic  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "capacity.json"
JPEG_TARGET = 40_000
BUNDLE_BURST = 30


def jpeg_archive(cheap: Path, out: Path) -> Path:
    """``jpeg:cheap``: the cheap model behind ImageNet preprocessing (resize 256, crop 224)."""
    model = archive.load(cheap)
    raw = model.manifest.to_json()
    raw |= {"name": "jpeg", "version": "cheap"}
    raw["preprocessing"] = {
        "resize": 256,
        "crop": 224,
        "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225],
    }
    manifest = archive.Manifest.from_json(raw)
    path = out / "jpeg.tsm"
    write_atomic(path, archive.pack(manifest, model.payload))
    return path


def photo_jpeg(target: int = JPEG_TARGET) -> bytes:
    """A seeded 500x375 photo-like JPEG (smooth shapes plus grain) of about ``target`` bytes."""
    from PIL import Image

    rng = np.random.default_rng(5)
    y, x = np.mgrid[0:375, 0:500].astype(np.float32)
    base = np.stack([128 + 90 * np.sin(x / (37 + 9 * c) + y / (53 - 7 * c)) for c in range(3)], -1)
    pixels = base + rng.normal(0, 12, base.shape)
    img = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    best = b""
    for quality in range(95, 20, -5):
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=quality)
        best = buf.getvalue()
        if len(best) <= target * 1.1:
            break
    return best


def engine_cpu_ms(path: Path, x: np.ndarray, n: int = 200) -> float:
    """The cheap engine's CPU per image at batch 1, 1 thread, in this process."""
    from trustserve.engines import load_engine

    model = archive.load(path)
    engine = load_engine("onnxruntime", model.payload, model.manifest, 1)
    name = model.manifest.inputs[0].name
    for _ in range(10):
        engine.infer({name: x})
    t0 = time.process_time()
    for _ in range(n):
        engine.infer({name: x})
    return (time.process_time() - t0) * 1000 / n


async def _send(stack: RunningStack, request: bytes, count: int, in_flight: int) -> int:
    """Send ``count`` requests (``in_flight`` at a time); the number answered 200."""
    ctx = tls_context(stack)
    ok = 0
    remaining = count

    async def one_connection() -> None:
        nonlocal ok, remaining
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", stack.port, ssl=ctx, server_hostname="localhost"
        )
        try:
            while remaining > 0:
                remaining -= 1
                writer.write(request)
                await writer.drain()
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                await reader.readexactly(length)
                ok += head[9:12] == b"200"
        finally:
            writer.close()

    await asyncio.gather(*(one_connection() for _ in range(in_flight)))
    return ok


def per_request(
    stack: RunningStack, redis: RedisServer, request: bytes, count: int, in_flight: int
) -> dict[str, Any]:
    procs = roles(stack, redis)
    asyncio.run(_send(stack, request, max(32, count // 10), in_flight))  # warm-up
    before, t0 = cpu_by_role(procs), time.monotonic()
    ok = asyncio.run(_send(stack, request, count, in_flight))
    after, wall = cpu_by_role(procs), time.monotonic() - t0
    cpu = {role: (after[role] - before[role]) * 1000 / count for role in after}
    return {"requests": count, "answered": ok, "wall_s": wall, "cpu_ms": cpu}


def kms_costs(stack: RunningStack, loops: int) -> dict[str, float]:
    """CPU ms of the KMS (the frontend process, idle otherwise) per release and per bundle."""
    from trustserve.attestation import make_provider
    from trustserve.encoding import unb64
    from trustserve.keyrelease.bundle import encode_nonce
    from trustserve.keyrelease.client import KmsClient
    from trustserve.keyrelease.trust import KmsTrust

    pid = stack.process.pid
    provider = make_provider("sim", stack.home)  # the simulated TEE the dev KMS admits
    trust = KmsTrust(unb64(stack.kms_identity, "identity"))
    out: dict[str, float] = {}
    with KmsClient(stack.kms_url, ca_file=stack.ca, trust=trust) as client:
        client.release(provider, ["broker"])  # connect, resolve the identity
        t0, c0 = time.monotonic(), cpu_s(pid)
        time.sleep(3)
        idle_per_s = (cpu_s(pid) - c0) / (time.monotonic() - t0)
        # fresh bundles are metered (kms.budgets: bursts of 40 from reserved networks)
        for what, n in (("release", loops), ("bundle", min(loops, BUNDLE_BURST))):
            t0, c0 = time.monotonic(), cpu_s(pid)
            for _ in range(n):
                if what == "release":
                    client.release(provider, ["broker"])
                else:
                    client.attestation_bundle(encode_nonce(secrets.token_bytes(32)))
            busy = cpu_s(pid) - c0 - idle_per_s * (time.monotonic() - t0)
            out[f"{what}_ms"] = max(0.0, busy) * 1000 / n
            out[f"{what}s_timed"] = n
    return out


def measure(args: argparse.Namespace) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="ts-capacity-"))
    store = root / "store"
    store.mkdir()
    cheap = cheap_archive(store)
    jpeg_archive(cheap, store)
    photo = photo_jpeg()
    engine_ms = engine_cpu_ms(cheap, IMAGE)  # before the stack encrypts the archive in place
    body, hlen = v2_binary_body("input", IMAGE)
    headers = {"Inference-Header-Content-Length": str(hlen)}
    headers["Content-Type"] = "application/octet-stream"
    redis = RedisServer(root / "redis")
    redis.start()
    try:
        stack = start_stack(
            root / "home", store, "--broker", redis.url(), "--workers", "1", ready_timeout=240
        )
        try:
            host = f"localhost:{stack.port}"
            fp32_req = build_request(
                host, "/v2/models/resnet50/versions/cheap/infer", body, headers
            )
            jpeg_req = build_request(
                host, "/predictions/jpeg/cheap", photo, {"Content-Type": "image/jpeg"}
            )
            fp32 = per_request(stack, redis, fp32_req, args.requests, args.in_flight)
            print("fp32:", fp32, file=sys.stderr)
            jpeg = per_request(stack, redis, jpeg_req, args.requests, args.in_flight)
            print("jpeg:", jpeg, file=sys.stderr)
            kms = kms_costs(stack, args.kms)
        finally:
            stack.stop()
    finally:
        redis.stop()
    fp32["engine_ms"] = jpeg["engine_ms"] = engine_ms
    return {
        "when": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.platform()}, {os.cpu_count()} CPUs",
        "command": "PYTHONPATH=$PWD/src .venv/bin/python bench/capacity.py "
        f"--requests {args.requests} --in-flight {args.in_flight} --kms {args.kms}",
        "raw_int8_img_s": raw_int8_rate((ROOT / "docs" / "benchmarks.md").read_text()),
        "fp32_bytes": len(body),
        "jpeg_bytes": len(photo),
        "fp32": fp32,
        "jpeg": jpeg,
        "kms": kms,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--requests", type=int, default=600)
    p.add_argument("--in-flight", type=int, default=16)
    p.add_argument("--kms", type=int, default=100, help="releases and bundles timed")
    p.add_argument("--json", type=Path, default=RESULTS)
    p.add_argument("--doc", type=Path, default=ROOT / "docs" / "capacity.md")
    p.add_argument("--tables-only", action="store_true", help="redo the doc from --json")
    args = p.parse_args()
    if args.tables_only:
        inputs = json.loads(args.json.read_text())
    else:
        inputs = measure(args)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(inputs, indent=2) + "\n")
    print(write_doc(inputs, args.doc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
