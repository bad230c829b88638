"""Attack (on the user's own data): what `trustserve batch` does to its results file.

Two defects, both through the real command line (``python -m trustserve.cli batch``):

* The results file holds decrypted outputs, but it was created with the default
  umask (0644 under the usual 022): every local user could read what the sealed path
  kept from the server. It is now created 0600 (an existing file keeps its mode).
* A resumed run cut every byte after the last newline, taken as a line cut short by a
  crash. A last line that is complete (an editor that strips the final newline after
  the user deleted an error line) lost its answer, and an ``-o`` naming some other
  one-line file without a newline emptied it. Now a complete result line is kept (a
  newline added), a cut-off result line is still dropped, and a last line that is not
  a result line at all stops the run with an error, the file untouched.

The truncation cases need no server: the results file is read before the client
connects, so a closed port shows them. The permission case runs against the real
tiny stack.
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np

from tests.support import RunningStack


def batch(
    url: str, folder: Path, out: Path, home: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    argv = [
        sys.executable,
        "-m",
        "trustserve.cli",
        "batch",
        url,
        "tiny",
        str(folder),
        "-o",
        str(out),
        *args,
    ]
    return subprocess.run(
        ["sh", "-c", "umask 022; exec " + shlex.join(argv)],
        capture_output=True, text=True, timeout=120,
        env={"TRUSTSERVE_HOME": str(home), "PATH": "/usr/bin:/bin",
             "PYTHONPATH": os.environ.get("PYTHONPATH", "")},
    )  # fmt: skip


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"https://127.0.0.1:{s.getsockname()[1]}"


def inputs(tmp_path: Path, n: int) -> Path:
    folder = tmp_path / "inputs"
    folder.mkdir()
    for i in range(n):
        np.save(folder / f"x{i}.npy", np.full((1, 4), i, np.float32))
    return folder


def result(name: str) -> bytes:
    return json.dumps({"input": name, "outputs": {"y": [[1.0]]}}).encode()


def test_the_results_file_is_readable_by_its_owner_only(
    tiny_stack: RunningStack, tmp_path: Path
) -> None:
    folder, out = inputs(tmp_path, 1), tmp_path / "results.jsonl"
    run = batch(tiny_stack.url, folder, out, tiny_stack.home, "--ca", str(tiny_stack.ca),
                "--allow-simulated")  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert json.loads(out.read_text())["input"] == "x0.npy"
    assert out.stat().st_mode & 0o777 == 0o600


def test_a_complete_last_line_without_a_newline_is_kept(tmp_path: Path) -> None:
    folder, out = inputs(tmp_path, 3), tmp_path / "results.jsonl"
    out.write_bytes(result("x0.npy") + b"\n" + result("x1.npy"))  # no final newline
    run = batch(closed_port_url(), folder, out, tmp_path / "home", "--quiet")
    assert "2 inputs already scored" in run.stderr, run.stderr
    assert out.read_bytes() == result("x0.npy") + b"\n" + result("x1.npy") + b"\n"


def test_a_cut_off_result_line_is_dropped_and_the_others_kept(tmp_path: Path) -> None:
    folder, out = inputs(tmp_path, 3), tmp_path / "results.jsonl"
    out.write_bytes(result("x0.npy") + b"\n" + result("x1.npy")[:-7])
    run = batch(closed_port_url(), folder, out, tmp_path / "home", "--quiet")
    assert "1 inputs already scored" in run.stderr, run.stderr
    assert out.read_bytes() == result("x0.npy") + b"\n"


def test_another_file_without_a_final_newline_is_left_untouched(tmp_path: Path) -> None:
    folder, notes = inputs(tmp_path, 1), tmp_path / "notes.txt"
    notes.write_bytes(b"the only copy of something, no newline at the end")
    run = batch(closed_port_url(), folder, notes, tmp_path / "home", "--quiet")
    assert run.returncode == 2
    assert "not a result line" in run.stderr and str(notes) in run.stderr
    assert notes.read_bytes() == b"the only copy of something, no newline at the end"
