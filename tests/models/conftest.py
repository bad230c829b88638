"""Fixtures for the model tests: the demo store, built once per test session."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from trustserve.models.demo import build_demo_models


@pytest.fixture(scope="session")
def demo_store(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """resnet50 (FP32 and INT8) and digits, built from scratch (about 30 s on 2 cores)."""
    start = time.monotonic()
    paths = build_demo_models(tmp_path_factory.mktemp("demo-models"), int8=True, log=print)
    print(f"demo models built in {time.monotonic() - start:.1f}s")
    return paths
