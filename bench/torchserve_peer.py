"""TorchServe 0.12 as the peer: installed into its own venv, serving the same INT8 ONNX model.

TorchServe imports PyTorch, so its venv gets the local CPU build (torch==2.13.0);
trustserve's own environment never does. Java 17 runs the TorchServe frontend.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
VENV = HERE / ".torchserve-venv"
PACKAGES = [
    "torchserve==0.12.0",
    "torch-model-archiver==0.12.0",
    "torch==2.13.0",
    "pyyaml",
    "onnxruntime",
    "numpy",
]


def ensure_venv() -> Path:
    py = VENV / "bin" / "python"
    if not (VENV / ".installed").exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", *PACKAGES], check=True)
        (VENV / ".installed").touch()
    return VENV / "bin"


@contextmanager
def torchserve(
    onnx_model: Path,
    work: Path,
    port: int,
    threads: int,
    workers: int,
    handler: Path = HERE / "torchserve_handler.py",
) -> Iterator[str]:
    bin_dir = ensure_venv()
    shutil.rmtree(work, ignore_errors=True)
    store = work / "store"
    store.mkdir(parents=True)
    shutil.copy(onnx_model, work / "model.onnx")
    subprocess.run(
        [
            str(bin_dir / "torch-model-archiver"), "--model-name", "resnet50", "--version", "1.0",
            "--serialized-file", str(work / "model.onnx"),
            "--handler", str(handler),
            "--export-path", str(store), "--force",
        ],
        check=True,
    )  # fmt: skip
    (work / "config.properties").write_text(
        "\n".join(
            [
                f"inference_address=http://127.0.0.1:{port}",
                f"management_address=http://127.0.0.1:{port + 1}",
                f"metrics_address=http://127.0.0.1:{port + 2}",
                "disable_token_authorization=true",
                f"default_workers_per_model={workers}",
                "job_queue_size=1000",
                'models={"resnet50": {"1.0": {"marName": "resnet50.mar", '
                f'"minWorkers": {workers}, "maxWorkers": {workers}, "batchSize": 16, '
                '"maxBatchDelay": 5, "responseTimeout": 120}}}',
                "load_models=resnet50.mar",
            ]
        )
        + "\n"
    )
    env = {**os.environ, "BENCH_THREADS": str(threads), "OMP_NUM_THREADS": str(threads)}
    env["PATH"] = f"{bin_dir}:{env['PATH']}"
    log = (work / "torchserve.log").open("wb")
    proc = subprocess.Popen(
        [
            str(bin_dir / "torchserve"), "--start", "--foreground", "--ncs",
            "--model-store", str(store), "--ts-config", str(work / "config.properties"),
            "--disable-token-auth",
        ],
        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=work,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                models = httpx.get(f"http://127.0.0.1:{port + 1}/models/resnet50", timeout=2)
                if models.status_code == 200 and '"READY"' in models.text:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None:
                raise RuntimeError(f"torchserve exited: see {work / 'torchserve.log'}")
            time.sleep(1)
        else:
            raise RuntimeError(f"torchserve not ready: see {work / 'torchserve.log'}")
        yield url
    finally:
        subprocess.run([str(bin_dir / "torchserve"), "--stop"], env=env, check=False)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
