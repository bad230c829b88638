"""Attack: the untrusted broker (or, in sealed mode, the frontend) forges or changes answers.

Issue 11 item 10: an outcome's status and metadata travelled in the clear next
to its sealed payload, so a broker could inject an error reply, flip a status
or change ``header_length``, and the frontend acted on it. Now, in standard
mode, status and metadata are inside the broker-key AEAD and the frontend
answers 502 ``broker_tampered`` (never the forged content); a sealed answer
carries its status inside the response-key AEAD and the SDK refuses one whose
status was changed. The broker's own failure notice stays clear, and all it can
say is "failed".

Everything here is real and in process: the frontend's ASGI app, the embedded
broker with a real worker loop (ONNX Runtime on the tiny model) reached over its
Unix socket, AES-GCM under a fresh broker key. Only the attacker is written for
the test: ``ForgingBroker`` rewrites what passes through it.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from pathlib import Path

import httpx
import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tests.frontend.inprocess import inference_app
from tests.support import tiny_manifest, tiny_onnx, write_tiny
from trustserve.broker.base import Job, JobKind, JobMeta, Outcome, OutcomeMeta
from trustserve.broker.embedded import EmbeddedBroker, SocketJobSource
from trustserve.broker.encrypted import DecryptingJobSource, EncryptingBroker
from trustserve.client.sdk import Prepared, ServerError, read_answer
from trustserve.crypto.keys import ServingKey, ServingKeySet
from trustserve.crypto.sealing import CONTENT_TYPE, Route, seal_request
from trustserve.engines import load_engine
from trustserve.errors import BrokerTampered
from trustserve.frontend.inference import forward
from trustserve.frontend.metrics import Metrics
from trustserve.frontend.registry import ModelRegistry
from trustserve.tensors import Tensor, encode_binary
from trustserve.worker.keys import KeyRing
from trustserve.worker.loop import WorkerLoop
from trustserve.worker.replay import ReplayGuard, SqliteNonceStore
from trustserve.worker.sealed import SealedReader

Tamper = Callable[[Outcome], Outcome]
JobTamper = Callable[[Job], Job]


class ForgingBroker(EmbeddedBroker):
    """The embedded broker, with an attacker rewriting outcomes and jobs as they pass."""

    def __init__(self) -> None:
        super().__init__()
        self.tamper: Tamper | None = None
        self.tamper_job: JobTamper | None = None

    def answer(self, cid: int, outcome: Outcome) -> None:
        super().answer(cid, self.tamper(outcome) if self.tamper else outcome)

    async def take(self, cid: int, queue: str, max_items: int, max_delay_s: float) -> list[Job]:
        jobs = await super().take(cid, queue, max_items, max_delay_s)
        return [self.tamper_job(j) for j in jobs] if self.tamper_job else jobs


@dataclass
class Setup:
    forging: ForgingBroker
    http: httpx.AsyncClient
    broker: EncryptingBroker
    serving: ServingKey


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[Setup]:
    store = tmp_path / "store"
    store.mkdir()
    write_tiny(store)
    registry = ModelRegistry(store)
    registry.register("tiny-1.tsm", 1)
    key = AESGCM.generate_key(bit_length=256)
    forging = ForgingBroker()
    sock = tmp_path / "run" / "broker.sock"
    await forging.serve_workers(sock)
    broker = EncryptingBroker(forging, key)
    serving = ServingKey.generate(time.time() + 3600)
    ring = KeyRing(None, None)
    ring.serving = ServingKeySet((serving,))
    manifest = tiny_manifest()
    guard = ReplayGuard(SqliteNonceStore(tmp_path / "nonces.db"), 300)
    source = DecryptingJobSource(await SocketJobSource.connect(sock, "tiny:1"), key)
    engine = load_engine("onnxruntime", tiny_onnx(), manifest, 1)
    worker = WorkerLoop(
        source, "tiny:1", manifest, engine, None, SealedReader(ring, guard, manifest)
    )
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    app = inference_app(registry, broker, Metrics(), 64 << 20)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://frontend") as http:
        yield Setup(forging, http, broker, serving)
    stop.set()
    await running
    await source.close()
    await forging.close()


BODY = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}


async def infer(setup: Setup) -> httpx.Response:
    return await setup.http.post("/v2/models/tiny/infer", json=BODY)


def assert_refused(r: httpx.Response) -> None:
    assert r.status_code == 502, r.text
    assert r.json()["code"] == "broker_tampered"
    assert b"forged" not in r.content


async def test_an_honest_broker_changes_nothing(setup: Setup) -> None:
    r = await infer(setup)
    assert r.status_code == 200
    assert r.json()["outputs"][0]["data"] == [3, 5, 7, 9]


async def test_an_injected_error_is_refused(setup: Setup) -> None:
    """The broker answers in the worker's place: a clear error that blames the input."""
    setup.forging.tamper = lambda o: Outcome(o.id, 400, b"forged: your input is wrong")
    assert_refused(await infer(setup))


@pytest.mark.parametrize("status", [400, 409, 500, 503])
async def test_a_flipped_status_is_refused(setup: Setup, status: int) -> None:
    setup.forging.tamper = lambda o: replace(o, status=status)
    assert_refused(await infer(setup))


async def test_a_changed_header_length_is_refused(setup: Setup) -> None:
    """Binary answer asked for; the broker says its JSON header ends elsewhere."""
    setup.forging.tamper = lambda o: replace(o, meta=OutcomeMeta(header_length=5))
    body = {**BODY, "parameters": {"binary_data_output": True}}
    assert_refused(await setup.http.post("/v2/models/tiny/infer", json=body))


async def test_an_error_answer_turned_into_a_success_is_refused(setup: Setup) -> None:
    """A genuine 400 from the worker (a TorchServe body that is not JSON), marked 200."""
    genuine = await setup.http.post("/predictions/tiny", content=b"not json")
    assert genuine.status_code == 400 and genuine.json()["code"] == "invalid_input"
    setup.forging.tamper = lambda o: replace(o, status=200)
    r = await setup.http.post("/predictions/tiny", content=b"not json")
    assert r.status_code == 502 and r.json()["code"] == "broker_tampered"


async def test_changed_job_metadata_is_refused_by_the_worker(setup: Setup) -> None:
    """The broker changes how the worker is told to read the request."""
    setup.forging.tamper_job = lambda j: replace(j, meta=JobMeta(header_length=10))
    assert_refused(await infer(setup))


async def test_a_job_moved_to_another_kind_is_refused_by_the_worker(setup: Setup) -> None:
    setup.forging.tamper_job = lambda j: replace(j, kind=JobKind.TORCHSERVE)
    assert_refused(await infer(setup))


@pytest.mark.parametrize("status", [200, 400])
async def test_the_brokers_own_notice_can_only_say_failed(setup: Setup, status: int) -> None:
    """Marked as the broker's failure notice, a genuine answer or a forged one is one fixed
    500 'failed' notice: never a result, never the broker's text."""
    setup.forging.tamper = lambda o: Outcome(
        o.id, status, b"forged result", OutcomeMeta(code="broker_failure")
    )
    r = await infer(setup)
    assert r.status_code == 500 and r.json()["code"] == "broker_failure"
    assert b"forged" not in r.content and "failed" in r.json()["error"]


# -- sealed answers: the frontend is the attacker, the SDK must refuse --------------------


async def sealed_answer(setup: Setup, x: np.ndarray) -> tuple[Prepared, httpx.Response]:
    """A sealed request through broker and worker, and the response an honest frontend sends."""
    route = Route("tiny", "1", setup.serving.key_id)
    body, hlen = encode_binary(
        {"parameters": {"binary_data_output": True}},
        "inputs",
        [Tensor("x", "FP32", tuple(x.shape), x)],
    )
    sealed, reply = seal_request(setup.serving.public_key, route, body, hlen)
    meta = JobMeta(key_id=route.key_id, version=route.version)
    job = Job(uuid.uuid4().hex, "tiny:1", JobKind.SEALED, sealed, time.time() + 30, meta)
    honest = forward(JobKind.SEALED, await setup.broker.submit(job))
    response = httpx.Response(
        honest.status_code, headers=dict(honest.headers), content=bytes(honest.body)
    )
    return Prepared("/v2/models/tiny/infer", sealed, {}, route, reply), response


def as_sent(response: httpx.Response, status: int) -> httpx.Response:
    return httpx.Response(status, headers=response.headers, content=response.content)


async def test_a_genuine_sealed_answer_opens(setup: Setup) -> None:
    p, response = await sealed_answer(setup, np.ones((1, 4), np.float32))
    assert response.status_code == 200
    np.testing.assert_array_equal(read_answer(p, response)["y"], [[3, 3, 3, 3]])


@pytest.mark.parametrize("status", [400, 409, 500, 503])
async def test_a_sealed_answer_with_a_flipped_status_is_refused(setup: Setup, status: int) -> None:
    p, response = await sealed_answer(setup, np.ones((1, 4), np.float32))
    with pytest.raises(BrokerTampered):
        read_answer(p, as_sent(response, status))


async def test_a_sealed_error_is_authenticated_and_cannot_become_a_success(setup: Setup) -> None:
    """Wrong input shape inside the sealed request: the worker seals its 400 to the client."""
    p, response = await sealed_answer(setup, np.ones((1, 3), np.float32))
    assert response.status_code == 400
    with pytest.raises(ServerError) as refused:
        read_answer(p, response)
    assert refused.value.sealed and refused.value.code == "invalid_input"
    with pytest.raises(BrokerTampered):
        read_answer(p, as_sent(response, 200))


async def test_a_forged_clear_answer_to_a_sealed_request_is_refused(setup: Setup) -> None:
    p, _ = await sealed_answer(setup, np.ones((1, 4), np.float32))
    forged = {"outputs": [{"name": "y", "datatype": "FP32", "shape": [1, 4], "data": [0] * 4}]}
    with pytest.raises(BrokerTampered):
        read_answer(p, httpx.Response(200, json=forged))
    with pytest.raises(BrokerTampered):
        read_answer(
            p, httpx.Response(200, headers={"content-type": CONTENT_TYPE}, content=b"x" * 64)
        )


async def test_a_clear_error_to_a_sealed_request_is_marked_unauthenticated(setup: Setup) -> None:
    """The middle can always refuse service; the SDK says the refusal is not the worker's."""
    p, _ = await sealed_answer(setup, np.ones((1, 4), np.float32))
    with pytest.raises(ServerError) as refused:
        read_answer(p, httpx.Response(400, json={"error": "forged", "code": "invalid_input"}))
    assert not refused.value.sealed


# -- sealed jobs: bound to their job under the broker key, not encrypted twice ------------


def sealed_job(setup: Setup, x: np.ndarray) -> tuple[Job, Prepared]:
    """A sealed request for ``tiny`` as the frontend hands it to the broker."""
    route = Route("tiny", "1", setup.serving.key_id)
    body, hlen = encode_binary({}, "inputs", [Tensor("x", "FP32", tuple(x.shape), x)])
    sealed, reply = seal_request(setup.serving.public_key, route, body, hlen)
    meta = JobMeta(key_id=route.key_id, version=route.version)
    job = Job(uuid.uuid4().hex, "tiny:1", JobKind.SEALED, sealed, time.time() + 30, meta)
    return job, Prepared("/v2/models/tiny/infer", sealed, {}, route, reply)


async def status_of(setup: Setup, job: Job) -> tuple[int, str | None]:
    """What the frontend makes of the answer: (status, code); BrokerTampered is its 502."""
    try:
        outcome = await setup.broker.submit(job)
    except BrokerTampered as exc:
        return exc.status, exc.code
    return outcome.status, outcome.meta.code


async def sealed_status(setup: Setup, job: Job) -> tuple[int, str | None]:
    """The same sealed request sent again, honestly, as a new job."""
    return await status_of(setup, replace(job, id=uuid.uuid4().hex))


async def test_a_sealed_payload_moved_to_another_job_is_refused_and_not_consumed(
    setup: Setup,
) -> None:
    """The broker takes the first sealed job's payload (leaving it empty) and hands it to the
    worker as the second job's. The worker opens neither: both are refused 502, and both
    clients' requests, sent again, are still unused (their nonces were never spent)."""
    stolen: list[bytes] = []

    def move(job: Job) -> Job:
        if not stolen:
            stolen.append(job.payload)
            return replace(job, payload=b"")
        return replace(job, payload=stolen[0])

    a, _ = sealed_job(setup, np.ones((1, 4), np.float32))
    b, _ = sealed_job(setup, np.full((1, 4), 2, np.float32))
    setup.forging.tamper_job = move
    assert await status_of(setup, a) == (502, "broker_tampered")
    assert await status_of(setup, b) == (502, "broker_tampered")
    setup.forging.tamper_job = None
    assert await sealed_status(setup, a) == (200, None)
    assert await sealed_status(setup, b) == (200, None)


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda j: replace(j, meta=replace(j.meta, version="2")), id="version"),
        pytest.param(lambda j: replace(j, meta=replace(j.meta, key_id="other")), id="key-id"),
        pytest.param(lambda j: replace(j, kind=JobKind.V2), id="kind-v2"),
        pytest.param(lambda j: replace(j, kind=JobKind.TORCHSERVE), id="kind-torchserve"),
        pytest.param(lambda j: replace(j, queue="tiny:2"), id="queue"),
        pytest.param(
            lambda j: replace(j, payload=j.payload[:-1] + bytes([j.payload[-1] ^ 1])),
            id="last-byte",
        ),
        pytest.param(lambda j: replace(j, payload=j.payload[:-16]), id="truncated"),
    ],
)
async def test_a_changed_sealed_job_is_refused_by_the_worker(
    setup: Setup, tamper: JobTamper
) -> None:
    """How the worker reads a sealed job (kind, key id, version, queue) and every byte of
    its payload are bound to the job under the broker key: 502, never opened."""
    job, _ = sealed_job(setup, np.ones((1, 4), np.float32))
    setup.forging.tamper_job = tamper
    assert await status_of(setup, job) == (502, "broker_tampered")
    setup.forging.tamper_job = None
    assert await sealed_status(setup, job) == (200, None)  # the request was not consumed


async def test_a_sealed_job_from_outside_the_frontend_is_refused(setup: Setup) -> None:
    """Whoever can write to the broker but holds no broker key (a Redis user, say) queues a
    client's sealed request it copied: the worker refuses it unopened."""
    job, _ = sealed_job(setup, np.ones((1, 4), np.float32))
    outcome = await setup.forging.submit(job)  # straight into the broker, no broker key
    assert (outcome.status, outcome.meta.code) != (200, None)
    assert await sealed_status(setup, job) == (200, None)
