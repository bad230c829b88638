"""bench/report.py on a synthetic results dict (a full `make bench` takes 15+ minutes)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from report import merge_repeats, write_report


def served(name: str, img_s: float, raw: float, k: int) -> dict[str, Any]:
    return {
        "name": name,
        "img_s": img_s,
        "adjacent_raw": raw,
        "p50_ms": 200.0 + k,
        "p99_ms": 300.0,
        "errors": 0,
        "client_cpu": 0.04,
        "round": k,
    }


def results() -> dict[str, Any]:
    redis = "served INT8 over Redis Streams (TLS+ACL)"
    return {
        "when": "now",
        "machine": "test",
        "cpus": 2,
        "threads": 2,
        "seconds": 1,
        "in_flight": 32,
        "raw": [
            {"name": "raw onnxruntime INT8", "img_s": 100.0},
            {"name": "raw openvino INT8", "img_s": 115.0},
        ],
        "batch_sweep": [{"batch": 1, "img_s": 125.0}, {"batch": 16, "img_s": 100.0}],
        "served": [
            served("served INT8 (HTTPS, binary v2)", 90, 100, 1),
            served(redis, 40, 100, 1),  # one noisy minute
            served("served INT8 (HTTPS, binary v2)", 45, 50, 2),
            served(redis, 85, 100, 2),
            served("served INT8 (HTTPS, binary v2)", 93, 100, 3),
            served(redis, 86, 100, 3),
        ],
        "inflight_sweep": [
            {"in_flight": 1, "img_s": 90, "p50_ms": 10.0, "p99_ms": 12.0, "client_cpu": 0.01}
        ],
        "startup": [
            {"name": "trustserve serve", "first_answer_s": s, "peak_rss_bytes": 2**30}
            for s in (1.5, 9.0, 1.7)
        ]
        + [{"name": "TorchServe 0.12", "first_answer_s": 2.8, "peak_rss_bytes": 2**31}],
        "openvino_modes": {
            "batch": 16,
            "threads": 2,
            "rounds": 1,
            "rows_s": {"onnxruntime": [100.0], "openvino LATENCY sync": [120.0]},
        },
    }


def per_model() -> dict[str, Any]:
    """Three rounds each; the machine halves its speed in round 2 (both engines alike)."""
    return {
        "resnet50 INT8": {
            "onnxruntime (as served)": [100.0, 50.0, 100.0],
            "openvino (as served)": [115.0, 57.5, 112.0],
        },
        "resnet50 FP32": {
            "onnxruntime (as served)": [30.0, 15.0, 30.0],
            "openvino (as served)": [24.0, 12.0, 25.5],
        },
    }


def test_repeats_merge_into_the_median_of_their_own_adjacent_ratios() -> None:
    rows = {r["name"]: r for r in merge_repeats(results()["served"])}
    served8 = rows["served INT8 (HTTPS, binary v2)"]
    assert served8["rounds"] == 3
    assert served8["adjacent_ratio"] == pytest.approx(0.9)  # 0.90, 0.90, 0.93
    assert served8["img_s"] == 90
    redis = rows["served INT8 over Redis Streams (TLS+ACL)"]
    assert redis["adjacent_ratio"] == pytest.approx(0.85)  # the 0.40 round does not decide


def test_the_report_has_the_issue_14_rows(tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    write_report(results(), tmp_path, doc)
    text = doc.read_text()
    assert "| served INT8 over Redis Streams (TLS+ACL) | 85.0 |" in text
    assert "0.85 (median of 3: 0.40, 0.85, 0.86)" in text
    assert text.count("| served INT8 (HTTPS, binary v2) |") == 1
    assert "10.0 ms vs 8.0 ms (+2.0 ms)" in text  # 1 in flight next to raw batch 1
    assert "| OpenVINO INT8 / ONNX Runtime INT8 (issue 14: ≥ 1.1) | 1.15 |" in text  # raw rows
    assert "| trustserve serve | 1.70 | 1.00 | 3 |" in text
    assert "| TorchServe 0.12 | 2.80 | 2.00 | 1 |" in text
    assert "| openvino LATENCY sync | 120.0 | 1.20 |" in text


def test_the_report_says_which_engine_is_faster_per_model(tmp_path: Path) -> None:
    """Judged by the median of per-round ratios: a slow minute (round 2) hits both alike."""
    doc = tmp_path / "benchmarks.md"
    write_report({**results(), "engine_per_model": per_model()}, tmp_path, doc)
    text = doc.read_text()
    assert "| resnet50 INT8 | 100.0 | 112.0 | 1.15 | OpenVINO |" in text
    assert "| resnet50 FP32 | 30.0 | 24.0 | 0.80 | ONNX Runtime |" in text
    target = "| OpenVINO INT8 / ONNX Runtime INT8 (issue 14: ≥ 1.1) | 1.15 (median of 3"
    assert target in text


def test_the_report_has_the_ohttp_row_next_to_the_sealed_one(tmp_path: Path) -> None:
    res = results()
    res["served"] += [
        served("served sealed INT8 (HTTPS, HPKE)", 80, 100, 1),
        served("served OHTTP INT8 (HTTPS, RFC 9458)", 78, 100, 1),
    ]
    res["ohttp_cost"] = {"bytes": 602278.0, "sealed_p50_ms": 0.4, "ohttp_p50_ms": 0.5}
    doc = tmp_path / "benchmarks.md"
    write_report(res, tmp_path, doc)
    text = doc.read_text()
    assert "| served OHTTP INT8 (HTTPS, RFC 9458) | 78.0 |" in text
    assert "| served OHTTP / served sealed (issue 24: ≥ 0.95) | 0.97 |" in text
    assert "0.50 ms vs 0.40 ms" in text


def test_the_report_has_the_failover_time_and_the_cost_of_wait(tmp_path: Path) -> None:
    res = results()
    res["redis_ha"] = {
        "down_after_ms": 5000,
        "failover_s": [5.5, 4.5, 4.6],
        "wait": {
            "puts": 1000.0,
            "set_p50_ms": 0.82,
            "set_p99_ms": 1.6,
            "wait_p50_ms": 1.39,
            "wait_p99_ms": 7.7,
        },
    }
    doc = tmp_path / "benchmarks.md"
    write_report(res, tmp_path, doc)
    text = doc.read_text()
    assert "`--down-after-ms 5000` (issue 22) | 4.6 s (median of 3: 5.5, 4.5, 4.6) |" in text
    assert "1.39 ms vs 0.82 ms (+0.57 ms; p99 7.7 vs 1.6 ms; 1000 puts each)" in text


def test_the_report_has_the_sealed_p50_with_and_without_the_log_checked(tmp_path: Path) -> None:
    res = results()
    res["transparency"] = {
        "plain_p50_ms": 7.69,
        "logged_p50_ms": 7.46,
        "ratio": 7.46 / 7.69,
        "rounds": 3,
        "requests": 200,
    }
    doc = tmp_path / "benchmarks.md"
    write_report(res, tmp_path, doc)
    text = doc.read_text()
    assert "KMS log checked / not (issue 23: unchanged within noise) | 7.46 ms / 7.69 ms" in text
    assert "(ratio 0.970; 3 rounds of 200 each)" in text


def test_the_issue_25_table_judges_each_target_and_names_what_was_not_measured(
    tmp_path: Path,
) -> None:
    res = results()
    res["jpeg"] = {"ratio": {"plain": 0.95, "sealed": 0.91, "redis": 0.8}}
    res["frontend_cost"] = {
        "rounds": 3,
        "seconds": 8,
        "standard": {
            "frontend_ms_per_req": 0.75,
            "workers_ms_per_req": 0.7,
            "client_ms_per_req": 0.4,
            "img_s": 400.0,
            "frontend_ms_per_round": [0.7, 0.75, 0.9],
        },
        "sealed": {
            "frontend_ms_per_req": 0.85,
            "workers_ms_per_req": 1.0,
            "client_ms_per_req": 0.4,
            "img_s": 350.0,
            "frontend_ms_per_round": [0.85, 0.8, 0.9],
        },
    }
    doc = tmp_path / "benchmarks.md"
    write_report(res, tmp_path, doc)
    text = doc.read_text()
    section = text[text.index("## Issue 25 targets") :]
    # per-round ratios 0.90, 0.90, 0.93: the median, not the ratio of medians
    assert "binary v2 ÷ adjacent raw | 0.85 | ≥ 0.92 | 0.90 | **not met** |" in section
    assert "| served over Redis ÷ adjacent raw | 0.68 | ≥ 0.85 | 0.85 | met |" in section
    assert "| served sealed ÷ adjacent raw | 0.84 | ≥ 0.90 | not measured | |" in section
    assert "JPEG plain ÷ raw decode+preprocess+infer | — | ≥ 0.92 | 0.95 | met |" in section
    assert "JPEG sealed ÷ raw decode+preprocess+infer | — | ≥ 0.92 | 0.91 | **not met**" in section
    assert "same JPEGs | — | ≥ 1.3 | not measured |" in section
    assert "raw batch-1 at the engine threads (ms) | +12.3 | ≤ +3 | +2.0 | met |" in section
    assert "`bench/frontend_cost.py`) | ~1.65 | ≤ 0.8 | 0.75 | met |" in section
    assert "0.75 (rounds 0.70, 0.75, 0.90) / 0.70 / 0.40; 400 req/s" in text


def jpeg_point(img_s: float, raw: float) -> dict[str, Any]:
    return {
        "img_s": img_s,
        "p50_ms": 400.0,
        "p99_ms": 900.0,
        "errors": 0,
        "client_cpu": 0.01,
        "adjacent_raw": raw,
        "ratio": img_s / raw,
    }


def jpeg_results(torchserve: bool = True) -> dict[str, Any]:
    rounds = []
    for k, (plain, sealed, redis, ts) in enumerate(
        ((90, 85, 80, 70), (45, 44, 40, 50), (92, 86, 81, 72)), 1
    ):
        r: dict[str, Any] = {
            "round": k,
            "plain": jpeg_point(plain, 100),
            "sealed": jpeg_point(sealed, 100),
            "redis": jpeg_point(redis, 100),
        }
        if torchserve:
            r["torchserve"] = jpeg_point(ts, 100)
        rounds.append(r)
    decoder = {"decode_ms": 0.9, "decode_preprocess_ms": 3.6, "max_abs_diff_vs_pillow": 0.0}
    return {
        "model": "resnet50 INT8",
        "threads": 2,
        "seconds": 1,
        "in_flight": 32,
        "rounds": rounds,
        "ratio": {
            "plain": 0.90,
            "sealed": 0.85,
            "redis": 0.80,
            "torchserve": 0.70 if torchserve else None,
        },
        "sealed_vs_torchserve": 1.19 if torchserve else None,
        "decoders": {
            "pillow": {"version": "13.0.0", **decoder},
            "simplejpeg": {"version": "1.9.0", **decoder, "decode_ms": 0.8},
        },
        "jpeg_bytes": {"count": 32, "min": 31332, "median": 38056.5, "max": 47740},
    }


def test_the_report_has_the_jpeg_rows_and_targets(tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    write_report({**results(), "jpeg": jpeg_results()}, tmp_path, doc)
    text = doc.read_text()
    assert "## Images as images: JPEG in, resnet50 INT8 (issue 25)" in text
    assert "31.3 / 38.1 / 47.7 KB" in text
    assert (
        "| served sealed JPEG (HPKE to the worker) | 85.0 | 400 | 900 | 0 | 100.0 | 0.85 |" in text
    )
    assert "| TorchServe 0.12 + PIL/ORT handler (plain HTTP) | 70.0 |" in text
    assert "| JPEG served / adjacent raw JPEG (issue 25) | 0.90 (3 rounds) |" in text
    assert "| JPEG sealed / TorchServe's JPEG path (issue 25) | 1.19 |" in text
    assert "| simplejpeg | 1.9.0 | 0.80 | 3.60 | 0 |" in text


def test_without_torchserve_the_jpeg_section_has_no_torchserve_row(tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    write_report({**results(), "jpeg": jpeg_results(torchserve=False)}, tmp_path, doc)
    text = doc.read_text()
    assert "| served JPEG over Redis Streams (TLS+ACL) | 80.0 |" in text
    assert "PIL/ORT handler" not in text and "TorchServe's JPEG path" not in text
