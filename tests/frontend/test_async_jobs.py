"""Async jobs (``Prefer: respond-async``, ``GET /v2/jobs/{id}``) on a real stack with the
embedded broker: standard and sealed, pending then done, expiry, guessing, replay."""

from __future__ import annotations

import os
import secrets
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import numpy as np
import pytest

from tests.support import RunningStack, png, start_stack, worker_pids, write_colour, write_tiny
from trustserve.client import ClientPolicy, TrustserveClient
from trustserve.client.sdk import ServerError, prepare, read_answer
from trustserve.crypto.sealing import CONTENT_TYPE

RETENTION_S = 4.0
ASYNC = {"Prefer": "respond-async"}
BODY = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    root = tmp_path_factory.mktemp("async-jobs")
    store = root / "store"
    store.mkdir()
    write_tiny(store)
    write_colour(store)
    running = start_stack(root / "home", store, "--job-retention", str(RETENTION_S))
    for model in ("tiny", "colour"):  # ready means one model; a request waits for no worker
        running.wait_model_ready(model, timeout=180)
    yield running
    running.stop()


@contextmanager
def workers_paused(stack: RunningStack) -> Iterator[None]:
    """The stack's workers stopped (SIGSTOP): whatever is submitted stays pending."""
    pids = worker_pids(stack.process.pid)
    assert pids
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)


def poll(c: httpx.Client, location: str, timeout: float = 30) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = c.get(location)
        if r.status_code != 202:
            return r
        time.sleep(0.1)
    raise AssertionError(f"{location} still pending after {timeout} s")


def test_standard_job_is_202_while_pending_then_exactly_the_synchronous_answer(
    stack: RunningStack,
) -> None:
    with stack.client() as c:
        sync = c.post("/v2/models/tiny/infer", json=BODY)
        assert sync.status_code == 200
        with workers_paused(stack):
            accepted = c.post("/v2/models/tiny/infer", json=BODY, headers=ASYNC)
            assert accepted.status_code == 202, accepted.text
            location = accepted.headers["location"]
            job_id = accepted.json()["id"]
            assert location == f"/v2/jobs/{job_id}" and len(job_id) >= 43
            pending = c.get(location)
            assert pending.status_code == 202 and pending.headers["retry-after"] == "1"
            assert pending.json() == {"id": job_id, "status": "pending"}
        done = poll(c, location)
        assert done.status_code == 200
        assert done.headers["content-type"] == sync.headers["content-type"]
        assert done.json() == sync.json()
        again = c.get(location)  # GET is idempotent: kept until it expires
        assert again.status_code == 200 and again.content == done.content


def test_a_version_route_and_the_torchserve_route_take_async_too(stack: RunningStack) -> None:
    with stack.client() as c:
        r = c.post("/v2/models/tiny/versions/1/infer", json=BODY, headers=ASYNC)
        assert r.status_code == 202
        assert poll(c, r.headers["location"]).json()["outputs"][0]["data"] == [3, 5, 7, 9]
        image = png((240, 20, 20))
        sync = c.post("/predictions/colour", content=image).json()
        r = c.post("/predictions/colour", content=image, headers=ASYNC)
        assert r.status_code == 202
        assert poll(c, r.headers["location"]).json() == sync


def test_a_bad_request_is_refused_at_once_not_queued(stack: RunningStack) -> None:
    bad = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 5], "data": [1] * 5}]}
    with stack.client() as c:
        r = c.post("/v2/models/tiny/infer", json=bad, headers=ASYNC)
        assert r.status_code == 400 and "shape" in r.json()["error"]
        assert c.post("/v2/models/nope/infer", json=BODY, headers=ASYNC).status_code == 404


def test_an_error_answer_is_kept_as_the_job_answer(stack: RunningStack) -> None:
    """A job that fails on the worker answers GET with the error the sync call gets."""
    with stack.client() as c:
        sync = c.post("/predictions/colour", content=b"not an image")
        r = c.post("/predictions/colour", content=b"not an image", headers=ASYNC)
        assert r.status_code == 202
        done = poll(c, r.headers["location"])
        assert sync.status_code == done.status_code == 400
        assert done.json() == sync.json()


def test_sealed_job_answer_stays_sealed_and_only_the_sdk_that_sent_it_opens_it(
    stack: RunningStack,
) -> None:
    policy = ClientPolicy.development(stack.home)
    x = np.random.default_rng().uniform(1e3, 1e4, (3, 4)).astype(np.float32)
    with TrustserveClient(stack.url, policy=policy, ca=stack.ca) as client:
        job = client.submit("tiny", {"x": x})
        answer = client.result(job, timeout=30)
        np.testing.assert_allclose(answer["y"], 2 * x + 1, rtol=1e-6)
        raw = client._http.get(job.location)  # what the frontend keeps: sealed bytes
        assert raw.status_code == 200 and raw.headers["content-type"] == CONTENT_TYPE
        y = np.ascontiguousarray(answer["y"]).tobytes()
        assert y[:16] not in raw.content
        image = client.submit("colour", raw=png((20, 20, 240)))
        assert next(iter(client.result(image))) == "blue"


def test_sdk_result_without_wait_is_none_while_pending(stack: RunningStack) -> None:
    with TrustserveClient(stack.url, ca=stack.ca, sealed=False) as client:
        with workers_paused(stack):
            job = client.submit("tiny", {"x": np.ones((1, 4), np.float32)})
            assert client.result(job, wait=False) is None
        assert client.result(job)["y"].tolist() == [[3.0] * 4]


def test_a_replayed_sealed_async_request_is_refused(stack: RunningStack) -> None:
    """The same sealed bytes submitted twice as jobs: the worker's replay check still holds."""
    policy = ClientPolicy.development(stack.home)
    with TrustserveClient(stack.url, policy=policy, ca=stack.ca) as client:
        target = client.verify()
    p = prepare("tiny", None, {"x": np.ones((1, 4), np.float32)}, None, target)
    with stack.client() as c:
        first = c.post(p.path, content=p.body, headers={**p.headers, **ASYNC})
        second = c.post(p.path, content=p.body, headers={**p.headers, **ASYNC})
        assert first.status_code == second.status_code == 202
        answers = [poll(c, r.headers["location"]) for r in (first, second)]
    assert sorted(a.status_code for a in answers) == [200, 409]  # whichever ran first wins
    for a in answers:
        if a.status_code == 200:
            assert read_answer(p, a)["y"].tolist() == [[3.0] * 4]
        else:
            with pytest.raises(ServerError, match="replay"):
                read_answer(p, a)


def test_unknown_malformed_and_expired_jobs_are_404(stack: RunningStack) -> None:
    with stack.client() as c:
        r = c.post("/v2/models/tiny/infer", json=BODY, headers=ASYNC)
        location = r.headers["location"]
        assert poll(c, location).status_code == 200
        guessed = f"/v2/jobs/{secrets.token_urlsafe(32)}"
        for path in (guessed, "/v2/jobs/1", "/v2/jobs/" + "A" * 500):
            missing = c.get(path)
            assert missing.status_code == 404 and "unknown or expired" in missing.json()["error"]
        time.sleep(RETENTION_S + 0.5)
        expired = c.get(location)
        assert expired.status_code == 404 and "expired" in expired.json()["error"]


def test_an_async_job_counts_once_in_metrics_with_its_worker_figures(stack: RunningStack) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    def scrape() -> dict[tuple[str, str], float]:
        text = httpx.get(f"https://127.0.0.1:{stack.metrics_port}/metrics", verify=str(stack.ca))
        found = {}
        for family in text_string_to_metric_families(text.text):
            for s in family.samples:
                wanted = s.name in ("trustserve_requests_total", "trustserve_batch_size_count")
                ours = s.labels.get("model") == "colour"
                if wanted and ours and s.labels.get("api", "torchserve") == "torchserve":
                    found[(s.name, s.labels.get("status", ""))] = s.value
        return found

    before = scrape()
    with stack.client() as c:
        r = c.post("/predictions/colour", content=png((1, 2, 3)), headers=ASYNC)
        assert poll(c, r.headers["location"]).status_code == 200
    after = scrape()
    ok = ("trustserve_requests_total", "200")
    assert after[ok] - before.get(ok, 0) == 1
    assert ("trustserve_requests_total", "202") not in after
    batches = ("trustserve_batch_size_count", "")
    assert after[batches] - before.get(batches, 0) == 1
