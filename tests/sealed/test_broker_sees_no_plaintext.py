"""Everything the broker holds, in both modes (and for OHTTP requests), is ciphertext.

The test plays the frontend in-process (the same classes `trustserve serve` wires:
EncryptingBroker over the embedded broker, keys released by the stack's KMS) and
runs a real worker process against it; the broker records every payload it is
handed in either direction, and the test searches them for the tensors.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.support import RunningStack, wait_for_worker
from trustserve.attestation import make_provider
from trustserve.broker.base import Job, JobKind, JobMeta, Outcome
from trustserve.broker.embedded import EmbeddedBroker
from trustserve.broker.encrypted import EncryptingBroker
from trustserve.client.sdk import prepare
from trustserve.client.verify import ClientPolicy, verify
from trustserve.crypto import bhttp
from trustserve.crypto.sealing import open_response
from trustserve.frontend.keys import FrontendKeys
from trustserve.keyrelease.client import KmsClient
from trustserve.keyrelease.trust import KmsTrust
from trustserve.tensors import Tensor, encode_binary, parse_response


class RecordingBroker(EmbeddedBroker):
    def __init__(self) -> None:
        super().__init__()
        self.held: list[bytes] = []

    async def submit(self, job: Job) -> Outcome:
        self.held.append(job.payload)
        return await super().submit(job)

    def answer(self, cid: int, outcome: Outcome) -> None:
        self.held.append(outcome.payload)
        super().answer(cid, outcome)


def runs(data: bytes, size: int = 16) -> list[bytes]:
    """Every 16-byte window of ``data`` at a stride of 8: none may appear in the broker."""
    return [data[i : i + size] for i in range(0, len(data) - size + 1, 8)]


@pytest.fixture
def worker(tiny_stack: RunningStack, tmp_path: Path) -> Iterator[Path]:
    sock = tmp_path / "run" / "broker.sock"
    yield sock


async def test_broker_holds_only_ciphertext(tiny_stack: RunningStack, worker: Path) -> None:
    kms_url = f"https://127.0.0.1:{tiny_stack.kms_port}"
    trust = KmsTrust.from_options(tiny_stack.kms_identity, None)
    keys = FrontendKeys(
        KmsClient(kms_url, ca_file=tiny_stack.ca, trust=trust),
        make_provider("sim", tiny_stack.home),
    )
    recording = RecordingBroker()
    await recording.serve_workers(worker)
    broker = EncryptingBroker(recording, await keys.broker_key())
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "trustserve.worker",
            "--archive", str(tiny_stack.store / "tiny-1.tsm"),
            "--broker", f"unix:{worker}",
            "--kms", kms_url,
            "--kms-identity", tiny_stack.kms_identity,
            "--home", str(tiny_stack.home),
            "--threads", "1",
        ]
    )  # fmt: skip
    try:
        await wait_for_worker(recording, "tiny:1", proc)
        rng = np.random.default_rng()
        x_standard = rng.uniform(1e3, 1e4, (4, 4)).astype(np.float32)
        x_sealed = rng.uniform(1e3, 1e4, (4, 4)).astype(np.float32)

        body, hlen = encode_binary({}, "inputs", [Tensor("x", "FP32", (4, 4), x_standard)])
        meta = JobMeta(header_length=hlen)
        job = Job(uuid.uuid4().hex, "tiny:1", JobKind.V2, body, time.time() + 60, meta)
        outcome = await broker.submit(job)
        _, outputs = parse_response(outcome.payload, outcome.meta.header_length)
        y_standard = {t.name: t.data for t in outputs}["y"]
        np.testing.assert_allclose(y_standard, 2 * x_standard + 1)

        target = verify(await keys.bundle(), ClientPolicy.development(tiny_stack.home))
        p = prepare("tiny", None, {"x": x_sealed}, None, target)
        meta = JobMeta(key_id=target.key_id, version="1")
        outcome = await broker.submit(
            Job(uuid.uuid4().hex, "tiny:1", JobKind.SEALED, p.body, time.time() + 60, meta)
        )
        assert p.reply is not None and p.route is not None
        answer = open_response(p.reply, p.route, outcome.payload)
        _, outputs = parse_response(answer.body, answer.header_length)
        y_sealed = {t.name: t.data for t in outputs}["y"]
        np.testing.assert_allclose(y_sealed, 2 * x_sealed + 1)

        x_ohttp = rng.uniform(1e3, 1e4, (4, 4)).astype(np.float32)
        p = prepare("tiny", None, {"x": x_ohttp}, None, target, target.ohttp_config)
        outcome = await broker.submit(
            Job(uuid.uuid4().hex, "tiny:1", JobKind.OHTTP, p.body, time.time() + 60, meta)
        )
        assert p.ohttp is not None and outcome.meta.sealed
        inner = bhttp.decode_response(p.ohttp.open_response(outcome.payload))
        _, outputs = parse_response(
            inner.body, int(inner.header("inference-header-content-length") or 0)
        )
        y_ohttp = {t.name: t.data for t in outputs}["y"]
        np.testing.assert_allclose(y_ohttp, 2 * x_ohttp + 1)

        held = b"\n".join(recording.held)
        assert len(recording.held) == 6  # three jobs in, three outcomes back
        for secret in (x_standard, y_standard, x_sealed, y_sealed, x_ohttp, y_ohttp):
            raw = np.ascontiguousarray(secret).tobytes()
            assert not [r for r in runs(raw) if r in held], "plaintext tensor bytes in the broker"
        assert b'"inputs"' not in held and b'"outputs"' not in held
    finally:
        proc.terminate()
        await asyncio.to_thread(proc.wait, 20)
        await recording.close()
