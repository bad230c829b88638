"""The worker supervisor, driven with a stand-in worker program (a few lines of Python).

The stand-in records each start (time, pid, argv) in a file, then behaves as told by
its environment: exit at once with a code, or run until terminated.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import sys
from pathlib import Path

from trustserve.stack.supervisor import WorkerSupervisor
from trustserve.worker.options import WorkerOptions, parser

FAKE_WORKER = """
import json, os, sys, time
with open(os.environ["STARTS"], "a") as f:
    f.write(json.dumps({"t": time.monotonic(), "pid": os.getpid(), "argv": sys.argv[1:]}) + "\\n")
code = os.environ.get("EXIT_WITH")
if code is not None:
    sys.exit(int(code))
time.sleep(600)
"""


def supervisor(tmp_path: Path, exit_with: int | None = None, **kwargs: object) -> WorkerSupervisor:
    env = {**os.environ, "STARTS": str(tmp_path / "starts.jsonl")}
    if exit_with is not None:
        env["EXIT_WITH"] = str(exit_with)
    options = kwargs.pop("options", WorkerOptions(broker="unix:/nowhere"))
    return WorkerSupervisor(
        options,  # type: ignore[arg-type]
        env,
        command=[sys.executable, "-c", FAKE_WORKER],
        **kwargs,  # type: ignore[arg-type]
    )


def starts(tmp_path: Path) -> list[dict[str, object]]:
    path = tmp_path / "starts.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


async def wait_for(condition: object, timeout: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():  # type: ignore[operator]
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


async def test_a_crashing_worker_is_restarted_with_a_growing_backoff(tmp_path: Path) -> None:
    sup = supervisor(tmp_path, exit_with=1, first_backoff_s=0.1)
    await sup.scale("m:1", tmp_path / "m.tsm", 1)
    await wait_for(lambda: len(starts(tmp_path)) >= 4)
    await sup.stop_all()
    times = [float(s["t"]) for s in starts(tmp_path)]  # type: ignore[arg-type]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps[0] >= 0.1
    assert gaps[1] >= 0.2 and gaps[2] >= 0.4  # doubled each time
    assert len({s["pid"] for s in starts(tmp_path)}) == len(times)


async def test_an_unservable_worker_is_reported_and_not_restarted(tmp_path: Path) -> None:
    reports: list[tuple[str, str]] = []
    sup = supervisor(
        tmp_path,
        exit_with=3,
        first_backoff_s=0.05,
        on_unservable=lambda q, why: reports.append((q, why)),
    )
    await sup.scale("digits:1", tmp_path / "d.tsm", 1)
    await wait_for(lambda: reports)
    await asyncio.sleep(0.5)  # ten back-offs' worth: nothing may start again
    assert len(starts(tmp_path)) == 1
    assert reports == [("digits:1", reports[0][1])]
    assert "digits:1 cannot be served" in reports[0][1]
    await sup.scale("digits:1", tmp_path / "d.tsm", 1)  # asking again tries afresh
    await wait_for(lambda: len(starts(tmp_path)) == 2)
    await sup.stop_all()


async def test_scale_up_down_and_stop_leave_the_asked_number_running(tmp_path: Path) -> None:
    sup = supervisor(tmp_path)
    await sup.scale("m:1", tmp_path / "m.tsm", 2)
    await wait_for(lambda: len(starts(tmp_path)) == 2)
    procs = [s.process for s in sup.workers("m:1")]
    assert all(p is not None and p.returncode is None for p in procs)
    await sup.scale("m:1", tmp_path / "m.tsm", 1)
    assert len(sup.workers("m:1")) == 1
    assert sum(p is not None and p.returncode is None for p in procs) == 1
    await sup.stop_all()
    assert all(p is not None and p.returncode is not None for p in procs)
    assert sup.workers("m:1") == []


async def test_every_child_gets_every_option(tmp_path: Path) -> None:
    options = WorkerOptions(
        broker="rediss://redis.example:6380/?ca=/etc/ca.pem",
        engine="openvino",
        threads=3,
        home=tmp_path / "home",
        kms="https://kms.example:8443",
        kms_ca=tmp_path / "kms-ca.pem",
        attestation="tdx",
        attestation_options=("tcti=swtpm:host=127.0.0.1,port=2321", "pcrs=0,7"),
        replay_window=17.5,
    )
    sup = supervisor(tmp_path, options=options)
    await sup.scale("m:1", tmp_path / "m.tsm", 2)
    await wait_for(lambda: len(starts(tmp_path)) == 2)
    await sup.stop_all()
    for start in starts(tmp_path):
        got = WorkerOptions.from_args(parser().parse_args(start["argv"]))  # type: ignore[arg-type]
        assert got == WorkerOptions(**{**options.__dict__, "archive": tmp_path / "m.tsm"})


async def test_no_workers_asked_none_started(tmp_path: Path) -> None:
    sup = supervisor(tmp_path)
    await sup.scale("m:1", tmp_path / "m.tsm", 0)
    await asyncio.sleep(0.3)
    assert starts(tmp_path) == []
