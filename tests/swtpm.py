"""A real software TPM (swtpm) for tests: ``with running_swtpm(dir) as tcti: ...``."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path


def _free_port_pair() -> int:
    """A free port p with p + 1 free too: the swtpm TCTI expects the control port at p + 1."""
    for _ in range(50):
        with socket.socket() as first, socket.socket() as second:
            first.bind(("127.0.0.1", 0))
            port: int = first.getsockname()[1]
            try:
                second.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
            return port
    raise RuntimeError("no two adjacent free ports on 127.0.0.1")


@contextlib.contextmanager
def running_swtpm(directory: Path) -> Iterator[str]:
    """Start swtpm with its state in ``directory``/swtpm-state; yield its TCTI string."""
    binary = shutil.which("swtpm")
    assert binary, "swtpm is not installed (make debs)"
    state = directory / "swtpm-state"
    state.mkdir()
    server = _free_port_pair()
    ctrl = server + 1
    proc = subprocess.Popen(
        [
            binary, "socket", "--tpm2",
            "--tpmstate", f"dir={state}",
            "--server", f"type=tcp,port={server},bindaddr=127.0.0.1",
            "--ctrl", f"type=tcp,port={ctrl},bindaddr=127.0.0.1",
            "--flags", "not-need-init,startup-clear",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", server), timeout=0.5).close()
                break
            except OSError:
                assert proc.poll() is None, f"swtpm exited: {proc.stderr.read()!r}"  # type: ignore[union-attr]
                assert time.monotonic() < deadline, "swtpm did not start"
                time.sleep(0.05)
        yield f"swtpm:host=127.0.0.1,port={server}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        assert proc.stderr is not None
        proc.stderr.close()
