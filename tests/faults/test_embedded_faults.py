"""kill -9 a worker of the default (embedded broker) stack under load: nothing lost."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from tests.faults.load import Load
from tests.support import start_stack, worker_pids, write_tiny


def test_kill_9_a_worker_of_the_embedded_stack_every_request_answered_once(
    tmp_path: Path,
) -> None:
    store = tmp_path / "store"
    store.mkdir()
    write_tiny(store)
    stack = start_stack(tmp_path / "home", store, "--workers", "2", dev=False)
    try:
        deadline = time.monotonic() + 30
        while len(pids := worker_pids(stack.process.pid)) < 2:
            assert time.monotonic() < deadline, "workers never started"
            time.sleep(0.1)
        load = Load(stack, 200, concurrency=12).start()
        load.until_answered(30)
        os.kill(pids[0], signal.SIGKILL)
        tally = load.wait()
        print(tally.line("embedded: kill -9 a worker"))
        assert tally.lost == 0 and tally.refused == 0
        assert tally.answered == tally.sent == 200
        deadline = time.monotonic() + 30
        while len(worker_pids(stack.process.pid)) < 2:  # the supervisor started another
            assert time.monotonic() < deadline, "the killed worker was not replaced"
            time.sleep(0.1)
    finally:
        stack.stop()
