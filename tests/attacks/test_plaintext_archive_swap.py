"""Attack: whoever can write the (untrusted) model store swaps an encrypted archive for a
plaintext one with the same name and version, hoping the stack serves their model.

A real stack (embedded KMS, simulated attestation, real worker processes): after
the swap the worker refuses the plaintext archive before it asks the KMS for
anything, exits "unservable", and the model answers 503; the KMS audit log shows
that nothing was released (nor even asked for) after the swap.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import RunningStack, start_stack, tiny_manifest, tiny_onnx, write_tiny
from trustserve import archive
from trustserve.files import write_atomic


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[RunningStack]:
    store = tmp_path / "store"
    store.mkdir()
    write_tiny(store)  # encrypted under the stack's KMS by start_stack
    s = start_stack(tmp_path / "home", store)
    yield s
    s.stop()


def _audit(stack: RunningStack) -> list[dict[str, object]]:
    lines = (stack.home / "kms" / "audit.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def _wait_failed(stack: RunningStack) -> str:
    deadline = time.monotonic() + 60
    with stack.management() as m:
        while time.monotonic() < deadline:
            failed = m.get("/models/tiny").json()[0]["failed"]
            if failed:
                return str(failed)
            time.sleep(0.2)
    raise AssertionError(f"the swapped model never failed:\n{stack.log.read_text()[-3000:]}")


def test_a_plaintext_archive_swapped_into_the_store_is_refused_and_nothing_released(
    stack: RunningStack,
) -> None:
    path = stack.store / "tiny-1.tsm"
    assert archive.read_header(path).encrypted
    stack.wait_model_ready("tiny")
    with stack.client() as c:
        body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1] * 4}]}
        assert c.post("/v2/models/tiny/infer", json=body).status_code == 200

    write_atomic(path, archive.pack(tiny_manifest(), tiny_onnx()))  # the attacker's model
    seen = len(_audit(stack))
    with stack.management() as m:
        assert m.delete("/models/tiny").status_code == 200
        r = m.post("/models", params={"url": "tiny-1.tsm", "initial_workers": "1"})
        assert r.status_code == 200, r.text
    assert "cannot be served" in _wait_failed(stack)
    with stack.client() as c:
        r = c.post("/v2/models/tiny/infer", json=body)
    assert r.status_code == 503 and "cannot be served" in r.json()["error"]
    assert "the archive is not encrypted" in stack.log.read_text()
    after = _audit(stack)[seen:]
    assert not [e for e in after if e["event"] in ("release", "refusal", "release-failed")]
