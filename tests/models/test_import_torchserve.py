"""A real TorchServe model store moved over with ``import-torchserve``; answers compared.

TorchServe 0.12 runs from the bench's own venv (bench/torchserve_peer.py builds it once,
about a minute, and the bench reuses it). The store has two archives made by
TorchServe's own ``torch-model-archiver`` from TorchScript classifiers built here, both
with TorchServe's stock ``image_classifier`` handler (one with ``index_to_name.json``);
``config.properties`` sets the addresses, the worker count and, for one model, its
batching and workers. TorchServe answers a few PNG images (sizes that make the handler
resize and crop); then ``trustserve import-torchserve`` imports the store and the
configuration, ``trustserve serve --config`` serves them, and the same images must get
the same top-5 labels with probabilities within 1e-5 (measured: up to 5.3e-7). The
stock handler's torchvision and captum imports are met by tests/models/torchserve_shim
(README.md there says why).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from bench.torchserve_peer import ensure_venv
from tests.models.torch_models import torchscript_bytes
from tests.support import RunningStack, free_port, start_stack
from trustserve.cli import main

ATOL = 1e-5
SHIM = Path(__file__).parent / "torchserve_shim"
LABELS = ["tench", "goldfish", "shark", "ray", "cock", "hen"]  # 6: the handler's top 5
SIZES = [(300, 260), (224, 400), (256, 256), (500, 333)]


class SixWay(torch.nn.Module):
    """Images [N,3,224,224] to 6 class scores: a convolution, a pooling, a linear layer."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 7, stride=4)
        self.fc = torch.nn.Linear(8, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3)))


def images(seed: int) -> list[bytes]:
    rng = np.random.default_rng(seed)
    out = []
    for w, h in SIZES:
        pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        buf = io.BytesIO()
        Image.fromarray(pixels, "RGB").save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


@dataclass
class Moved:
    pictures: list[bytes]
    torchserve: dict[str, list[dict[str, float]]]  # model -> answer per picture
    ports: dict[str, int]
    report: dict[str, Any]
    out: Path
    stack: RunningStack


def archive(bin_dir: Path, root: Path, store: Path, name: str, version: str, seed: int,
            labels: list[str] | None) -> None:  # fmt: skip
    torch.manual_seed(seed)
    work = root / name
    work.mkdir()
    (work / "model.pt").write_bytes(torchscript_bytes(SixWay().eval()))
    extra = []
    if labels is not None:
        (work / "index_to_name.json").write_text(json.dumps(dict(enumerate(labels))))
        extra = ["--extra-files", str(work / "index_to_name.json")]
    subprocess.run(
        [str(bin_dir / "torch-model-archiver"), "--model-name", name, "--version", version,
         "--serialized-file", str(work / "model.pt"), "--handler", "image_classifier",
         *extra, "--export-path", str(store)],
        check=True, cwd=work,
    )  # fmt: skip


def properties(ports: dict[str, int]) -> str:
    models = {
        "tinycls": {
            "1.0": {
                "marName": "tinycls.mar",
                "minWorkers": 2,
                "maxWorkers": 2,
                "batchSize": 4,
                "maxBatchDelay": 20,
                "responseTimeout": 60,
            }
        }
    }
    return "\n".join([
        "# TorchServe's own: these ports, one worker each, batching for tinycls",
        f"inference_address=http://127.0.0.1:{ports['inference']}",
        f"management_address=http://127.0.0.1:{ports['management']}",
        f"metrics_address=http://127.0.0.1:{ports['metrics']}",
        f"grpc_inference_port={ports['grpc']}",
        f"grpc_management_port={ports['grpc_management']}",
        "default_workers_per_model=1",
        "job_queue_size=100",
        "number_of_netty_threads=2",
        "disable_token_authorization=true",
        "enable_model_api=false",
        f"models={json.dumps(models)}",
        "load_models=all",
    ]) + "\n"  # fmt: skip


@contextlib.contextmanager
def torchserve(bin_dir: Path, root: Path, store: Path, config: Path, management: int,
               models: list[str]) -> Iterator[None]:  # fmt: skip
    # TMPDIR: `torchserve --start/--stop` keep their pid file there, by default in /tmp,
    # where another TorchServe on this machine (the bench's) would be taken for this one
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(SHIM), "TMPDIR": str(root)}  # fmt: skip
    log = root / "torchserve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(bin_dir / "torchserve"), "--start", "--foreground", "--ncs",
             "--model-store", str(store), "--ts-config", str(config), "--disable-token-auth"],
            stdout=out, stderr=subprocess.STDOUT, env=env, cwd=root,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 240  # a JVM and two Python workers on a busy machine
        ready: set[str] = set()
        while ready != set(models):
            assert proc.poll() is None, f"torchserve exited:\n{log.read_text()[-4000:]}"
            assert time.monotonic() < deadline, f"torchserve not ready:\n{log.read_text()[-4000:]}"
            for m in set(models) - ready:
                with contextlib.suppress(httpx.TransportError):
                    r = httpx.get(f"http://127.0.0.1:{management}/models/{m}", timeout=5)
                    workers = r.json()[0]["workers"] if r.status_code == 200 else []
                    if workers and all(w["status"] == "READY" for w in workers):
                        ready.add(m)
            time.sleep(0.5)
        yield
    finally:
        subprocess.run([str(bin_dir / "torchserve"), "--stop"], env=env, check=False,
                       capture_output=True)  # fmt: skip
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def moved(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Moved]:
    bin_dir = ensure_venv()
    root = tmp_path_factory.mktemp("torchserve")
    store = root / "store"
    store.mkdir()
    seed = 20261206  # the two models' weights and the pictures
    archive(bin_dir, root, store, "tinycls", "1.0", seed, LABELS)
    archive(bin_dir, root, store, "tinynet", "2.0", seed + 1, None)
    names = ["grpc", "grpc_management", "inference", "management", "metrics"]
    ports = {n: free_port() for n in names}
    config = root / "config.properties"
    config.write_text(properties(ports))
    pictures = images(seed)
    answers: dict[str, list[dict[str, float]]] = {}
    with torchserve(bin_dir, root, store, config, ports["management"], ["tinycls", "tinynet"]):
        for m in ("tinycls", "tinynet"):
            url = f"http://127.0.0.1:{ports['inference']}/predictions/{m}"
            answers[m] = [httpx.post(url, content=p, timeout=60).raise_for_status().json()
                          for p in pictures]  # fmt: skip

    out = root / "moved"
    printed = io.StringIO()
    argv = ["import-torchserve", str(store), "--config", str(config), "--out", str(out),
            "--trust-model-code", "--json"]  # fmt: skip
    with contextlib.redirect_stdout(printed):
        assert main(argv) == 0
    report = json.loads(printed.getvalue())
    # the stack's own ports for the test (TorchServe's may be taken again by now); the
    # file's ports are checked with `config show` below
    stack = start_stack(root / "home", out / "models", "--config", str(out / "trustserve.yaml"))
    try:
        yield Moved(pictures, answers, ports, report, out, stack)
    finally:
        stack.stop()


@pytest.mark.parametrize("model", ["tinycls", "tinynet"])
def test_both_models_answer_as_torchserve_did(moved: Moved, model: str) -> None:
    with moved.stack.client() as c:
        for picture, expected in zip(moved.pictures, moved.torchserve[model], strict=True):
            r = c.post(f"/predictions/{model}", content=picture,
                       headers={"content-type": "image/png"})  # fmt: skip
            assert r.status_code == 200, r.text
            got = r.json()
            assert set(got) == set(expected)  # the same top-5 labels
            assert list(got.values()) == sorted(got.values(), reverse=True)
            for label, p in expected.items():
                assert abs(got[label] - p) <= ATOL, (label, got[label], p)
    if model == "tinycls":
        assert set(moved.torchserve[model][0]) <= set(LABELS)
    else:  # no index_to_name.json: both name classes by their index
        assert set(moved.torchserve[model][0]) <= {str(i) for i in range(6)}


def test_the_configured_batching_is_in_the_manifest(moved: Moved) -> None:
    described = {}
    for m in ("tinycls", "tinynet"):
        with moved.stack.management() as c:
            r = c.get(f"/models/{m}")
        assert r.status_code == 200, r.text
        described[m] = r.json()[0]
    assert (described["tinycls"]["batchSize"], described["tinycls"]["maxBatchDelay"]) == (4, 20)
    assert (described["tinynet"]["batchSize"], described["tinynet"]["maxBatchDelay"]) == (16, 5)
    # minWorkers 2 for tinycls; the other has the stack's count (the test's --workers 1)
    assert (described["tinycls"]["minWorkers"], described["tinynet"]["minWorkers"]) == (2, 1)
    by_mar = {m["mar"]: m for m in moved.report["models"]}
    assert by_mar["tinycls.mar"]["batch_size"] == 4
    assert by_mar["tinynet.mar"]["version"] == "2.0"


def test_the_addresses_and_limits_are_in_trustserve_yaml(
    moved: Moved, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [n for n in os.environ if n.startswith("TRUSTSERVE_")]:
        monkeypatch.delenv(name)  # tests/conftest.py turns gRPC off by the environment
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["config", "show", "--config", str(moved.out / "trustserve.yaml")]) == 0
    shown = {line.split()[0]: line.split()[1:] for line in printed.getvalue().splitlines()[1:]}
    source = str(moved.out / "trustserve.yaml")
    assert shown["listen.port"] == [str(moved.ports["inference"]), source]
    assert shown["listen.management_port"] == [str(moved.ports["management"]), source]
    assert shown["listen.metrics_port"] == [str(moved.ports["metrics"]), source]
    assert shown["listen.grpc_port"] == [str(moved.ports["grpc"]), source]
    assert shown["worker.per_model"] == ["1", source]
    assert shown["limits.max_queue"] == ["100", source]
    assert shown["worker.models"] == ["tinycls:1.0=2", source]
    assert shown["model_store"] == [str((moved.out / "models").resolve()), source]
    ignored = {e["key"]: e["why"] for e in moved.report["ignored"]}
    assert set(ignored) >= {
        "grpc_management_port",
        "number_of_netty_threads",
        "disable_token_authorization",
        "enable_model_api",
        "models.tinycls.1.0.maxWorkers",
        "models.tinycls.1.0.responseTimeout",
    }
    assert all(ignored.values())
