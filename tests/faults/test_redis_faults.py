"""Faults under load on a real deployment: a TLS+ACL Redis, `trustserve serve --broker`
with no local workers, and `trustserve worker` processes as on other hosts.

Every test prints ``sent / answered / refused / lost`` (pytest -s shows it).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from redis import Redis

from tests.broker.redis_server import RedisServer
from tests.faults.load import Load, start_worker, stop
from tests.support import RunningStack, start_stack, tiny_manifest, write_tiny
from trustserve import archive
from trustserve.files import write_atomic

STREAM = "trustserve:q:tiny:1"
LIVE = "trustserve:c:tiny:1"


@dataclass
class Deployment:
    root: Path
    redis: RedisServer
    store: Path
    archive: Path
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    stack: RunningStack | None = None

    @property
    def url(self) -> str:
        return self.redis.url(visibility_s="1")

    def worker(self, archive: Path | None = None) -> subprocess.Popen[bytes]:
        proc = start_worker(
            archive or self.archive, self.url, self.root / "worker-home", self.root / "workers.log"
        )
        self.workers.append(proc)
        return proc

    def serve(self, *extra: str) -> RunningStack:
        self.stack = start_stack(
            self.root / "home",
            self.store,
            "--broker",
            self.url,
            "--workers",
            "0",
            *extra,
            dev=False,  # plaintext mode: workers need no KMS (the broker is what is tested)
        )
        return self.stack

    def held_by(self, pid: int, redis: Redis) -> int:
        """Jobs the worker with ``pid`` has taken and not answered (its pending entries)."""
        prefix = f"{socket.gethostname()}-{pid}-".encode()
        summary = redis.xpending(STREAM, "workers")
        return sum(c["pending"] for c in summary["consumers"] if c["name"].startswith(prefix))


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    redis = RedisServer(tmp_path / "redis")
    redis.start()
    store = tmp_path / "store"
    store.mkdir()
    d = Deployment(tmp_path, redis, store, write_tiny(store))
    yield d
    if d.stack is not None:
        d.stack.stop()
    for w in d.workers:
        stop(w)
    redis.stop()


def kill_while_holding_jobs(d: Deployment, proc: subprocess.Popen[bytes]) -> int:
    """SIGKILL ``proc`` at a moment it holds taken, unanswered jobs; returns how many.

    The worker runs in slices of a millisecond (SIGCONT, SIGSTOP) and is looked at
    while stopped, so taking a job and answering it never fit between two looks.
    """
    deadline = time.monotonic() + 60
    live = f"{socket.gethostname()}-{proc.pid}-".encode()
    redis = d.redis.client()
    while not any(m.startswith(live) for m in redis.zrange(LIVE, 0, -1)):
        assert time.monotonic() < deadline, "the worker never came up"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGSTOP)
    while time.monotonic() < deadline:
        held = d.held_by(proc.pid, redis)
        if held:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            return held
        os.kill(proc.pid, signal.SIGCONT)
        time.sleep(0.001)
        os.kill(proc.pid, signal.SIGSTOP)
    raise AssertionError("the worker never held a job")


def test_kill_9_a_worker_mid_batch_every_request_answered_once(deployment: Deployment) -> None:
    d = deployment
    victim, _ = d.worker(), d.worker()
    stack = d.serve()
    load = Load(stack, 200, concurrency=12).start()
    load.until_answered(30)
    held = kill_while_holding_jobs(d, victim)
    tally = load.wait()
    print(tally.line(f"kill -9 a worker holding {held} jobs"))
    assert tally.lost == 0 and tally.refused == 0
    assert tally.answered == tally.sent == 200  # one right 200 per request


def test_redis_restart_with_requests_queued_answers_every_accepted_one(
    deployment: Deployment,
) -> None:
    d = deployment
    worker = d.worker()
    stack = d.serve("--timeout", "60")
    load = Load(stack, 150, concurrency=16).start()
    load.until_answered(20)
    os.kill(worker.pid, signal.SIGSTOP)  # requests pile up in Redis
    deadline = time.monotonic() + 20
    while (queued := int(d.redis.client().xlen(STREAM))) < 10:
        assert time.monotonic() < deadline, "requests never queued"
        time.sleep(0.05)
    d.redis.stop(kill=True)  # a crash: only the append-only file survives
    time.sleep(1)
    d.redis.start()
    os.kill(worker.pid, signal.SIGCONT)
    tally = load.wait()
    print(tally.line(f"Redis killed and restarted with {queued} requests queued"))
    assert tally.lost == 0
    assert tally.answered + tally.refused == tally.sent
    assert tally.answered >= 20 + queued


def test_a_worker_without_the_model_key_leaves_its_requests_to_one_with_it(
    deployment: Deployment,
) -> None:
    """'No key' here: an encrypted archive and no KMS, so that worker cannot load the model.

    It refuses to start (exit 3: never restarted, saying why) and never takes a job; the requests
    queued while it is the only worker are served once a worker holding the model
    arrives. (A job whose every worker dies ends as a dead letter and a clear 500:
    tests/broker/test_redis.py::test_a_job_whose_workers_vanish_is_dead_lettered.)
    """
    d = deployment
    locked = d.root / "locked" / "tiny-1.tsm"
    encryption = {"scheme": "tink-aes256-gcm", "key_id": "tiny-key"}
    write_atomic(locked, archive.pack(tiny_manifest(), os.urandom(512), encryption))
    keyless = d.worker(locked)
    assert keyless.wait(60) == 3
    assert "needs --kms" in (d.root / "workers.log").read_text()
    d.worker()
    stack = d.serve()
    keyless_again = d.worker(locked)
    tally = Load(stack, 100, concurrency=8).start().wait()
    print(tally.line("a keyless worker beside a keyed one"))
    assert keyless_again.wait(60) == 3
    assert tally.answered == tally.sent == 100 and tally.lost == 0
    assert d.redis.client().xlen("trustserve:dead:tiny:1") == 0


def test_redis_down_means_503_fast_then_recovery_by_itself(deployment: Deployment) -> None:
    d = deployment
    d.worker()
    stack = d.serve()
    load = Load(stack, 300, concurrency=4, pause_s=0.05).start()
    load.until_answered(20)
    d.redis.stop()
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}
    with stack.client() as c:
        started = time.monotonic()
        r = c.post("/v2/models/tiny/infer", json=body)
        # fast: well inside the 30 s request timeout a client would otherwise wait out
        # (not a tight figure: the machine running the suite may be loaded)
        assert r.status_code == 503 and time.monotonic() - started < 10
        assert c.get("/v2/health/ready").status_code == 503
        time.sleep(1.5)
        d.redis.start()
        deadline = time.monotonic() + 20
        while c.post("/v2/models/tiny/infer", json=body).status_code != 200:
            assert time.monotonic() < deadline, "never recovered"
            time.sleep(0.1)
        recovered = time.monotonic() - started
    tally = load.wait()
    print(tally.line(f"Redis down ~1.5 s, recovered after {recovered:.1f} s"))
    assert tally.lost == 0 and tally.refused > 0
    assert tally.answered + tally.refused == tally.sent
