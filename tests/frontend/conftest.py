from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.frontend.inprocess import Frontend, serving
from tests.support import write_colour, write_tiny


@pytest.fixture
async def tiny_frontend(tmp_path: Path) -> AsyncIterator[Frontend]:
    """In-process, what ``tiny_stack`` serves: tiny and colour, each with a worker, 1 MiB bodies."""
    write_tiny(tmp_path)
    write_colour(tmp_path)
    async with serving(tmp_path, "tiny-1.tsm", "colour.tsm", max_body_bytes=1 << 20) as frontend:
        yield frontend
