"""Async jobs over the real Redis broker (TLS): two frontends, one Redis, one KMS. A job
submitted on one frontend is fetched on the other; Redis holds each answer sealed under
the broker key, bound to its job id, with a TTL; a swapped answer is refused."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import numpy as np
import pytest

from tests.broker.redis_server import RedisServer
from tests.support import RunningStack, start_stack, write_tiny
from trustserve.client import ClientPolicy, TrustserveClient
from trustserve.client.sdk import JobHandle

RETENTION_S = 30
ASYNC = {"Prefer": "respond-async"}


def body(x: np.ndarray) -> dict[str, object]:
    return {"inputs": [{"name": "x", "datatype": "FP32", "shape": list(x.shape),
                        "data": x.ravel().tolist()}]}  # fmt: skip


@pytest.fixture(scope="module")
def frontends(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[RedisServer, RunningStack, RunningStack]]:
    """Frontend A (with the KMS and the worker) and frontend B (no worker of its own), both
    on the same Redis; B is an attested client of A's KMS, from the same sim platform."""
    root = tmp_path_factory.mktemp("redis-jobs")
    server = RedisServer(root / "redis")
    server.start()
    store = root / "store"
    store.mkdir()
    write_tiny(store)
    common = ("--broker", server.url(), "--job-retention", str(RETENTION_S))
    a = start_stack(root / "home", store, *common)
    try:
        kms = ("--kms", a.kms_url, "--kms-ca", str(a.ca), "--kms-identity", a.kms_identity)
        b = start_stack(root / "home", store, *common, *kms, "--workers", "0", dev=False)
    except BaseException:
        a.stop()
        server.stop()
        raise
    yield server, a, b
    b.stop()
    a.stop()
    server.stop()


def poll(c: httpx.Client, location: str) -> httpx.Response:
    for _ in range(300):
        r = c.get(location)
        if r.status_code != 202:
            return r
        time.sleep(0.1)
    raise AssertionError(f"{location} still pending")


def test_a_job_submitted_on_one_frontend_is_answered_by_the_other(
    frontends: tuple[RedisServer, RunningStack, RunningStack],
) -> None:
    server, a, b = frontends
    x = np.random.default_rng().uniform(1e3, 1e4, (2, 4)).astype(np.float32)
    with a.client() as ca, b.client() as cb:
        accepted = cb.post("/v2/models/tiny/infer", json=body(x), headers=ASYNC)
        assert accepted.status_code == 202, accepted.text
        location = accepted.headers["location"]
        done = poll(ca, location)
        assert done.status_code == 200
        y = np.asarray(done.json()["outputs"][0]["data"], np.float32).reshape(x.shape)
        np.testing.assert_allclose(y, 2 * x + 1, rtol=1e-6)
        assert poll(cb, location).content == done.content
    key = f"trustserve:job:{accepted.json()['id']}"
    redis = server.client()
    assert 0 < redis.pttl(key) <= RETENTION_S * 1000  # Redis forgets it by itself
    assert np.ascontiguousarray(y).tobytes()[:16] not in redis.get(key)  # type: ignore[operator]


def test_a_sealed_job_is_opened_by_its_client_whichever_frontend_keeps_it(
    frontends: tuple[RedisServer, RunningStack, RunningStack],
) -> None:
    _, a, b = frontends
    x = np.random.default_rng().uniform(1e3, 1e4, (3, 4)).astype(np.float32)
    policy = ClientPolicy.development(a.home)
    with TrustserveClient(a.url, policy=policy, ca=a.ca) as on_a:
        job = on_a.submit("tiny", {"x": x})
    with TrustserveClient(b.url, policy=policy, ca=b.ca) as on_b:
        answer = on_b.result(JobHandle(job.id, job.location, job.prepared), timeout=30)
    np.testing.assert_allclose(answer["y"], 2 * x + 1, rtol=1e-6)


def test_redis_swapping_two_jobs_answers_is_refused(
    frontends: tuple[RedisServer, RunningStack, RunningStack],
) -> None:
    """Redis is untrusted: it hands job 1's (valid, sealed) answer back for job 2."""
    server, a, b = frontends
    with a.client() as c:
        ids = []
        for value in (1.0, 2.0):
            r = c.post("/v2/models/tiny/infer", json=body(np.full((1, 4), value)), headers=ASYNC)
            assert poll(c, r.headers["location"]).status_code == 200
            ids.append(r.json()["id"])
    redis = server.client()
    redis.set(f"trustserve:job:{ids[1]}", redis.get(f"trustserve:job:{ids[0]}"), px=60_000)  # type: ignore[arg-type]
    for front in (a, b):
        with front.client() as c:
            r = c.get(f"/v2/jobs/{ids[1]}")
            assert r.status_code == 502 and r.json()["code"] == "broker_tampered"
            assert c.get(f"/v2/jobs/{ids[0]}").status_code == 200
