"""A stack over two Redis primaries (real TLS+ACL redis-servers on loopback): the
frontend lists both shards, the workers of two models list them in the same order; each
primary holds only its own model's stream, every request is answered once, async job
records sit on the shard of their id, sealed requests pass the replay guard on their
model's shard."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

from tests.broker.redis_server import RedisServer
from tests.broker.test_shards import on_each_shard
from tests.support import RunningStack, start_stack, tiny_expected, write_tiny
from trustserve.broker.shards import shard_of
from trustserve.client import ClientPolicy, TrustserveClient

ASYNC = {"Prefer": "respond-async"}


def body(x: np.ndarray) -> dict[str, object]:
    return {"inputs": [{"name": "x", "datatype": "FP32", "shape": list(x.shape),
                        "data": x.ravel().tolist()}]}  # fmt: skip


@pytest.fixture(scope="module")
def sharded(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[list[RedisServer], list[str], RunningStack]]:
    root = tmp_path_factory.mktemp("sharded")
    servers = [RedisServer(root / f"redis{i}") for i in range(2)]
    models = [q.split(":")[0] for q in on_each_shard(2)]
    store = root / "store"
    store.mkdir()
    for m in models:
        write_tiny(store, m)
    try:
        for s in servers:
            s.start()
        url = " ".join(s.url() for s in servers)
        stack = start_stack(root / "home", store, "--broker", url, "--job-retention", "60")
    except BaseException:
        for s in servers:
            s.stop()
        raise
    yield servers, models, stack
    stack.stop()
    for s in servers:
        s.stop()


def infer(stack: RunningStack, model: str, x: np.ndarray) -> np.ndarray:
    with stack.client() as c:
        r = c.post(f"/v2/models/{model}/infer", json=body(x))
    assert r.status_code == 200, r.text
    return np.asarray(r.json()["outputs"][0]["data"], np.float32).reshape(x.shape)


def test_each_primary_holds_only_its_models_streams_and_every_request_is_answered(
    sharded: tuple[list[RedisServer], list[str], RunningStack],
) -> None:
    servers, models, stack = sharded
    rng = np.random.default_rng(25)
    inputs = [(m, rng.uniform(-100, 100, (1, 4)).astype(np.float32)) for m in models * 12]
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda mx: infer(stack, *mx), inputs))
    for (_, x), y in zip(inputs, answers, strict=True):
        np.testing.assert_allclose(y, tiny_expected(x)[0], rtol=1e-6)
    for i, server in enumerate(servers):
        with server.client() as c:
            for j, model in enumerate(models):
                held = c.pttl(f"trustserve:q:{model}:1") != -2  # -2: no such key
                assert held == (i == j), f"shard {i} {'lacks' if i == j else 'holds'} {model}"
    with stack.management() as m:
        for model in models:
            (status,) = m.get(f"/models/{model}").json()
            assert status["readyWorkers"] == 1 and status["queueDepth"] == 0


def poll(c: httpx.Client, location: str) -> httpx.Response:
    for _ in range(600):
        r = c.get(location)
        if r.status_code != 202:
            return r
        time.sleep(0.1)
    raise AssertionError(f"{location} still pending")


def test_async_jobs_of_both_models_are_kept_on_the_shard_of_their_id(
    sharded: tuple[list[RedisServer], list[str], RunningStack],
) -> None:
    servers, models, stack = sharded
    x = np.random.default_rng(3).uniform(1, 10, (2, 4)).astype(np.float32)
    ids = []
    with stack.client() as c:
        for model in models * 4:
            accepted = c.post(f"/v2/models/{model}/infer", json=body(x), headers=ASYNC)
            assert accepted.status_code == 202, accepted.text
            done = poll(c, accepted.headers["location"])
            assert done.status_code == 200, done.text
            y = np.asarray(done.json()["outputs"][0]["data"], np.float32).reshape(x.shape)
            np.testing.assert_allclose(y, tiny_expected(x)[0], rtol=1e-6)
            ids.append(accepted.json()["id"])
    for job_id in ids:
        for i, server in enumerate(servers):
            with server.client() as c:
                held = c.pttl(f"trustserve:job:{job_id}") > 0
                assert held == (i == shard_of(job_id, len(servers)))


def test_sealed_requests_reach_both_models_through_their_shards_replay_guard(
    sharded: tuple[list[RedisServer], list[str], RunningStack],
) -> None:
    _, models, stack = sharded
    x = np.random.default_rng(4).uniform(1, 10, (1, 4)).astype(np.float32)
    policy = ClientPolicy.development(stack.home)
    with TrustserveClient(stack.url, policy=policy, ca=stack.ca) as client:
        for model in models:
            np.testing.assert_allclose(client.infer(model, {"x": x})["y"], 2 * x + 1, rtol=1e-6)
