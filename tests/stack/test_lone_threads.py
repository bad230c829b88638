"""A real stack whose two single-threaded workers share the host's cores (worker/cores.py):
answers at 1 and at many in flight, and no claim left behind once they are answered."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.support import RunningStack, start_stack, write_tiny
from trustserve.worker.cores import HostCores


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    root = tmp_path_factory.mktemp("lone-threads")
    store = root / "store"
    store.mkdir()
    write_tiny(store)
    running = start_stack(root / "home", store, "--workers", "2", "--lone-threads", "2")
    running.wait_model_ready("tiny", timeout=180)
    yield running
    running.stop()


def wait_for_log(stack: RunningStack, text: str, count: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while stack.log.read_text(errors="replace").count(text) < count:
        assert time.monotonic() < deadline, f"{text!r} not logged {count} times"
        time.sleep(0.1)


def infer(stack: RunningStack, row: list[float]) -> list[float]:
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": row}]}
    with stack.client() as c:
        r = c.post("/v2/models/tiny/infer", json=body)
    assert r.status_code == 200, r.text
    out = {o["name"]: o["data"] for o in r.json()["outputs"]}
    return list(out["y"])


def test_it_answers_alone_and_under_load_and_leaves_no_claim(stack: RunningStack) -> None:
    wait_for_log(stack, "a lone batch now runs on 2 threads", 2)
    for i in range(5):  # 1 in flight: the wide session
        assert infer(stack, [i, 1, 2, 3]) == [2 * i + 1, 3, 5, 7]
    rows = [[float(i), i + 1.0, i + 2.0, i + 3.0] for i in range(64)]
    with ThreadPoolExecutor(16) as pool:  # 16 in flight: both workers busy, narrow
        got = list(pool.map(lambda r: infer(stack, r), rows))
    assert got == [[2 * v + 1 for v in r] for r in rows]
    lock = Path(stack.home) / "run" / "cores.lock"
    assert lock.stat().st_mode & 0o077 == 0
    assert not HostCores(lock).others_busy()
