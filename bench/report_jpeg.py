"""The JPEG section of docs/benchmarks.md (issue 25): ``res["jpeg"]`` from ``jpeg_path.py``."""

from __future__ import annotations

import statistics
from typing import Any

ROWS = (
    ("plain", "served JPEG (`/predictions`, HTTPS)"),
    ("sealed", "served sealed JPEG (HPKE to the worker)"),
    ("redis", "served JPEG over Redis Streams (TLS+ACL)"),
    ("torchserve", "TorchServe 0.12 + PIL/ORT handler (plain HTTP)"),
)


def _num(value: float | None, fmt: str = ".2f") -> str:
    return "—" if value is None else format(value, fmt)


def checks(jpeg: dict[str, Any]) -> list[tuple[str, str]]:
    """Rows for the report's targets table."""
    ratio = jpeg.get("ratio", {})
    rounds = len(jpeg.get("rounds", []))
    out = [
        (
            f"JPEG {label} / adjacent raw JPEG (issue 25)",
            f"{_num(ratio.get(key))} ({rounds} rounds)",
        )
        for key, label in (("plain", "served"), ("sealed", "sealed"), ("redis", "over Redis"))
        if ratio.get(key) is not None
    ]
    if jpeg.get("sealed_vs_torchserve") is not None:
        out.append(
            ("JPEG sealed / TorchServe's JPEG path (issue 25)", _num(jpeg["sealed_vs_torchserve"]))
        )
    return out


def section(jpeg: dict[str, Any]) -> list[str]:
    """Markdown lines: the served rows (median over rounds), then the decoders."""
    size = jpeg["jpeg_bytes"]
    lines = [
        "",
        "## Images as images: JPEG in, resnet50 INT8 (issue 25)",
        "",
        f"{size['count']} fixed JPEGs made by `bench/jpeg_path.py` (seeded, 500x375, quality 90;"
        f" {size['min'] / 1000:.1f} / {size['median'] / 1000:.1f} / {size['max'] / 1000:.1f} KB"
        " min / median / max), sent as they are; the worker decodes and preprocesses them.",
        "Raw JPEG: decode + preprocess + ONNX Runtime INT8 at batch 16 in one process,"
        f" {jpeg['threads']} engine threads, measured right before and after each served point;",
        "the ratio is the median of the per-round ratios to that adjacent raw.",
        "",
        "| configuration | img/s | p50 ms | p99 ms | errors | adjacent raw JPEG img/s | ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, label in ROWS:
        got = [r[key] for r in jpeg["rounds"] if key in r]
        if not got:
            continue

        def med(field: str, got: list[dict[str, Any]] = got) -> float:
            return statistics.median(float(g[field]) for g in got)

        lines.append(
            f"| {label} | {med('img_s'):.1f} | {med('p50_ms'):.0f} | {med('p99_ms'):.0f} | "
            f"{sum(int(g['errors']) for g in got)} | {med('adjacent_raw'):.1f} | "
            f"{_num(jpeg['ratio'].get(key))} |"
        )
    if jpeg.get("sealed_vs_torchserve") is not None:
        lines += [
            "",
            f"Sealed JPEG / TorchServe JPEG, median of per-round ratios:"
            f" {jpeg['sealed_vs_torchserve']:.2f}.",
        ]
    if jpeg.get("decoders"):
        lines += [
            "",
            "Decoders, per image (median over the JPEGs, best of 5), the same resize / crop /"
            " normalize after each:",
            "",
            "| decoder | version | decode ms | decode + preprocess ms | max abs diff vs Pillow |",
            "|---|---|---|---|---|",
        ]
        for name, d in jpeg["decoders"].items():
            lines.append(
                f"| {name} | {d['version']} | {d['decode_ms']:.2f} | "
                f"{d['decode_preprocess_ms']:.2f} | {d['max_abs_diff_vs_pillow']:.2g} |"
            )
    return lines
