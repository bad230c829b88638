"""Shared pieces of the benchmarks: demo models, raw engine runs, a served stack, v2 requests."""

from __future__ import annotations

import json
import shutil
import ssl
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support import RunningStack, start_stack  # noqa: E402
from trustserve import archive  # noqa: E402
from trustserve.engines import load_engine  # noqa: E402

MODELS = ROOT / "bench" / "models"
RESULTS = ROOT / "bench" / "results"


def demo_models() -> dict[str, Path]:
    from trustserve.models.demo import build_demo_models

    return build_demo_models(MODELS)


def raw_engine(engine: str, path: Path, batch: int, threads: int, seconds: float) -> float:
    """Images (rows) per second of the engine alone at ``batch``, the way a worker runs it."""
    model = archive.load(path)
    e = load_engine(engine, model.payload, model.manifest, threads)
    spec = model.manifest.inputs[0]
    x = np.random.default_rng(1).standard_normal((batch, *spec.shape[1:])).astype(np.float32)
    for _ in range(3):
        e.infer({spec.name: x})
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        e.infer({spec.name: x})
        n += 1
    return n * batch / (time.perf_counter() - t0)


def v2_binary_body(name: str, x: np.ndarray, datatype: str = "FP32") -> tuple[bytes, int]:
    head = json.dumps(
        {
            "inputs": [
                {
                    "name": name,
                    "datatype": datatype,
                    "shape": list(x.shape),
                    "parameters": {"binary_data_size": x.nbytes},
                }
            ],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    return head + x.tobytes(), len(head)


@contextmanager
def served(
    archives: list[Path], *extra: str, name: str = "stack", env: dict[str, str] | None = None
) -> Iterator[RunningStack]:
    """A real stack (``trustserve serve``) on a store holding just ``archives``."""
    root = RESULTS / "run" / name
    shutil.rmtree(root, ignore_errors=True)
    store = root / "store"
    store.mkdir(parents=True)
    for a in archives:
        shutil.copy(a, store / a.name)
    stack = start_stack(root / "home", store, *extra, env=env)
    try:
        yield stack
    finally:
        stack.stop()


def tls_context(stack: RunningStack) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(stack.ca))
