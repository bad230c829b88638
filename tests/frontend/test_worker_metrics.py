"""Worker figures reach the frontend's /metrics from real worker processes: over the
embedded broker and over a real Redis (TLS, ACL), in standard mode (the figures ride
inside the broker-key AEAD with each answer), with the workers refreshing their
serving keys every second from the embedded KMS."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.broker.redis_server import RedisServer
from tests.support import RunningStack, start_stack, worker_pids, write_tiny
from trustserve.client import ClientPolicy, TrustserveClient

TINY = (("model", "tiny"), ("version", "1"))
REFRESH_S = 1.0


def scrape(stack: RunningStack) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    url = f"https://127.0.0.1:{stack.metrics_port}/metrics"
    page = httpx.get(url, verify=str(stack.ca)).text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(page)
        for s in family.samples
    }


def tiny(page: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **kw: str) -> float:
    return page.get((name, frozenset({*TINY, *kw.items()})), 0.0)


@pytest.fixture(scope="module", params=["embedded", "redis"])
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningStack]:
    root = tmp_path_factory.mktemp(f"worker-metrics-{request.param}")
    store = root / "store"
    store.mkdir()
    write_tiny(store)
    extra = ["--key-refresh", str(REFRESH_S)]
    redis = None
    if request.param == "redis":
        redis = RedisServer(root / "redis")
        redis.start()
        extra += ["--broker", redis.url()]
    s = start_stack(root / "home", store, *extra)
    yield s
    s.stop()
    if redis is not None:
        redis.stop()


def test_worker_figures_count_for_the_model(stack: RunningStack) -> None:
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    with TrustserveClient(stack.url, ca=stack.ca, sealed=False) as c:
        for _ in range(5):
            np.testing.assert_allclose(c.infer("tiny", {"x": x})["y"], 2 * x + 1)
    with TrustserveClient(stack.url, policy=ClientPolicy.development(stack.home), ca=stack.ca) as c:
        np.testing.assert_allclose(c.infer("tiny", {"x": x})["y"], 2 * x + 1)
    with stack.client() as c:
        bad = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}]}
        assert c.post("/v2/models/tiny/infer", json=bad).status_code == 400
        time.sleep(REFRESH_S + 1.0)  # at least one key refresh, reported with the next answer
        body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1] * 4}]}
        assert c.post("/v2/models/tiny/infer", json=body).status_code == 200

    page = scrape(stack)
    answered = tiny(page, "trustserve_requests_total", api="v2", status="200")
    assert answered == 7
    assert tiny(page, "trustserve_queue_seconds_count") == answered
    assert tiny(page, "trustserve_preprocess_seconds_count") == answered
    batches = tiny(page, "trustserve_inference_seconds_count")
    assert 1 <= batches <= answered
    assert tiny(page, "trustserve_batch_size_count") == batches
    assert tiny(page, "trustserve_batch_size_sum") == 2 * 6 + 1  # every row, once
    assert tiny(page, "trustserve_inference_seconds_sum") > 0
    assert tiny(page, "trustserve_queue_seconds_sum") <= tiny(
        page, "trustserve_request_seconds_sum"
    )
    assert tiny(page, "trustserve_key_refreshes_total", result="ok") >= 1
    assert tiny(page, "trustserve_key_refreshes_total", result="refused") == 0
    assert tiny(page, "trustserve_errors_total", code="invalid_input") == 1
    assert tiny(page, "trustserve_workers") == 1
    assert (
        tiny(page, "trustserve_workers_live") >= 1
    )  # Redis: a killed worker counts until its heartbeat ages
    assert tiny(page, "trustserve_queue_depth") == 0


def test_a_killed_worker_counts_as_a_restart(stack: RunningStack) -> None:
    before = tiny(scrape(stack), "trustserve_worker_restarts_total")
    (pid,) = worker_pids(stack.process.pid)
    os.kill(pid, signal.SIGKILL)
    stack.wait_model_ready("tiny")  # ready again once the restarted worker takes jobs
    deadline = time.monotonic() + 60
    while tiny(page := scrape(stack), "trustserve_worker_restarts_total") != before + 1:
        assert time.monotonic() < deadline, "the restart was never counted"
        time.sleep(0.2)
    assert tiny(page, "trustserve_workers") == 1
