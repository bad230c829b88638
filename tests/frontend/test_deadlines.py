"""Deadlines and backpressure as a client sees them."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.support import RunningStack, start_stack, write_tiny
from trustserve.errors import Unavailable
from trustserve.responses import error_response

BODY = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}


@pytest.fixture(scope="module")
def short_deadline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    root = tmp_path_factory.mktemp("deadline")
    (root / "store").mkdir()
    write_tiny(root / "store")
    stack = start_stack(root / "home", root / "store", "--timeout", "1", "--max-queue", "2")
    yield stack
    stack.stop()


def test_a_model_with_no_worker_is_503_at_once_naming_it(short_deadline: RunningStack) -> None:
    """Not a job that waits out its deadline: the frontend knows no worker takes it."""
    with short_deadline.management() as m:
        assert m.put("/models/tiny", params={"min_worker": "0"}).status_code == 200
    with short_deadline.client() as c:
        while c.get("/v2/models/tiny/ready").status_code == 200:  # the worker leaves
            time.sleep(0.1)
        for path in ("/v2/models/tiny/infer", "/v2/models/tiny/versions/1/infer"):
            r = c.post(path, json=BODY)
            assert r.status_code == 503, r.text
            assert r.json()["code"] == "unavailable" and r.headers["retry-after"]
            assert "model 'tiny' version 1 has no worker ready" in r.json()["error"]
        queued = c.post("/v2/models/tiny/infer", json=BODY, headers={"Prefer": "respond-async"})
        assert queued.status_code == 503, queued.text  # no async job accepted for nobody
    with short_deadline.management() as m:
        assert m.put("/models/tiny", params={"min_worker": "1"}).status_code == 200
    short_deadline.wait_model_ready("tiny")
    with short_deadline.client() as c:
        assert c.post("/v2/models/tiny/infer", json=BODY).status_code == 200


def test_unavailable_answers_503_with_retry_after() -> None:
    response = error_response(Unavailable("queue for m:1 is full; retry later", retry_after=3))
    assert response.status_code == 503
    assert response.headers["retry-after"] == "3"
    assert b"queue for m:1 is full" in response.body
