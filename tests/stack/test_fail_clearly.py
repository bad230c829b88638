"""A model that can never be served is refused at once, by name, and nothing loops or lingers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.support import alive, free_port, worker_pids, write_tiny
from trustserve.kms.embedded import development_kms
from trustserve.kms.tools import encrypt_model_file


def encrypted_tiny(tmp_path: Path) -> Path:
    """An archive encrypted by the KMS of another home: this server has no way to its key."""
    plain = write_tiny(tmp_path / "plain")
    store = tmp_path / "store"
    store.mkdir()
    encrypt_model_file(plain, store / "tiny.tsm", development_kms(tmp_path / "owner"))
    return store / "tiny.tsm"


def serve(home: Path, store: Path, *extra: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    args = [
        sys.executable, "-m", "trustserve.cli", "serve", "--home", str(home),
        "--model-store", str(store), "--port", str(port),
        "--management-port", str(free_port()), "--metrics-port", str(free_port()), *extra,
    ]  # fmt: skip
    home.mkdir(parents=True, exist_ok=True)
    with (home / "stack.log").open("wb") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, (home / "stack.log").read_text()
        try:
            httpx.get(f"https://localhost:{port}/v2/health/live", verify=str(home / "tls/ca.pem"))
            return proc, port
        except (httpx.TransportError, OSError):
            time.sleep(0.2)
    proc.kill()
    raise AssertionError("serve never came up")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        proc.wait(20)


def test_an_encrypted_model_without_a_kms_is_refused_at_once_by_name(tmp_path: Path) -> None:
    encrypted_tiny(tmp_path)
    proc, port = serve(tmp_path / "home", tmp_path / "store", "--workers", "1")
    try:
        started = time.monotonic()
        r = httpx.post(
            f"https://localhost:{port}/v2/models/tiny/infer",
            json={"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1] * 4}]},
            verify=str(tmp_path / "home/tls/ca.pem"),
            timeout=30,
        )
        assert r.status_code == 503
        assert "tiny version 1 is encrypted" in r.json()["error"]
        assert "--kms" in r.json()["error"]
        assert time.monotonic() - started < 15  # at once: not after the 30 s deadline
        assert worker_pids(proc.pid) == []  # no worker started to fail
    finally:
        stop(proc)


def test_worker_command_exits_3_when_no_child_can_ever_serve(tmp_path: Path) -> None:
    archive = encrypted_tiny(tmp_path)
    out = subprocess.run(
        [sys.executable, "-m", "trustserve.cli", "worker", "--workers", "2",
         "--archive", str(archive), "--broker", f"unix:{tmp_path / 'broker.sock'}",
         "--home", str(tmp_path / "home")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 3, out.stderr[-2000:]
    assert out.stderr.count("cannot serve this model:") == 2  # once per child, no restarts
    assert "encrypted" in out.stderr and "--kms" in out.stderr


def test_kill_9_of_the_worker_parent_leaves_no_child_behind(tmp_path: Path) -> None:
    write_tiny(tmp_path / "store")
    home = tmp_path / "home"
    frontend, port = serve(home, tmp_path / "store", "--workers", "0")
    parent = subprocess.Popen(
        [sys.executable, "-m", "trustserve.cli", "worker", "--workers", "2",
         "--archive", str(tmp_path / "store/tiny-1.tsm"), "--broker",
         f"unix:{home / 'run/broker.sock'}", "--home", str(home)],
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        children: list[int] = []
        while len(children) < 2 and time.monotonic() < deadline:
            children = worker_pids(parent.pid)
            time.sleep(0.1)
        ready = f"https://localhost:{port}/v2/models/tiny/ready"
        while httpx.get(ready, verify=str(home / "tls/ca.pem")).status_code != 200:
            assert time.monotonic() < deadline, "the workers never became ready"
            time.sleep(0.2)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(10)
        assert len(children) == 2
        while any(alive(pid) for pid in children) and time.monotonic() < deadline + 15:
            time.sleep(0.1)
        left = [pid for pid in children if alive(pid)]
        assert left == [], f"orphaned workers still running: {left}"
    finally:
        if parent.poll() is None:
            parent.kill()
        stop(frontend)
