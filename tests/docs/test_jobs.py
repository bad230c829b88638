"""docs/jobs.md's SDK snippet, run as written against a real stack: only the address and
the CA of a default ``trustserve up`` are replaced by the test stack's."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from tests.docs.blocks import ROOT
from tests.support import RunningStack


def sdk_snippet() -> str:
    doc = (ROOT / "docs" / "jobs.md").read_text()
    section = doc[doc.index("## The SDK") :]
    found = re.search(r"```python\n(.*?)```", section, flags=re.S)
    assert found, "docs/jobs.md's SDK section has no python block"
    return found[1]


def test_the_sdk_snippet_runs_as_written(tiny_stack: RunningStack) -> None:
    code = sdk_snippet()
    defaults = {
        '"https://localhost:8080"': repr(tiny_stack.url),
        'Path.home() / ".trustserve/tls/ca.pem"': repr(str(tiny_stack.ca)),
    }
    for old, new in defaults.items():
        assert old in code, f"the snippet no longer says {old}"
        code = code.replace(old, new)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
        env={k: v for k, v in os.environ.items() if not k.startswith("TRUSTSERVE_")},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "'y': array([[3., 3., 3., 3.]]" in out.stdout, out.stdout
