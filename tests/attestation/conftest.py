"""Fixtures for the attestation tests: a real software TPM (swtpm)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.swtpm import running_swtpm


@pytest.fixture
def swtpm(tmp_path: Path) -> Iterator[str]:
    """A real software TPM (swtpm) on 127.0.0.1; yields its TCTI string."""
    with running_swtpm(tmp_path) as tcti:
        yield tcti
