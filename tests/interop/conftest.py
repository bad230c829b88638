"""The Node OHTTP client (ohttp_node/client.mjs: @hpke/core, bhttp-js) with its packages installed.

``npm ci`` runs once per session into ohttp_node/node_modules (gitignored), from the
committed package-lock.json. The tests skip only when node or npm is not installed
(``make debs`` installs both); a failing ``npm ci`` fails them, with npm's output.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

NODE_DIR = Path(__file__).parent / "ohttp_node"


@pytest.fixture(scope="session")
def ohttp_node() -> Path:
    """The folder of client.mjs, ready to run with ``node client.mjs ...``."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node and npm are not installed (make debs installs nodejs and npm)")
    done = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=NODE_DIR,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, f"npm ci in {NODE_DIR} failed:\n{done.stdout}\n{done.stderr}"
    return NODE_DIR
