"""The converter's sandbox on its own: a real confined process tries what a model must not do.

Runs on this machine's kernel (Landlock and seccomp are Linux features every CI host here
has); the test fails rather than skips when no sandbox can be made, since then
``--trust-model-code`` conversions are refused.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from trustserve.models import sandbox

ATTEMPTS = textwrap.dedent(
    """
    import os, socket, sys
    from pathlib import Path
    from trustserve.models.sandbox import confine
    work, outside = Path(sys.argv[1]), Path(sys.argv[2])
    confine(work)
    (work / "inside").write_text("allowed")
    tries = {
        "write outside": lambda: (outside / "new").write_text("x"),
        "overwrite outside": lambda: open(outside / "existing", "w"),
        "truncate outside": lambda: os.truncate(outside / "existing", 0),
        "read outside": lambda: (outside / "existing").read_text(),
        "tcp socket": lambda: socket.socket(),
        "udp socket": lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM),
        "unix socket": lambda: socket.socket(socket.AF_UNIX),
        "run a program": lambda: os.execv("/bin/true", ["true"]),
    }
    for name, attempt in tries.items():
        try:
            attempt()
            print(name, "ALLOWED")
        except OSError:
            print(name, "denied")
    import torch  # what the conversion needs still works
    print("torch", float(torch.ones(3).sum()))
    """
)


def test_a_confined_process_writes_only_its_work_dir_and_has_no_network(tmp_path: Path) -> None:
    assert sandbox.unavailable() is None
    work, outside = tmp_path / "work", tmp_path / "outside"
    work.mkdir()
    outside.mkdir()
    (outside / "existing").write_text("the user's file")
    proc = subprocess.run(
        [sys.executable, "-c", ATTEMPTS, str(work), str(outside)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert [line for line in lines if line.endswith("ALLOWED")] == []
    assert len([line for line in lines if line.endswith("denied")]) == 8
    assert "torch 3.0" in lines
    assert (work / "inside").read_text() == "allowed"
    assert sorted(p.name for p in outside.iterdir()) == ["existing"]
    assert (outside / "existing").read_text() == "the user's file"


def test_confine_refuses_a_process_with_threads(tmp_path: Path) -> None:
    code = textwrap.dedent(
        """
        import sys, threading
        from pathlib import Path
        from trustserve.models.sandbox import SandboxError, confine
        threading.Thread(target=threading.Event().wait, daemon=True).start()
        try:
            confine(Path(sys.argv[1]))
        except SandboxError as exc:
            print(exc)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, check=True
    )
    assert "one thread" in out.stdout
