"""``trustserve predict --top-k`` holds for images and JSON bodies, not only ``.npy``."""

from __future__ import annotations

import json
from pathlib import Path

from tests.sealed.test_predict_cli import predict
from tests.support import RunningStack, png


def test_top_k_trims_the_labels_of_an_image_answer(
    tiny_stack: RunningStack, tmp_path: Path
) -> None:
    image = tmp_path / "red.png"
    image.write_bytes(png((240, 20, 20)))
    one = predict(tiny_stack, "colour", str(image), "--standard", "--top-k", "1")
    two = predict(tiny_stack, "colour", str(image), "--standard", "--top-k", "2")
    assert one.returncode == 0, one.stderr
    assert list(json.loads(one.stdout)) == ["red"]
    best_two = json.loads(two.stdout)
    assert len(best_two) == 2 and next(iter(best_two)) == "red"
    values = list(best_two.values())
    assert values[0] >= values[1]


def test_top_k_applies_to_a_json_body(tiny_stack: RunningStack, tmp_path: Path) -> None:
    body = tmp_path / "x.json"
    body.write_text("[1, 2, 3, 4]")
    out = predict(tiny_stack, "tiny", str(body), "--standard", "--top-k", "2")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"y": {"3": 9.0, "2": 7.0}, "s": [10.0]}


def test_top_k_below_one_is_refused(tiny_stack: RunningStack, tmp_path: Path) -> None:
    body = tmp_path / "x.json"
    body.write_text("[1, 2, 3, 4]")
    out = predict(tiny_stack, "tiny", str(body), "--standard", "--top-k", "0")
    assert out.returncode == 2 and "--top-k" in out.stderr
