"""``Jobs`` against an untrusted store: a record moved to another job or changed is refused,
and one frontend holds at most ``max_jobs`` jobs (a flood is 429, not memory exhaustion).

In-process with the in-memory store (the Redis store is tested on a real stack in
tests/broker/test_redis_jobs.py); the work of a job is a coroutine instead of a worker.
"""

from __future__ import annotations

import asyncio
import os

import pytest
from starlette.requests import Request
from starlette.responses import Response

from trustserve.errors import BrokerTampered, TooManyRequests
from trustserve.frontend.jobs import Jobs, MemoryJobStore
from trustserve.responses import json_response


def get_request(job_id: str) -> Request:
    return Request({"type": "http", "path_params": {"job": job_id}, "headers": []})


async def finished(jobs: Jobs, answer: dict[str, int]) -> str:
    async def work() -> Response:
        return json_response(answer)

    accepted = await jobs.start(work)
    job_id = str(accepted.headers["location"]).rsplit("/", 1)[1]
    for _ in range(100):
        if (await jobs.get(get_request(job_id))).status_code == 200:
            return job_id
        await asyncio.sleep(0.01)
    raise AssertionError("job never finished")


async def test_a_store_that_swaps_two_jobs_answers_is_caught() -> None:
    store = MemoryJobStore()
    jobs = Jobs(store, os.urandom(32))
    mine = await finished(jobs, {"mine": 1})
    theirs = await finished(jobs, {"theirs": 2})
    assert (await jobs.get(get_request(mine))).body == b'{"mine":1}'
    store._records[mine] = store._records[theirs]  # the store hands back another job's answer
    with pytest.raises(BrokerTampered):
        await jobs.get(get_request(mine))
    until, record = store._records[theirs]
    store._records[theirs] = (until, record[:-1] + bytes([record[-1] ^ 1]))  # one bit flipped
    with pytest.raises(BrokerTampered):
        await jobs.get(get_request(theirs))


async def test_a_flood_of_submissions_is_refused_past_max_jobs() -> None:
    jobs = Jobs(MemoryJobStore(), os.urandom(32), max_jobs=3)
    never = asyncio.Event()

    async def slow() -> Response:
        await never.wait()
        return json_response({})

    accepted = [await jobs.start(slow) for _ in range(3)]
    assert {r.status_code for r in accepted} == {202}
    with pytest.raises(TooManyRequests, match="holds 3 async jobs"):
        await jobs.start(slow)
    await jobs.close()
