"""A bounded load for fault tests: N requests from C client threads, every answer checked.

Each request carries its own input row, so an answer is counted only if it is the
right answer to that request: ``answered`` is the number of 200s with the right
tensors, ``refused`` the 503s (never accepted), ``lost`` everything else.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.support import RunningStack


@dataclass
class Tally:
    sent: int = 0
    answered: int = 0
    refused: int = 0
    lost: int = 0
    statuses: Counter[str] = field(default_factory=Counter)

    def line(self, name: str) -> str:
        return (
            f"{name}: sent {self.sent} / answered {self.answered} / refused (503) "
            f"{self.refused} / lost {self.lost}  {dict(self.statuses)}"
        )


class Load:
    """Sends ``n`` v2 requests to the ``tiny`` model from ``concurrency`` threads,
    each pausing ``pause_s`` before each request."""

    def __init__(
        self, stack: RunningStack, n: int, concurrency: int = 8, pause_s: float = 0.0
    ) -> None:
        self.stack = stack
        self.pause_s = pause_s
        self.n = n
        self.tally = Tally()
        self._next = 0
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run) for _ in range(concurrency)]

    def start(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def wait(self, timeout: float = 90) -> Tally:
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        assert not any(t.is_alive() for t in self._threads), "load still running"
        return self.tally

    def until_answered(self, n: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while self.tally.answered < n:
            assert time.monotonic() < deadline, f"only {self.tally.answered} answered"
            assert any(t.is_alive() for t in self._threads), "the load stopped"
            time.sleep(0.01)

    def _take(self) -> int | None:
        with self._lock:
            if self._next >= self.n:
                return None
            self._next += 1
            self.tally.sent += 1
            return self._next

    def _count(self, what: str) -> None:
        with self._lock:
            self.tally.statuses[what] += 1
            if what == "200":
                self.tally.answered += 1
            elif what == "503":
                self.tally.refused += 1
            else:
                self.tally.lost += 1

    def _run(self) -> None:
        with self.stack.client() as client:
            while (i := self._take()) is not None:
                time.sleep(self.pause_s)
                row = [float(i), float(i) + 0.5, -float(i), 1.0]
                body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": row}]}
                try:
                    r = client.post("/v2/models/tiny/infer", json=body)
                except httpx.HTTPError as exc:
                    self._count(type(exc).__name__)
                    continue
                if r.status_code == 200 and not _right(r.json(), row):
                    self._count("wrong answer")
                else:
                    self._count(str(r.status_code))


def _right(answer: dict[str, object], row: list[float]) -> bool:
    outputs = {o["name"]: o["data"] for o in answer["outputs"]}  # type: ignore[attr-defined]
    return bool(outputs["y"] == [2 * v + 1 for v in row] and outputs["s"] == [sum(row)])


def start_worker(
    archive: Path, broker: str, home: Path, log: Path, *extra: str
) -> subprocess.Popen[bytes]:
    """``trustserve worker`` as an operator would run it on another host; ``extra``: more
    of its options (``--kms ...``)."""
    args = [sys.executable, "-m", "trustserve.cli", "worker", "--archive", str(archive)]
    args += ["--broker", broker, "--threads", "1", "--home", str(home), *extra]
    with log.open("ab") as out:
        return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=dict(os.environ))


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
