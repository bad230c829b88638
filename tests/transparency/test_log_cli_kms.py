"""``trustserve log monitor`` and ``log verify`` against a real ``kms serve`` (real processes):

* a model owner's ``monitor`` prints a release-policy change (the KMS restarted with a more
  permissive policy) as the KMS logs it;
* the host edits the log in the KMS's state file (the permissive policy made to look like
  the first one, to hide the change) and restarts the KMS, which signs the edited log
  again: ``verify --from`` the checkpoint saved before names the first edited entry.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from tests.attacks.tlog_fixtures import kms_command, kms_env, kms_home
from tests.support import free_port, wait_http

CLI = [sys.executable, "-m", "trustserve.cli"]


class Kms:
    """``kms serve`` on one port across restarts (a monitor follows one URL)."""

    def __init__(self, home: Path, key: Path) -> None:
        self.home, self.key, self.port = home, key, free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"https://localhost:{self.port}"

    def start(self, *extra: str) -> None:
        command = kms_command(self.home, self.port, *extra)
        self.proc = subprocess.Popen(command, env=kms_env(self.key), stderr=subprocess.DEVNULL)
        wait_http(f"{self.url}/healthz", self.home / "tls" / "ca.pem", self.proc, timeout=120)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)


def log_cli(kms: Kms, *args: str) -> list[str]:
    return [*CLI, "log", *args, kms.url, "--ca", str(kms.home / "tls" / "ca.pem")]


def _wait_for(path: Path, text: str, proc: subprocess.Popen[bytes]) -> str:
    deadline = time.monotonic() + 120
    while text not in (out := path.read_text()):
        assert proc.poll() is None, f"monitor exited {proc.returncode}: {out}"
        assert time.monotonic() < deadline, f"{text!r} not in the monitor's output: {out}"
        time.sleep(0.2)
    return out


def test_monitor_shows_a_policy_change_and_verify_names_the_entry_the_host_edited(
    tmp_path: Path,
) -> None:
    home, key, log_key = kms_home(tmp_path)
    kms = Kms(home, key)
    saved = tmp_path / "checkpoint"
    monitor = None
    try:
        kms.start()
        verify = [*log_cli(kms, "verify"), "--log-key", log_key.vkey(), "--save", str(saved)]
        done = subprocess.run(verify, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        size = len(Path(f"{saved}.leaves").read_text().split())

        out = tmp_path / "monitor.out"
        with out.open("w") as sink:
            follow = [*log_cli(kms, "monitor"), "--log-key", log_key.vkey(), "--from", str(saved)]
            monitor = subprocess.Popen(
                [*follow, "--interval", "0.2"], stdout=sink, stderr=subprocess.STDOUT
            )
        kms.stop()
        kms.start("--allow-sim-any")  # the operator loosens the release policy
        printed = _wait_for(out, f" {size}  ", monitor)
        assert "release-policy" in printed.splitlines()[-1], printed
        monitor.terminate()
        monitor.wait(timeout=30)
        kms.stop()

        # the host hides the change: the permissive entry made to look like the first policy
        state_file = home / "kms" / "state.json"
        state = json.loads(state_file.read_text())
        logged = state["log"]["entries"]
        first = next(i for i, e in enumerate(logged) if e["kind"] == "release-policy")
        logged[first] = {
            **logged[first],
            "policy": {**logged[first]["policy"], "max_evidence_age_s": 1e9},
        }
        state_file.write_text(json.dumps(state))
        kms.start("--allow-sim-any")
        check = [*log_cli(kms, "verify"), "--log-key", log_key.vkey(), "--from", str(saved)]
        done = subprocess.run(check, capture_output=True, text=True, timeout=120)
        assert done.returncode == 1, done.stdout + done.stderr
        assert f"the first bad entry of the log is {first}" in done.stdout, done.stdout
    finally:
        if monitor is not None and monitor.poll() is None:
            monitor.kill()
        kms.stop()
