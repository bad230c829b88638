"""Shared pieces of the benchmarks: demo models, raw engine runs, a served stack, v2 requests
(plain, sealed and OHTTP) and a load run against it."""

from __future__ import annotations

import asyncio
import http.client
import json
import shutil
import ssl
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from loadgen import LoadResult, build_request, run_load

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


IMAGE = np.random.default_rng(2).standard_normal((1, 3, 224, 224)).astype(np.float32)


def load(
    host: str,
    port: int,
    request: Any,
    in_flight: int,
    seconds: float,
    ctx: Any = None,
) -> LoadResult:
    return asyncio.run(
        run_load(
            host,
            port,
            request,
            in_flight=in_flight,
            duration_s=seconds,
            warmup_s=4,
            ssl_context=ctx,
        )
    )


def v2_request(stack: RunningStack, model: str) -> bytes:
    body, hlen = v2_binary_body("input", IMAGE)
    headers = {
        "Inference-Header-Content-Length": str(hlen),
        "Content-Type": "application/octet-stream",
    }
    return build_request(f"localhost:{stack.port}", f"/v2/models/{model}/infer", body, headers)


def sealed_requests(stack: RunningStack, model: str, count: int) -> list[bytes]:
    from trustserve.client import ClientPolicy, TrustserveClient
    from trustserve.client.sdk import prepare

    with TrustserveClient(stack.url, policy=ClientPolicy.development(stack.home), ca=stack.ca) as c:
        target = c.verify()
    out = []
    for _ in range(count):
        p = prepare(model, None, {"input": IMAGE}, None, target)
        out.append(build_request(f"localhost:{stack.port}", p.path, p.body, p.headers))
    return out


def ohttp_requests(stack: RunningStack, model: str, count: int) -> list[bytes]:
    """``count`` single-use OHTTP requests (RFC 9458) to the attested key config, each checked
    to be one the gateway answers 200 inside (the outer status is always 200)."""
    from trustserve.client import ClientPolicy, TrustserveClient
    from trustserve.client.sdk import prepare, read_answer

    with TrustserveClient(stack.url, policy=ClientPolicy.development(stack.home), ca=stack.ca) as c:
        target = c.verify()
    probe = prepare(model, None, {"input": IMAGE}, None, target, target.ohttp_config)
    with stack.client() as http:
        read_answer(probe, http.post(probe.path, content=probe.body, headers=probe.headers))
    out = []
    for _ in range(count):
        p = prepare(model, None, {"input": IMAGE}, None, target, target.ohttp_config)
        out.append(build_request(f"localhost:{stack.port}", p.path, p.body, p.headers))
    return out


def answered(stack: RunningStack, model: str) -> bool:
    """One v2 request over HTTPS: True once the stack answers it with 200."""
    body, hlen = v2_binary_body("input", IMAGE)
    conn = http.client.HTTPSConnection("localhost", stack.port, context=tls_context(stack))
    try:
        conn.request(
            "POST",
            f"/v2/models/{model}/infer",
            body,
            {
                "Inference-Header-Content-Length": str(hlen),
                "Content-Type": "application/octet-stream",
            },
        )
        return conn.getresponse().status == 200
    finally:
        conn.close()
