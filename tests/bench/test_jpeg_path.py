"""bench/jpeg_path.py without a stack: its JPEGs, its decoder table and its summary keys."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from jpeg_path import JpegBench, decoders, make_jpegs
from PIL import Image


def test_the_jpegs_are_the_same_every_run_and_imagenet_sized() -> None:
    first = make_jpegs(3)
    assert first == make_jpegs(3)
    for j in first:
        assert 20_000 <= len(j) <= 60_000
        img = Image.open(io.BytesIO(j))
        assert (img.format, img.size) == ("JPEG", (500, 375))


def test_the_decoders_agree_with_pillow() -> None:
    got = decoders(make_jpegs(2), repeats=1)
    assert "pillow" in got
    for d in got.values():
        assert d["max_abs_diff_vs_pillow"] <= 1e-6
        assert d["decode_ms"] > 0 and d["decode_preprocess_ms"] >= d["decode_ms"] * 0.5


def point(img_s: float, raw: float) -> dict[str, float]:
    return {"img_s": img_s, "adjacent_raw": raw, "ratio": img_s / raw}


def test_the_summary_has_the_keys_the_targets_table_reads() -> None:
    bench = JpegBench({}, redis=True, torchserve=True)
    bench.rounds = [
        {
            "round": 1,
            "plain": point(90, 100),
            "sealed": point(80, 100),
            "torchserve": point(40, 100),
        },
        {"round": 2, "plain": point(30, 50), "sealed": point(20, 50), "torchserve": point(40, 50)},
        {
            "round": 3,
            "plain": point(70, 100),
            "sealed": point(60, 100),
            "torchserve": point(60, 100),
        },
    ]
    got = bench.result()
    assert got["ratio"]["plain"] == pytest.approx(0.7)
    assert got["ratio"]["sealed"] == pytest.approx(0.6)
    assert got["ratio"]["redis"] is None  # no round measured it
    assert got["sealed_vs_torchserve"] == pytest.approx(1.0)  # median of 2.0, 0.5, 1.0
    assert set(got["jpeg_bytes"]) >= {"min", "median", "max"}
    assert set(got) >= {"rounds", "ratio", "sealed_vs_torchserve", "decoders", "jpeg_bytes"}
