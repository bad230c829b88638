"""docs/ohttp-relays.md's client snippet, run as written through the test relay to a real
stack: only the frontend's address, its CA and the relay's URL are replaced."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from tests.docs.blocks import ROOT
from tests.interop.relay import Relay
from tests.support import RunningStack

DOC = ROOT / "docs" / "ohttp-relays.md"


def snippet() -> str:
    found = re.search(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert found, "docs/ohttp-relays.md has no python block"
    return "\n".join(line.removeprefix("   ") for line in found[1].splitlines())


def test_the_relay_snippet_runs_as_written(tiny_stack: RunningStack) -> None:
    gateway = f"https://127.0.0.1:{tiny_stack.port}/v2/ohttp/tiny/1"
    with Relay(gateway, ca=tiny_stack.ca) as relay:
        code = snippet()
        replaced = {
            '"https://localhost:8080"': repr(tiny_stack.url),
            'Path.home() / ".trustserve/tls/ca.pem"': repr(str(tiny_stack.ca)),
            '"https://relay.example/trustserve-tiny-1"': repr(relay.url),
        }
        for old, new in replaced.items():
            assert old in code, f"the snippet no longer says {old}"
            code = code.replace(old, new)
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
            env={k: v for k, v in os.environ.items() if not k.startswith("TRUSTSERVE_")},
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        assert "'y': array([[3., 3., 3., 3.]]" in out.stdout, out.stdout
        [seen] = relay.seen  # it went through the relay
        assert seen.status == 200
