"""Attack: the broker skews or floods the worker figures the metrics are made of.

Worker figures (queue wait, engine time, batch size, key refreshes, error codes)
reach the frontend inside each answer's ``OutcomeMeta``. In standard mode that
metadata is authenticated with the answer, but a job's ``enqueued_at`` is the
broker's clear bookkeeping: a broker that backdates it made the worker report a
queue wait of decades, which ruins every mean and quantile of
``trustserve_queue_seconds``. Now a worker's durations are capped at the request's
own latency (which contains them). In plaintext mode the broker can write the
metadata itself: an error code it makes up is counted as ``other``, never as a new
label (each label set is kept forever), and refresh results or durations that are
not what a worker sends are refused when the answer is read.

Everything is real and in process: the inference app, the embedded broker, a worker
loop running the tiny model with ONNX Runtime over the broker's Unix socket,
AES-GCM under a fresh broker key. Only the attacker, ``SkewingBroker``, is written
for the test.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from prometheus_client import generate_latest

from tests.frontend.inprocess import inference_app
from tests.support import tiny_manifest, tiny_onnx, write_tiny
from trustserve.broker.base import Broker, Job, JobSource, Outcome, OutcomeMeta
from trustserve.broker.embedded import EmbeddedBroker, SocketJobSource
from trustserve.broker.encrypted import DecryptingJobSource, EncryptingBroker
from trustserve.broker.wire import outcome_from
from trustserve.engines import load_engine
from trustserve.frontend.metrics import Metrics
from trustserve.frontend.registry import ModelRegistry
from trustserve.worker.loop import WorkerLoop

BODY = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}


class SkewingBroker(EmbeddedBroker):
    """The embedded broker, with an attacker rewriting jobs and answers as they pass."""

    def __init__(self) -> None:
        super().__init__()
        self.tamper_job: Callable[[Job], Job] = lambda j: j
        self.tamper: Callable[[Outcome], Outcome] = lambda o: o

    async def take(self, cid: int, queue: str, max_items: int, max_delay_s: float) -> list[Job]:
        return [self.tamper_job(j) for j in await super().take(cid, queue, max_items, max_delay_s)]

    def answer(self, cid: int, outcome: Outcome) -> None:
        super().answer(cid, self.tamper(outcome))


async def _frontend(
    tmp_path: Path, encrypted: bool
) -> AsyncIterator[tuple[SkewingBroker, httpx.AsyncClient, Metrics]]:
    store = tmp_path / "store"
    store.mkdir()
    write_tiny(store)
    registry = ModelRegistry(store)
    registry.register("tiny-1.tsm", 1)
    attacker = SkewingBroker()
    sock = tmp_path / "run" / "broker.sock"
    await attacker.serve_workers(sock)
    broker: Broker = attacker
    source: JobSource = await SocketJobSource.connect(sock, "tiny:1")
    if encrypted:
        key = AESGCM.generate_key(bit_length=256)
        broker, source = EncryptingBroker(attacker, key), DecryptingJobSource(source, key)
    manifest = tiny_manifest()
    engine = load_engine("onnxruntime", tiny_onnx(), manifest, 1)
    stop = asyncio.Event()
    running = asyncio.create_task(WorkerLoop(source, "tiny:1", manifest, engine).run(stop))
    metrics = Metrics()
    app = inference_app(registry, broker, metrics, 64 << 20)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://frontend"
    ) as http:
        yield attacker, http, metrics
    stop.set()
    await running
    await source.close()
    await attacker.close()


@pytest.fixture
async def standard(
    tmp_path: Path,
) -> AsyncIterator[tuple[SkewingBroker, httpx.AsyncClient, Metrics]]:
    async for parts in _frontend(tmp_path, encrypted=True):
        yield parts


@pytest.fixture
async def plaintext(
    tmp_path: Path,
) -> AsyncIterator[tuple[SkewingBroker, httpx.AsyncClient, Metrics]]:
    async for parts in _frontend(tmp_path, encrypted=False):
        yield parts


def _value(metrics: Metrics, sample: str) -> float:
    for line in generate_latest(metrics.registry).decode().splitlines():
        if line.startswith(sample + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{sample} not exported")


async def test_a_backdated_job_cannot_inflate_the_queue_wait(
    standard: tuple[SkewingBroker, httpx.AsyncClient, Metrics],
) -> None:
    attacker, http, metrics = standard
    attacker.tamper_job = lambda j: replace(j, enqueued_at=0.0)  # "queued since 1970"
    for _ in range(5):
        r = await http.post("/v2/models/tiny/infer", json=BODY)
        assert r.status_code == 200, r.text  # enqueued_at is bookkeeping: the answer stands
    series = '{model="tiny",version="1"}'
    waited = _value(metrics, f"trustserve_queue_seconds_sum{series}")
    latency = _value(metrics, f"trustserve_request_seconds_sum{series}")
    assert _value(metrics, f"trustserve_queue_seconds_count{series}") == 5
    assert 0 <= waited <= latency < 60  # uncapped, it was 5 x 56 years


async def test_made_up_error_codes_become_one_label(
    plaintext: tuple[SkewingBroker, httpx.AsyncClient, Metrics],
) -> None:
    attacker, http, metrics = plaintext
    codes = [f"c{secrets.token_hex(8)}" for _ in range(50)]
    pending = iter(codes)
    attacker.tamper = lambda o: Outcome(o.id, 400, b"forged", OutcomeMeta(next(pending)))
    for _ in codes:
        assert (await http.post("/v2/models/tiny/infer", json=BODY)).status_code == 400
    page = generate_latest(metrics.registry).decode()
    assert not any(code in page for code in codes)
    assert _value(metrics, 'trustserve_errors_total{code="other",model="tiny",version="1"}') == 50


@pytest.mark.parametrize(
    "meta",
    [
        {"key_refreshes": {secrets.token_hex(8): 1}},  # a result no worker reports
        {"key_refreshes": {"ok": -1}},
        {"key_refreshes": {"ok": True}},
        {"key_refreshes": {"ok": 1 << 40}},
        {"key_refreshes": ["ok"]},
        {"inference_ms": -5.0},
        {"queue_ms": -1},
        {"preprocess_ms": "1"},
        {"batch_first": 1},
        {"wide": "yes"},
    ],
)
def test_figures_no_worker_sends_are_refused(meta: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="metadata"):
        outcome_from({"id": "j", "status": 200, "meta": meta}, b"")
