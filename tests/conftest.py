from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import RunningStack, start_stack, write_colour, write_tiny

# A stack a test starts without --grpc-port serves no gRPC: the default 8084 would clash
# between stacks (start_stack gives each a free port; the flag wins over this).
os.environ.setdefault("TRUSTSERVE_LISTEN_GRPC_PORT", "0")


@pytest.fixture(scope="module")
def tiny_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    """A real stack (HTTPS, embedded broker, worker processes) serving two small models.

    The body limit is 1 MiB so that the 413 path is cheap to reach.
    """
    root = tmp_path_factory.mktemp("tiny-stack")
    store = root / "store"
    store.mkdir()
    write_tiny(store)
    write_colour(store)
    stack = start_stack(root / "home", store, "--max-body-mb", "1")
    for model in ("tiny", "colour"):  # ready means one model; a request waits for no worker
        stack.wait_model_ready(model, timeout=180)
    yield stack
    stack.stop()


@pytest.fixture(scope="session")
def demo_store(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """resnet50 (FP32 and INT8) and digits, built from scratch once per session (about 30 s)."""
    from trustserve.models.demo import build_demo_models

    start = time.monotonic()
    paths = build_demo_models(tmp_path_factory.mktemp("demo-models"), int8=True, log=print)
    print(f"demo models built in {time.monotonic() - start:.1f}s")
    return paths
