"""Review (issue 25): a take on the embedded broker's socket is bounded before it is served.

Anything that can reach the socket may ask for jobs. A take's ``max`` and ``delay`` were
read with ``int()`` / ``float()`` and used as they came: ``"nan"`` as the delay put a NaN
timer into the frontend's event loop (it fires at once, and the take waits again, and
again: a spin in the frontend's only thread while a job is queued) and ``"inf"`` held the
queue's oldest job back for ever. A take whose numbers are not a batch size and a finite
delay now ends that connection, as any other frame out of turn does, and the job goes to
a worker that asks properly.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from trustserve.broker.base import Job, JobKind, Outcome
from trustserve.broker.embedded import EmbeddedBroker, SocketJobSource
from trustserve.broker.wire import frame

Q = "m:1"


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[tuple[EmbeddedBroker, Path]]:
    b = EmbeddedBroker(clear_jobs=True)
    sock = tmp_path / "run" / "broker.sock"
    await b.serve_workers(sock)
    yield b, sock
    await b.close()


@pytest.mark.parametrize(
    ("max_items", "delay"),
    [
        (2, "nan"),
        (2, "inf"),
        (2, -1),
        (2, "1e400"),
        (0, 0.0),
        (10**9, 0.0),
        ("2", 0.0),
        (2, True),
    ],
)
async def test_a_take_with_numbers_no_worker_sends_ends_the_connection(
    broker: tuple[EmbeddedBroker, Path], max_items: Any, delay: Any
) -> None:
    b, sock = broker
    job = Job(uuid.uuid4().hex, Q, JobKind.V2, b"body", time.time() + 120)
    answer = asyncio.ensure_future(b.submit(job))
    reader, writer = await asyncio.open_unix_connection(str(sock))
    writer.write(frame({"op": "hello", "queue": Q}))
    writer.write(frame({"op": "take", "max": max_items, "delay": delay}))
    await writer.drain()
    # the welcome, then the end of the connection (a hang here is the hole)
    rest = await asyncio.wait_for(reader.read(), 20)
    assert b'"jobs"' not in rest
    writer.close()
    honest = await SocketJobSource.connect(sock, Q, clear=True)
    try:
        (taken,) = await honest.take(Q, 2, 0.0)
        assert taken.id == job.id and bytes(taken.payload) == b"body"
        await honest.answer(taken, Outcome(job.id, 200, b"ok"))
        assert (await answer).payload == b"ok"
    finally:
        await honest.close()
