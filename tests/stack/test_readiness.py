"""``/v2/health/ready`` answers what a load balancer asks: can this frontend answer at all?"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import httpx

from tests.stack.test_fail_clearly import serve, stop
from tests.support import write_tiny
from trustserve.kms.embedded import development_kms
from trustserve.kms.tools import encrypt_model_file


def store_with_a_broken_model(tmp_path: Path) -> Path:
    """``tiny`` is servable; ``locked`` is encrypted under another home's KMS: never servable."""
    store = tmp_path / "store"
    write_tiny(store)
    plain = write_tiny(tmp_path / "plain", name="locked")
    encrypt_model_file(plain, store / "locked-1.tsm", development_kms(tmp_path / "owner"))
    return store


def wait_for(url: str, ca: Path, status: int) -> httpx.Response:
    deadline = time.monotonic() + 60
    while True:
        r = httpx.get(url, verify=str(ca))
        if r.status_code == status or time.monotonic() > deadline:
            return r
        time.sleep(0.3)


def test_ready_when_one_model_is_served_although_another_never_can(tmp_path: Path) -> None:
    store = store_with_a_broken_model(tmp_path)
    home = tmp_path / "home"
    proc, port = serve(home, store, "--workers", "1")
    ca = home / "tls/ca.pem"
    try:
        r = wait_for(f"https://localhost:{port}/v2/health/ready", ca, 200)
        assert r.status_code == 200, r.text
        assert r.json()["models"] == ["tiny"]
        assert httpx.get(f"https://localhost:{port}/ping", verify=str(ca)).status_code == 200
        locked = httpx.get(f"https://localhost:{port}/v2/models/locked/ready", verify=str(ca))
        assert locked.status_code == 400  # per-model readiness still tells the truth
    finally:
        stop(proc)


def serve_requiring(tmp_path: Path, require: str) -> tuple[subprocess.Popen[bytes], int, Path]:
    """A stack of ``store_with_a_broken_model`` whose trustserve.yaml requires ``require``."""
    store = store_with_a_broken_model(tmp_path)
    home = tmp_path / "home"
    home.mkdir()
    (home / "trustserve.yaml").write_text(f"readiness: {{require: [{require}]}}\n")
    proc, port = serve(home, store, "--workers", "1")
    return proc, port, home / "tls/ca.pem"


def test_readiness_require_names_the_model_that_is_not_ready(tmp_path: Path) -> None:
    proc, port, ca = serve_requiring(tmp_path, "tiny, locked")
    try:
        model = wait_for(f"https://localhost:{port}/v2/models/tiny/ready", ca, 200)
        assert model.status_code == 200  # tiny is served ...
        r = httpx.get(f"https://localhost:{port}/v2/health/ready", verify=str(ca))
        assert r.status_code == 503  # ... but a required model is not
        assert r.json()["waiting_for"] == ["locked"]
        assert httpx.get(f"https://localhost:{port}/ping", verify=str(ca)).status_code == 500
    finally:
        stop(proc)


def test_readiness_require_can_name_one_version(tmp_path: Path) -> None:
    """``name:version`` requires that version (``up`` requires each demo version this way)."""
    proc, port, ca = serve_requiring(tmp_path, "'tiny:1', 'locked:1'")
    try:
        wait_for(f"https://localhost:{port}/v2/models/tiny/ready", ca, 200)
        r = httpx.get(f"https://localhost:{port}/v2/health/ready", verify=str(ca))
        assert r.status_code == 503
        assert r.json()["waiting_for"] == ["locked:1"]  # tiny:1 counts: its worker is live
    finally:
        stop(proc)
