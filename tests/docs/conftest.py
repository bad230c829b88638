from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def demo_dir(demo_store: dict[str, Path]) -> Path:
    """The demo models' folder (built once per session), for ``--demo-dir`` and copies."""
    return demo_store["digits"].parent
