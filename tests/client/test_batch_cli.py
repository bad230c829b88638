"""`trustserve batch` from the command line against a real stack: sealed by default, one
line per input (a bad one is an error line), resumable without rescoring."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from tests.support import RunningStack, png


def batch(
    stack: RunningStack, model: str, folder: Path, out: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "trustserve.cli", "batch", stack.url, model, str(folder),
         "-o", str(out), "--ca", str(stack.ca), *args],
        capture_output=True, text=True, timeout=120,
        env={"TRUSTSERVE_HOME": str(stack.home), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip


def lines(out: Path) -> dict[str, dict[str, object]]:
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    by_name = {str(r["input"]): r for r in rows}
    assert len(by_name) == len(rows), "an input was scored twice"
    return by_name


def test_batch_scores_a_folder_sealed_then_resumes_without_rescoring(
    tiny_stack: RunningStack, tmp_path: Path
) -> None:
    folder, out = tmp_path / "inputs", tmp_path / "results.jsonl"
    folder.mkdir()
    for i in range(5):
        np.save(folder / f"x{i}.npy", np.full((1, 4), i, np.float32))
    (folder / "broken.npy").write_bytes(b"not a numpy file")
    np.save(folder / "wrong-shape.npy", np.ones((1, 5), np.float32))

    first = batch(tiny_stack, "tiny", folder, out, "--allow-simulated", "--max-in-flight", "2")
    assert first.returncode == 1, first.stderr  # some inputs failed; all have their line
    assert "sealing for tiny" in first.stderr and "5 scored, 2 failed" in first.stderr
    got = lines(out)
    assert set(got) == {*(f"x{i}.npy" for i in range(5)), "broken.npy", "wrong-shape.npy"}
    for i in range(5):
        assert got[f"x{i}.npy"]["outputs"] == {"y": [[2.0 * i + 1] * 4], "s": [[4.0 * i]]}
    assert got["broken.npy"]["error"]["code"] == "invalid_input"  # type: ignore[index]
    assert got["wrong-shape.npy"]["error"]["code"] == "invalid_input"  # type: ignore[index]
    assert "shape" in got["wrong-shape.npy"]["error"]["message"]  # type: ignore[index]

    before = out.read_bytes()
    with out.open("ab") as f:  # a run killed mid-line would leave this
        f.write(b'{"input": "x9.np')
    np.save(folder / "x5.npy", np.full((1, 4), 5, np.float32))
    second = batch(tiny_stack, "tiny", folder, out, "--allow-simulated")
    assert second.returncode == 0, second.stderr
    assert "7 inputs already scored" in second.stderr and "1 scored, 0 failed" in second.stderr
    assert out.read_bytes().startswith(before)  # nothing rescored, the cut line dropped
    assert lines(out)["x5.npy"]["outputs"] == {"y": [[11.0] * 4], "s": [[20.0]]}


def test_batch_of_images_in_standard_mode_matches_predict(
    tiny_stack: RunningStack, tmp_path: Path
) -> None:
    folder, out = tmp_path / "images", tmp_path / "out.jsonl"
    folder.mkdir()
    colours = {"red.png": (240, 20, 20), "green.png": (20, 240, 20), "blue.png": (20, 20, 240)}
    for name, rgb in colours.items():
        (folder / name).write_bytes(png(rgb))
    run = batch(tiny_stack, "colour", folder, out, "--standard", "--top-k", "1")
    assert run.returncode == 0, run.stderr
    got = lines(out)
    assert {n: list(r["outputs"]) for n, r in got.items()} == {  # type: ignore[call-overload]
        "red.png": ["red"],
        "green.png": ["green"],
        "blue.png": ["blue"],
    }


def test_batch_refuses_a_server_it_cannot_verify_and_sends_nothing(
    tiny_stack: RunningStack, tmp_path: Path
) -> None:
    folder, out = tmp_path / "inputs", tmp_path / "out.jsonl"
    folder.mkdir()
    np.save(folder / "x.npy", np.ones((1, 4), np.float32))
    run = batch(tiny_stack, "tiny", folder, out)  # simulated attestation, not allowed
    assert run.returncode == 2 and "--allow-simulated" in run.stderr
    assert not out.exists() or out.read_text() == ""


def test_an_image_for_a_model_that_takes_none_says_so(
    tiny_stack: RunningStack, tmp_path: Path
) -> None:
    folder, out = tmp_path / "inputs", tmp_path / "results.jsonl"
    folder.mkdir()
    (folder / "red.png").write_bytes(png((240, 20, 20)))
    run = batch(tiny_stack, "tiny", folder, out, "--allow-simulated")
    assert run.returncode == 1, run.stderr
    error = lines(out)["red.png"]["error"]
    assert error["code"] == "invalid_input"  # type: ignore[index]
    assert "model 'tiny' takes no images" in error["message"]  # type: ignore[index]
    assert "UTF-8" not in error["message"]  # type: ignore[index]
