"""The per-host core budget (worker/cores.py): real processes holding real record locks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np

from trustserve.engines.base import Tensors
from trustserve.worker.cores import LONE_MAX_ROWS, HostCores, LoneWide

CLAIM = """
import sys, time
from pathlib import Path
from trustserve.worker.cores import HostCores
cores = HostCores(Path(sys.argv[1]))
with cores.busy():
    print("claimed", flush=True)
    sys.stdin.readline()
print("released", flush=True)
sys.stdin.readline()
"""


def sibling(path: Path) -> subprocess.Popen[str]:
    """Another worker process that claims the budget until told (a line on its stdin)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", CLAIM, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == "claimed\n"
    return proc


def test_a_busy_sibling_is_seen_and_its_release_too(tmp_path: Path) -> None:
    cores = HostCores(tmp_path / "run" / "cores.lock")
    assert not cores.others_busy()
    other = sibling(tmp_path / "run" / "cores.lock")
    try:
        assert cores.others_busy()
        assert other.stdin is not None and other.stdout is not None
        other.stdin.write("\n")
        other.stdin.flush()
        assert other.stdout.readline() == "released\n"
        assert not cores.others_busy()
    finally:
        other.kill()
        other.wait()


def test_a_killed_workers_claim_does_not_outlive_it(tmp_path: Path) -> None:
    cores = HostCores(tmp_path / "cores.lock")
    other = sibling(tmp_path / "cores.lock")
    assert cores.others_busy()
    os.kill(other.pid, signal.SIGKILL)
    other.wait()
    assert not cores.others_busy()


def test_its_own_claim_is_not_a_sibling_and_survives_a_look(tmp_path: Path) -> None:
    """Record locks of one process merge: the look must leave this worker's byte alone."""
    cores = HostCores(tmp_path / "cores.lock")
    with cores.busy():
        assert not cores.others_busy()
        assert not cores.others_busy()
        other = sibling_probe(tmp_path / "cores.lock")
        assert other == "busy"  # our claim is still held after our own looks
    assert sibling_probe(tmp_path / "cores.lock") == "idle"


def sibling_probe(path: Path) -> str:
    code = (
        "import sys; from pathlib import Path; from trustserve.worker.cores import HostCores; "
        "print('busy' if HostCores(Path(sys.argv[1])).others_busy() else 'idle')"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, env=env, check=True
    )
    return out.stdout.strip()


def test_the_budget_file_is_private(tmp_path: Path) -> None:
    HostCores(tmp_path / "run" / "cores.lock")
    assert (tmp_path / "run").stat().st_mode & 0o077 == 0
    assert (tmp_path / "run" / "cores.lock").stat().st_mode & 0o077 == 0


class Recording:
    def __init__(self, name: str) -> None:
        self.name = name
        self.rows: list[int] = []

    def infer(self, inputs: Tensors) -> Tensors:
        self.rows.append(inputs["x"].shape[0])
        return {"y": inputs["x"]}


def batch(rows: int) -> Tensors:
    return {"x": np.zeros((rows, 2), dtype=np.float32)}


def test_a_lone_small_batch_runs_wide_and_the_rest_narrow(tmp_path: Path) -> None:
    narrow, wide = Recording("onnxruntime"), Recording("onnxruntime")
    engine = LoneWide(narrow, HostCores(tmp_path / "cores.lock"), runnable=lambda: 1)
    engine.infer(batch(1))  # the wide session is not built yet
    engine.widen(wide, 2)
    engine.infer(batch(1))
    engine.infer(batch(LONE_MAX_ROWS))
    engine.infer(batch(LONE_MAX_ROWS + 1))  # a large batch is load: narrow
    other = sibling(tmp_path / "cores.lock")
    try:
        engine.infer(batch(1))  # a sibling is busy: narrow
    finally:
        other.kill()
        other.wait()
    engine.infer(batch(2))
    assert wide.rows == [1, LONE_MAX_ROWS, 2]
    assert narrow.rows == [1, LONE_MAX_ROWS + 1, 1]
    assert (engine.wide_runs, engine.narrow_runs) == (3, 3)


def test_a_host_busy_with_other_programs_runs_narrow(tmp_path: Path) -> None:
    """Two threads on cores other processes hold run slower than one: narrow then."""
    narrow, wide = Recording("onnxruntime"), Recording("onnxruntime")
    runnable = [1]
    engine = LoneWide(narrow, HostCores(tmp_path / "cores.lock"), runnable=lambda: runnable[0])
    engine.widen(wide, engine.host_cores)
    engine.infer(batch(1))
    runnable[0] = 2  # one more thread waking for a moment: still wide
    engine.infer(batch(1))
    runnable[0] = 3  # more than that: the cores are taken
    engine.infer(batch(1))
    runnable[0] = 0  # the kernel does not say
    engine.infer(batch(1))
    assert (len(wide.rows), len(narrow.rows)) == (3, 1)


def test_the_runnable_count_includes_the_caller() -> None:
    from trustserve.worker.cores import runnable_threads

    assert runnable_threads() >= 1


def test_trimming_the_heap_is_harmless() -> None:
    from trustserve.worker.cores import trim_heap

    trim_heap()
    trim_heap()
