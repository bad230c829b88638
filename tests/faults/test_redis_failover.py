"""The Redis primary's host dies under load (``kill -9``): the Sentinels promote the replica,
the frontend and the worker (separate processes, ``rediss+sentinel://`` URLs) follow, and
no accepted request is lost. Prints ``sent / answered / refused / lost`` and how long the
failover took (``pytest -s``)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.broker.redis_ha import HaRedis, wait_for
from tests.faults.load import Load, start_worker, stop
from tests.support import start_stack, write_tiny


@pytest.fixture
def ha(tmp_path: Path) -> Iterator[HaRedis]:
    with HaRedis.running(tmp_path / "redis") as setup:
        yield setup


def test_kill_9_of_the_primary_under_load_loses_no_accepted_request(
    ha: HaRedis, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    store.mkdir()
    tiny = write_tiny(store)
    worker = start_worker(tiny, ha.urls["workers"], tmp_path / "worker-home", tmp_path / "w.log")
    stack = start_stack(
        tmp_path / "home", store, "--broker", ha.urls["frontends"], "--workers", "0",
        "--timeout", "60", dev=False,
    )  # fmt: skip
    try:
        load = Load(stack, 300, concurrency=2, pause_s=0.1).start()  # ~15 s of requests
        load.until_answered(30)
        killed = time.monotonic()
        ha.kill("primary")
        wait_for(
            "the Sentinels to promote the replica",
            lambda: ha.primary_port() == ha.ports["replica"],
            90,
        )
        failover_s = time.monotonic() - killed
        tally = load.wait(180)
    finally:
        stack.stop()
        stop(worker)
    print(
        tally.line(f"Redis primary killed under load; Sentinels failed over in {failover_s:.1f} s")
    )
    assert tally.lost == 0, tally.line("lost requests")
    assert tally.answered + tally.refused == tally.sent == 300
    assert tally.answered >= 130, "the deployment did not recover after the failover"
