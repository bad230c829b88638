"""Cold start and memory of a served stack: the two figures a user sees before throughput."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(d.name))
    return kids


def descendants(pid: int) -> list[int]:
    kids, out, todo = _children(), [], [pid]
    while todo:
        for child in kids.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def peak_rss_bytes(pids: list[int]) -> int:
    """The sum of each process's peak resident set (VmHWM): the stack's RAM high-water mark
    (an upper bound when the processes peaked at different times)."""
    total = 0
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                total += int(line.split()[1]) * 1024
    return total


def stack_peak_rss_bytes() -> int:
    """Every process this bench started (the stack, its workers, a TorchServe, a Redis)."""
    return peak_rss_bytes(descendants(os.getpid()))


def first_answer_s(started: float, ask: Callable[[], bool], timeout_s: float = 180) -> float:
    """Seconds from ``started`` (time.monotonic() when the server was launched) until
    ``ask()`` first returns True (an answered inference request)."""
    deadline = started + timeout_s
    while time.monotonic() < deadline:
        try:
            if ask():
                return time.monotonic() - started
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError("no answer before the timeout")
