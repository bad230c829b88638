"""Serving an encrypted model: same answers as the plaintext one, and no plaintext on disk."""

from __future__ import annotations

import dataclasses
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from tests.support import RunningStack, start_stack
from trustserve import archive


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    root = tmp_path_factory.mktemp("encrypted")
    (root / "store").mkdir()
    (root / "tmp").mkdir()
    s = start_stack(root / "home", root / "store", env={"TMPDIR": str(root / "tmp")})
    yield s
    s.stop()


def encrypt(stack: RunningStack, src: Path, name: str) -> Path:
    """Encrypt ``src`` as a new version (each version gets its own, fresh key)."""
    dst = stack.store / name
    plain = archive.load(src)
    fresh = dataclasses.replace(plain.manifest, version=secrets.token_hex(4))
    src = stack.store.parent / f"plain-{fresh.version}.tsm"
    src.write_bytes(archive.pack(fresh, plain.payload))
    subprocess.run(
        [
            sys.executable, "-m", "trustserve.cli", "model", "encrypt", str(src), "-o", str(dst),
            "--kms", f"https://127.0.0.1:{stack.kms_port}", "--home", str(stack.home),
        ],
        check=True,
    )  # fmt: skip
    return dst


def register(stack: RunningStack, url: str) -> dict[str, object]:
    with stack.management() as m:
        r = m.post("/models", params={"url": url})
        assert r.status_code == 200, r.text
        return dict(r.json())


def weight_runs(onnx_path: Path, size: int = 32) -> list[bytes]:
    """Windows of the model's largest weight tensors: none may be found on disk."""
    model = onnx.load(str(onnx_path))
    big = sorted((numpy_helper.to_array(t).tobytes() for t in model.graph.initializer), key=len)[
        -3:
    ]
    return [w[i : i + size] for w in big for i in range(0, len(w) - size, 4096)]


def test_encrypted_digits_answers_like_the_plaintext_model_and_leaves_no_plaintext(
    stack: RunningStack, demo_store: dict[str, Path]
) -> None:
    enc = encrypt(stack, demo_store["digits"], "digits-encrypted.tsm")
    head = archive.read_header(enc)
    assert head.encrypted and head.encryption is not None and head.encryption["key_id"]
    register(stack, enc.name)
    stack.wait_model_ready("digits")

    x = np.random.default_rng().uniform(0, 16, (5, 64)).astype(np.float32)
    body = {
        "inputs": [
            {"name": "input", "datatype": "FP32", "shape": [5, 64], "data": x.ravel().tolist()}
        ]
    }
    with stack.client() as c:
        r = c.post("/v2/models/digits/infer", json=body)
    assert r.status_code == 200, r.text
    served = np.array(r.json()["outputs"][0]["data"], np.float32).reshape(5, 10)
    local = ort.InferenceSession(str(demo_store["onnx/digits"])).run(None, {"input": x})[0]
    np.testing.assert_allclose(served, local, rtol=1e-5, atol=1e-5)

    runs = weight_runs(demo_store["onnx/digits"])
    assert runs
    for place in (stack.store, stack.home, stack.store.parent / "tmp"):
        for f in place.rglob("*"):
            if f.is_file():
                data = f.read_bytes()
                assert not any(r in data for r in runs), f"model weight bytes found in {f}"


def test_tampered_or_truncated_archive_is_refused_and_nothing_is_served(
    stack: RunningStack, demo_store: dict[str, Path]
) -> None:
    """One flipped byte in the ciphertext: the worker refuses the archive, the model fails."""
    enc = encrypt(stack, demo_store["digits"], "digits-to-tamper.tsm")
    data = bytearray(enc.read_bytes())
    enc.unlink()
    data[-100] ^= 1
    (stack.store / "tampered.tsm").write_bytes(bytes(data))
    with stack.management() as m:
        m.delete("/models/digits")  # the first test's digits must not answer for this one
    register(stack, "tampered.tsm")
    deadline = time.monotonic() + 60
    with stack.management() as m:
        while time.monotonic() < deadline:
            failed = m.get("/models/digits").json()[0]["failed"]
            if failed:
                break
            time.sleep(0.2)
    assert failed and "cannot be served" in failed
    with stack.client() as c:
        r = c.post("/predictions/digits", json=[0] * 64)
    assert r.status_code == 503 and "cannot be served" in r.json()["error"]
    assert (
        "does not open" in stack.log.read_text()
        or "ArchiveError" in stack.log.read_text()
        or ("cannot serve" in stack.log.read_text())
    )
