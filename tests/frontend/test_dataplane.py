"""One data plane under REST and gRPC: both transports' requests take the same path object.

In process: the inference app over ``httpx.ASGITransport``, the gRPC servicer called
directly, the embedded broker, and a stand-in worker loop that answers the tiny model
(y = 2x + 1, s = the row sums) from each job as the broker contract says a worker reads it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from prometheus_client import generate_latest

from tests.support import tiny_expected, write_tiny
from trustserve.broker.base import Job, Outcome, OutcomeMeta
from trustserve.broker.embedded import EmbeddedBroker
from trustserve.frontend import grpc_service, inference
from trustserve.frontend.dataplane import DataPlane
from trustserve.frontend.grpc_service import GrpcInference
from trustserve.frontend.grpc_v2 import grpc_predict_v2_pb2 as pb
from trustserve.frontend.inference import InferenceApi
from trustserve.frontend.jobs import Jobs, MemoryJobStore
from trustserve.frontend.metrics import Metrics
from trustserve.frontend.registry import ModelRegistry
from trustserve.tensors import Tensor, encode_response, parse_request

X = np.arange(8, dtype=np.float32).reshape(2, 4)


@dataclass
class Frontend:
    rest: httpx.AsyncClient
    grpc: GrpcInference
    api: InferenceApi
    metrics: Metrics
    jobs: list[Job] = field(default_factory=list)  # what the worker was handed


async def stand_in_worker(broker: EmbeddedBroker, queue: str, seen: list[Job]) -> None:
    """Takes the tiny model's jobs and answers each as the request asked (outputs, binary)."""
    cid = broker.open_consumer(queue)
    while True:
        for job in await broker.take(cid, queue, 8, 0.0):
            seen.append(job)
            head = job.meta.header_length
            req = parse_request(job.payload, None if head is None else str(head))
            y, s = tiny_expected(req.inputs[0].data)
            outputs = [Tensor("y", "FP32", y.shape, y), Tensor("s", "FP32", s.shape, s)]
            wanted = {o.name: o.binary for o in req.outputs or []}
            if wanted:
                outputs = [t for t in outputs if t.name in wanted]
            binary = {t.name: wanted.get(t.name, req.binary_output_default) for t in outputs}
            answer = {"model_name": "tiny", "model_version": "1", "id": req.id}
            body, head_len = encode_response(answer, outputs, binary)
            broker.answer(cid, Outcome(job.id, 200, body, OutcomeMeta(header_length=head_len)))


@pytest.fixture
async def frontend(tmp_path: Path) -> AsyncIterator[Frontend]:
    write_tiny(tmp_path)
    registry = ModelRegistry(tmp_path)
    entry = registry.register("tiny-1.tsm", 1)
    broker, metrics = EmbeddedBroker(), Metrics()
    api = InferenceApi(
        DataPlane(registry, broker, metrics, timeout_s=30.0),
        max_body_bytes=64 << 20,
        jobs=Jobs(MemoryJobStore(), None),
    )
    transport = httpx.ASGITransport(app=api.app())
    rest = httpx.AsyncClient(transport=transport, base_url="http://frontend")
    front = Frontend(rest, GrpcInference(api.plane), api, metrics)
    worker = asyncio.create_task(stand_in_worker(broker, entry.queue, front.jobs))
    yield front
    worker.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await worker
    await rest.aclose()
    await broker.close()


def rest_request(x: np.ndarray) -> dict[str, Any]:
    return {"inputs": [{"name": "x", "datatype": "FP32", "shape": list(x.shape),
                        "data": x.ravel().tolist()}]}  # fmt: skip


def grpc_request(x: np.ndarray, *, raw: bool) -> pb.ModelInferRequest:
    req = pb.ModelInferRequest(model_name="tiny", id="g1")
    t = req.inputs.add(name="x", datatype="FP32", shape=list(x.shape))
    if raw:
        req.raw_input_contents.append(x.tobytes())
    else:
        t.contents.fp32_contents.extend(x.ravel().tolist())
    req.outputs.add(name="y")
    return req


def grpc_y(answer: pb.ModelInferResponse) -> np.ndarray:
    out = answer.outputs[0]
    assert out.name == "y"
    return np.frombuffer(answer.raw_output_contents[0], np.float32).reshape(tuple(out.shape))


def requests_counted(metrics: Metrics, api: str) -> float:
    page = generate_latest(metrics.registry).decode()
    prefix = f'trustserve_requests_total{{api="{api}",model="tiny",status="200",version="1"}} '
    return sum(float(line[len(prefix) :]) for line in page.splitlines() if line.startswith(prefix))


async def test_rest_and_grpc_requests_take_one_data_plane(
    frontend: Frontend, monkeypatch: pytest.MonkeyPatch
) -> None:
    plane = frontend.api.plane
    assert isinstance(plane, DataPlane) and frontend.grpc.plane is plane
    calls: list[str] = []
    infer = plane.infer

    async def recorded(api: str, *args: Any, **kwargs: Any) -> Any:
        calls.append(api)
        return await infer(api, *args, **kwargs)

    monkeypatch.setattr(plane, "infer", recorded)

    r = await frontend.rest.post("/v2/models/tiny/infer", json=rest_request(X))
    assert r.status_code == 200, r.text
    y_rest = next(o for o in r.json()["outputs"] if o["name"] == "y")
    answer = await frontend.grpc.model_infer(grpc_request(X, raw=False))

    assert calls == ["v2", "grpc"]
    expected = tiny_expected(X)[0]
    assert np.asarray(y_rest["data"], np.float32).reshape(2, 4).tolist() == expected.tolist()
    assert grpc_y(answer).tolist() == expected.tolist()
    assert answer.id == "g1" and answer.model_name == "tiny"
    # the worker was handed the same job both ways: the same tensor, the same kind
    kinds = {job.kind for job in frontend.jobs}
    sent = [
        parse_request(j.payload, str(j.meta.header_length)).inputs[0].data for j in frontend.jobs
    ]
    assert len(kinds) == 1 and all(x.tolist() == X.tolist() for x in sent)
    assert requests_counted(frontend.metrics, "v2") == 1
    assert requests_counted(frontend.metrics, "grpc") == 1


async def test_a_grpc_request_is_never_encoded_as_a_rest_body(
    frontend: Frontend, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert not hasattr(grpc_service, "v2_body")

    def no_rest_body(*args: object, **kwargs: object) -> None:
        raise AssertionError("a gRPC request was parsed as a REST body")

    monkeypatch.setattr(inference, "parse_request", no_rest_body)
    for raw in (True, False):
        answer = await frontend.grpc.model_infer(grpc_request(X, raw=raw))
        assert grpc_y(answer).tolist() == tiny_expected(X)[0].tolist()
    with pytest.raises(AssertionError, match="parsed as a REST body"):  # the REST path does
        await frontend.rest.post("/v2/models/tiny/infer", json=rest_request(X))


async def test_an_async_job_goes_the_same_way_and_is_counted_once(frontend: Frontend) -> None:
    r = await frontend.rest.post(
        "/v2/models/tiny/infer", json=rest_request(X), headers={"Prefer": "respond-async"}
    )
    assert r.status_code == 202, r.text
    location = r.headers["location"]
    for _ in range(2000):  # each poll yields to the job's task; bounded, no sleeping
        done = await frontend.rest.get(location)
        if done.status_code != 202:
            break
        await asyncio.sleep(0)
    assert done.status_code == 200, done.text
    assert len(frontend.jobs) == 1
    assert requests_counted(frontend.metrics, "v2") == 1
