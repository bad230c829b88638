"""Shared test helpers: free ports, a tiny model, and a real trustserve stack in a subprocess."""

from __future__ import annotations

import asyncio
import fcntl
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import onnx
from onnx import TensorProto, helper

from trustserve import archive
from trustserve.broker.base import Broker
from trustserve.files import write_atomic

# Ports handed out by free_port(), by any test process on this machine (one file each).
PORT_RESERVATIONS = Path(tempfile.gettempdir()) / "trustserve-test-ports"
PORT_RESERVATION_S = 600


def free_port() -> int:
    """A TCP port nothing listens on, that no test process gets again for 10 minutes.

    A port is picked now and bound later by another process (a stack, a redis-server),
    seconds later under load. In between, the kernel's ephemeral range would lend it to any
    process's outgoing connection or ``bind(0)``, so the port comes from below that range,
    and a reservation file shared by every test process (worktrees and parallel sessions
    alike) keeps it from being handed out twice, even while its server restarts.
    """
    low, high = _unassigned_port_range()
    PORT_RESERVATIONS.mkdir(exist_ok=True)
    with (PORT_RESERVATIONS / ".lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for _ in range(1000):
            port = random.randrange(low, high)
            reservation = PORT_RESERVATIONS / str(port)
            try:
                if time.time() - reservation.stat().st_mtime < PORT_RESERVATION_S:
                    continue
            except FileNotFoundError:
                pass
            if _bindable(port):
                reservation.write_text(f"{os.getpid()}\n")
                return port
    raise RuntimeError(f"no free port in {low}..{high} (see {PORT_RESERVATIONS})")


def _unassigned_port_range() -> tuple[int, int]:
    """Ports the kernel never assigns by itself: below (or above) its ephemeral range."""
    try:
        text = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text()
        first, last = (int(v) for v in text.split())
    except (OSError, ValueError):
        first, last = 32768, 60999
    if first - 10_000 >= 5_000:
        return 10_000, first
    return last + 1, 65_536


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
        return True


def tiny_onnx() -> bytes:
    """y = 2x + 1 and s = sum(x) over a row: small enough to test the serving path fast."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])
    s = helper.make_tensor_value_info("s", TensorProto.FLOAT, ["N", 1])
    two = helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])
    one = helper.make_tensor("one", TensorProto.FLOAT, [], [1.0])
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [1])
    nodes = [
        helper.make_node("Mul", ["x", "two"], ["x2"]),
        helper.make_node("Add", ["x2", "one"], ["y"]),
        helper.make_node("ReduceSum", ["x", "axes"], ["s"], keepdims=1),
    ]
    graph = helper.make_graph(nodes, "tiny", [x], [y, s], initializer=[two, one, axes])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def tiny_manifest(name: str = "tiny", version: str = "1", **kw: object) -> archive.Manifest:
    raw = {
        "name": name,
        "version": version,
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
        "outputs": [
            {"name": "y", "datatype": "FP32", "shape": [-1, 4]},
            {"name": "s", "datatype": "FP32", "shape": [-1, 1]},
        ],
        "max_batch_size": 8,
        "max_batch_delay_ms": 2,
        **kw,
    }
    return archive.Manifest.from_json(raw)


def write_tiny(
    store: Path, name: str = "tiny", version: str = "1", home: Path | None = None
) -> Path:
    """A plaintext tiny archive; with ``home``, encrypted by that home's development KMS."""
    path = store / f"{name}-{version}.tsm"
    write_atomic(path, archive.pack(tiny_manifest(name, version), tiny_onnx()))
    if home is not None:
        encrypt_for_dev_kms(home, path)
    return path


def encrypt_for_dev_kms(home: Path, *paths: Path) -> None:
    """Encrypt plaintext archives in place under ``home``'s development KMS, as ``up`` does:
    a stack with a KMS serves encrypted archives only."""
    from trustserve.kms.embedded import development_kms
    from trustserve.kms.tools import encrypt_model_file

    kms = development_kms(home)
    for path in paths:
        if not archive.read_header(path).encrypted:
            encrypt_model_file(path, path, kms)


def tiny_expected(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return 2 * x + 1, x.sum(axis=1, keepdims=True)


@dataclass
class RunningStack:
    process: subprocess.Popen[bytes]
    home: Path
    store: Path
    port: int
    management_port: int
    metrics_port: int
    log: Path
    kms_port: int
    grpc_port: int = 0  # 0: gRPC off

    @property
    def ca(self) -> Path:
        return self.home / "tls" / "ca.pem"

    @property
    def url(self) -> str:
        return f"https://localhost:{self.port}"

    @property
    def kms_url(self) -> str:
        return f"https://127.0.0.1:{self.kms_port}"

    @property
    def kms_identity(self) -> str:
        """The embedded KMS's identity public key (base64), as its own parts are told it."""
        from trustserve.encoding import b64
        from trustserve.kms.state import KmsState

        return b64(KmsState.public_identity(self.home / "kms" / "state.json"))

    @property
    def management_url(self) -> str:
        return f"https://127.0.0.1:{self.management_port}"

    @property
    def token(self) -> str:
        return (self.home / "management.token").read_text().strip()

    def client(self, **kw: object) -> httpx.Client:
        return httpx.Client(base_url=self.url, verify=str(self.ca), timeout=60, **kw)  # type: ignore[arg-type]

    def management(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.management_url,
            verify=str(self.ca),
            timeout=60,
            headers={"Authorization": f"Bearer {self.token}"},
        )

    def rotate_serving_key(self) -> None:
        """Rotate the KMS's serving key (the embedded KMS's admin token)."""
        token = (self.home / "kms" / "admin.token").read_text().strip()
        r = httpx.post(
            f"https://127.0.0.1:{self.kms_port}/v1/keys/serving/rotate",
            headers={"Authorization": f"Bearer {token}"},
            verify=str(self.ca),
        )
        assert r.status_code == 200, r.text

    def wait_model_ready(self, model: str, version: str | None = None, timeout: float = 60) -> None:
        path = f"/v2/models/{model}" + (f"/versions/{version}" if version else "") + "/ready"
        deadline = time.monotonic() + timeout
        with self.client() as c:
            while time.monotonic() < deadline:
                if c.get(path).status_code == 200:
                    return
                time.sleep(0.2)
        raise AssertionError(f"{model} never became ready:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_stack(
    home: Path,
    store: Path,
    *extra: str,
    command: str = "serve",
    dev: bool = True,
    ready_timeout: float = 120,
    env: dict[str, str] | None = None,
) -> RunningStack:
    """``dev``: the embedded KMS with simulated attestation (broker payloads encrypted);
    plaintext archives in the store are encrypted under it first (it serves no other)."""
    ports = [free_port() for _ in range(5)]
    log = home / "stack.log"
    home.mkdir(parents=True, exist_ok=True)
    if dev:
        encrypt_for_dev_kms(home, *sorted(store.glob("*.tsm")))
    args = [
        sys.executable,
        "-m",
        "trustserve.cli",
        command,
        "--home",
        str(home),
        "--model-store",
        str(store),
        "--port",
        str(ports[0]),
        "--management-port",
        str(ports[1]),
        "--metrics-port",
        str(ports[2]),
        *([] if "--grpc-port" in extra else ["--grpc-port", str(ports[4])]),
        "--threads",
        "1",
        *([] if "--workers" in extra else ["--workers", "1"]),
        *(["--dev", "--kms-port", str(ports[3])] if dev else []),
        *extra,
    ]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            args, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )
    grpc_port = int(extra[extra.index("--grpc-port") + 1]) if "--grpc-port" in extra else ports[4]
    stack = RunningStack(proc, home, store, *ports[:3], log, ports[3], grpc_port)
    # /v2/health/ready is 200 once any model is served (503 with none): wait for each one
    models = {archive.read_header(p).manifest.name for p in store.glob("*.tsm")}
    deadline = time.monotonic() + ready_timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"stack exited with {proc.returncode}:\n{log.read_text()}")
        try:
            with stack.client() as c:
                health = "/v2/health/ready" if models else "/v2/health/live"  # none to serve
                if c.get(health).status_code == 200 and all(
                    c.get(f"/v2/models/{m}/ready").status_code == 200 for m in models
                ):
                    return stack
        except (httpx.TransportError, OSError):
            pass
        time.sleep(0.3)
    stack.stop()
    raise RuntimeError(f"stack not ready in {ready_timeout}s:\n{log.read_text()}")


def tiny_image_onnx() -> bytes:
    """Mean colour of an 8x8 RGB image: a classifier whose answer a test can predict."""
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 8, 8])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])
    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [0, 3])
    nodes = [
        helper.make_node("GlobalAveragePool", ["input"], ["pooled"]),
        helper.make_node("Reshape", ["pooled", "shape"], ["mean"]),
        helper.make_node("Mul", ["mean", "ten"], ["logits"]),
    ]
    ten = helper.make_tensor("ten", TensorProto.FLOAT, [], [10.0])
    graph = helper.make_graph(nodes, "colour", [x], [y], initializer=[shape, ten])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def write_colour(store: Path) -> Path:
    manifest = archive.Manifest.from_json(
        {
            "name": "colour",
            "version": "1",
            "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 3, 8, 8]}],
            "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, 3]}],
            "max_batch_size": 4,
            "max_batch_delay_ms": 2,
            "preprocessing": {"resize": 8, "crop": 8, "mean": [0, 0, 0], "std": [1, 1, 1]},
            "labels": ["red", "green", "blue"],
        }
    )
    path = store / "colour.tsm"
    write_atomic(path, archive.pack(manifest, tiny_image_onnx()))
    return path


def png(colour: tuple[int, int, int], size: int = 32, fmt: str = "PNG") -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buf, format=fmt)
    return buf.getvalue()


def worker_pids(stack_pid: int) -> list[int]:
    """The stack's worker processes (its children running trustserve.worker)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == stack_pid and b"trustserve.worker" in cmdline:
            pids.append(int(entry.name))
    return pids


def alive(pid: int) -> bool:
    """Running (not gone, not a zombie waiting to be reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_http(url: str, ca: Path, proc: subprocess.Popen[bytes], timeout: float = 90) -> None:
    """Until ``url`` answers 200 over TLS checked against ``ca``; fails if ``proc`` exits."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url, verify=str(ca), timeout=5).status_code == 200:
                return
        except (httpx.TransportError, OSError):
            pass
        assert proc.poll() is None, f"exited with {proc.returncode} before {url} answered"
        assert time.monotonic() < deadline, f"{url} not 200 after {timeout} s"
        time.sleep(0.2)


async def wait_for_worker(
    broker: Broker, queue: str, proc: subprocess.Popen[bytes], timeout: float = 180
) -> None:
    """Until a worker takes from ``queue`` (its start-up may be slow on a loaded machine), so
    a job's own deadline measures serving, not start-up; fails at once if ``proc`` exits."""
    deadline = time.monotonic() + timeout
    while not await broker.consumers(queue):
        assert proc.poll() is None, f"the worker exited with {proc.returncode} before it took"
        assert time.monotonic() < deadline, f"no worker took from {queue} in {timeout} s"
        await asyncio.sleep(0.05)
