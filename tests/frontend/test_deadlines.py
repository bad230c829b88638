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


def test_no_answer_before_the_deadline_is_504_then_full_queue_is_503(
    short_deadline: RunningStack,
) -> None:
    with short_deadline.management() as m:
        assert m.put("/models/tiny", params={"min_worker": "0"}).status_code == 200
    with short_deadline.client() as c:
        started = time.monotonic()
        r = c.post("/v2/models/tiny/infer", json=BODY)
        assert r.status_code == 504 and "deadline" in r.json()["error"]
        assert time.monotonic() - started < 5
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
