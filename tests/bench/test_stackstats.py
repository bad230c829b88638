"""bench/stackstats.py: the cold-start clock and the stack's memory high-water mark."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from stackstats import descendants, first_answer_s, peak_rss_bytes


def test_a_child_and_its_grandchild_are_counted_with_their_peak_rss() -> None:
    code = "import subprocess, sys; subprocess.run(['sleep', '30'])"
    child = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len(descendants(child.pid)) < 1:
            time.sleep(0.05)
        (grandchild,) = descendants(child.pid)
        assert child.pid in descendants(os.getpid())
        alone = peak_rss_bytes([child.pid])
        assert alone > 1 << 20  # a Python interpreter holds megabytes
        assert peak_rss_bytes([child.pid, grandchild]) > alone
    finally:
        child.kill()
        child.wait()


def test_first_answer_counts_from_the_launch_until_the_first_success() -> None:
    started = time.monotonic()
    answers = iter([False, False, True])
    took = first_answer_s(started, lambda: next(answers))
    assert 0.04 <= took < 10  # two failed polls 20 ms apart came first
