from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def demo_dir(demo_store: dict[str, Path]) -> Path:
    """The demo models' folder (built once per session), for ``--demo-dir`` and copies."""
    return demo_store["digits"].parent


def link_demo(demo_dir: Path, target: Path) -> None:
    """A user's ``trustserve demo-models demo`` output, without building it again (hard links)."""
    shutil.copytree(demo_dir, target, copy_function=os.link)
