"""``trustserve worker --workers N``: its children start with every option it was given.

Regression: the parent once passed only --broker/--engine/--threads/--home/--kms on,
so children ran with sim attestation, the default CA and the default replay window.
"""

from __future__ import annotations

import base64
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.support import free_port, write_tiny


def test_each_child_of_worker_gets_every_option(tmp_path: Path) -> None:
    archive = write_tiny(tmp_path / "store")
    kms_ca = tmp_path / "kms-ca.pem"
    kms_ca.write_text("not used: the KMS is never reached\n")
    given = [
        "--archive", str(archive),
        "--broker", f"unix:{tmp_path / 'no-broker.sock'}",
        "--home", str(tmp_path / "home"),
        "--threads", "2",
        "--kms", f"https://127.0.0.1:{free_port()}",
        "--kms-ca", str(kms_ca),
        "--kms-identity", base64.b64encode(os.urandom(32)).decode(),
        "--key-refresh", "7.0",
        "--provider", "tdx",
        "--replay-window", "17.5",
    ]  # fmt: skip
    parent = subprocess.Popen(
        [sys.executable, "-m", "trustserve.cli", "worker", "--workers", "2", *given],
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    started: dict[str, str] = {}
    try:
        assert parent.stderr is not None
        deadline = time.monotonic() + 60
        while len(started) < 2 and time.monotonic() < deadline:
            line = parent.stderr.readline()
            if m := re.search(r"worker (\d+) starting with (.*)$", line):
                started[m.group(1)] = m.group(2)
    finally:
        os.killpg(parent.pid, signal.SIGTERM)
        parent.wait(30)
    assert len(started) == 2, "two children should have started"
    for argv in started.values():
        for flag, value in zip(given[::2], given[1::2], strict=True):
            assert f"{flag} {value}" in argv, f"a child lacks {flag} {value}: {argv}"
