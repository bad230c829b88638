"""The capacity model of docs/capacity.md: measured CPU per request -> parts a deployment needs.

``tables(inputs, raw_rate)`` is pure: tests/docs/test_capacity.py checks that the tables
of docs/capacity.md are what it makes of bench/results/capacity.json, whose
``raw_int8_img_s`` was read from docs/benchmarks.md when it was measured.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

BEGIN, END = "<!-- capacity:begin -->", "<!-- capacity:end -->"
HOSTS = (10, 100, 1000)
HOST_CORES = 2
UTILIZATION = 0.7  # size every shared part to run at most 70% busy
REFRESH_S = 60.0  # worker.key_refresh default: one release per worker a minute
WORKERS_PER_HOST = 2  # one single-threaded worker per core
# a frontend coalesces its clients' nonces into at most 1.6 fresh bundles a second
# (frontend/fresh_bundles.py PER_SECOND): the KMS's bundle work grows with frontends only
BUNDLES_PER_FRONTEND_S = 1.6
MIN_KMS = 2  # replicas for availability, whatever the load


def raw_int8_rate(benchmarks_md: str) -> float:
    """Raw ONNX Runtime INT8 img/s on the 2-core host, from docs/benchmarks.md."""
    found = re.search(r"^\| raw onnxruntime INT8 \| ([0-9.]+) \|", benchmarks_md, re.M)
    if found is None:
        raise ValueError("docs/benchmarks.md has no 'raw onnxruntime INT8' row")
    return float(found.group(1))


def _units(load_cores: float, per_unit: float = 1.0) -> int:
    return max(1, math.ceil(load_cores / (per_unit * UTILIZATION)))


def plan(inputs: dict[str, Any], raw_rate: float, kind: str, hosts: int) -> dict[str, Any]:
    """What ``hosts`` worker hosts serving ``kind`` (fp32 / jpeg) requests need."""
    part = inputs[kind]
    cpu = part["cpu_ms"]
    engine_ms = HOST_CORES * 1000 / raw_rate  # ResNet-50 INT8 CPU per image on the host
    overhead = max(0.0, cpu["workers"] - part["engine_ms"])  # the worker's own share
    host_rate = HOST_CORES * 1000 / (engine_ms + overhead)
    rate = hosts * host_rate
    # one frontend process is one asyncio loop: one core
    frontends = _units(rate * cpu["frontend"] / 1000)
    kms_core_s = (
        hosts * WORKERS_PER_HOST / REFRESH_S * inputs["kms"]["release_ms"]
        + frontends * BUNDLES_PER_FRONTEND_S * inputs["kms"]["bundle_ms"]
    ) / 1000
    return {
        "host_rate": host_rate,
        "rate": rate,
        "frontends": frontends,
        # redis-server executes commands on one thread
        "redis": _units(rate * cpu["redis"] / 1000),
        "kms": max(MIN_KMS, _units(kms_core_s)),
        "kms_core_s": kms_core_s,
    }


def ceilings(inputs: dict[str, Any], kind: str) -> dict[str, float]:
    """Requests/s one unit of each shared part carries at ``UTILIZATION``."""
    cpu = inputs[kind]["cpu_ms"]
    return {
        "frontend": UTILIZATION * 1000 / cpu["frontend"],
        "redis": UTILIZATION * 1000 / cpu["redis"],
    }


def tables(inputs: dict[str, Any], raw_rate: float) -> str:
    fp32, jpeg, kms = inputs["fp32"], inputs["jpeg"], inputs["kms"]
    lines = [
        f"Measured {inputs['when']} on {inputs['machine']} by `{inputs['command']}`; "
        f"raw ONNX Runtime INT8 ResNet-50 on one 2-core host: {raw_rate:.1f} img/s "
        "(docs/benchmarks.md).",
        "",
        "| CPU ms per request | FP32 tensor "
        f"({inputs['fp32_bytes']:,} B, v2 binary) | JPEG ({inputs['jpeg_bytes']:,} B, "
        "/predictions) |",
        "|---|---|---|",
    ]
    for role, label in (("frontend", "frontend"), ("redis", "redis-server")):
        lines.append(f"| {label} | {fp32['cpu_ms'][role]:.2f} | {jpeg['cpu_ms'][role]:.2f} |")
    for name, part in (("worker, all", None), ("worker, engine (cheap model)", "engine")):
        if part is None:
            lines.append(
                f"| {name} | {fp32['cpu_ms']['workers']:.2f} | {jpeg['cpu_ms']['workers']:.2f} |"
            )
        else:
            lines.append(f"| {name} | {fp32['engine_ms']:.2f} | {jpeg['engine_ms']:.2f} |")
    lines += [
        f"| requests answered / sent | {fp32['answered']}/{fp32['requests']} | "
        f"{jpeg['answered']}/{jpeg['requests']} |",
        "",
        f"KMS (development KMS over TLS, simulated attestation): {kms['release_ms']:.2f} ms "
        f"of CPU per key release, {kms['bundle_ms']:.2f} ms per fresh attestation bundle.",
        "",
        "| hosts | payload | img/s per host | total img/s | frontends (1 core each) | "
        "Redis primaries | KMS replicas (cores busy) |",
        "|---|---|---|---|---|---|---|",
    ]
    for hosts in HOSTS:
        for kind, label in (("fp32", "FP32 tensor"), ("jpeg", "JPEG")):
            p = plan(inputs, raw_rate, kind, hosts)
            lines.append(
                f"| {hosts:,} | {label} | {p['host_rate']:.0f} | {p['rate']:,.0f} | "
                f"{p['frontends']} | {p['redis']} | {p['kms']} ({p['kms_core_s']:.2f}) |"
            )
    lines += ["", "| one unit carries (req/s at 70% busy) | FP32 tensor | JPEG |", "|---|---|---|"]
    cf, cj = ceilings(inputs, "fp32"), ceilings(inputs, "jpeg")
    hf = plan(inputs, raw_rate, "fp32", 1)["host_rate"]
    hj = plan(inputs, raw_rate, "jpeg", 1)["host_rate"]
    lines.append(f"| frontend process | {cf['frontend']:,.0f} | {cj['frontend']:,.0f} |")
    lines.append(f"| Redis primary | {cf['redis']:,.0f} | {cj['redis']:,.0f} |")
    lines.append(
        f"| worker hosts one model's queue keeps busy (one primary) | {cf['redis'] / hf:.1f} | "
        f"{cj['redis'] / hj:.1f} |"
    )
    return "\n".join(lines) + "\n"


def doc_tables(doc_text: str) -> str:
    """What stands between the markers of docs/capacity.md."""
    return doc_text.split(BEGIN, 1)[1].split(END, 1)[0].removeprefix("\n")


def write_doc(inputs: dict[str, Any], doc: Path) -> str:
    """Regenerate the tables between the markers of ``doc``; returns them."""
    body = tables(inputs, inputs["raw_int8_img_s"])
    text = doc.read_text()
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    doc.write_text(f"{head}{BEGIN}\n{body}{END}{tail}")
    return body
