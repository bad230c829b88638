"""The real stack (``serve --dev``: simulated attestation, so local jobs in clear) carries
request bodies to its workers through shared memory (issue 25): 200 requests at 32 in
flight, standard and sealed, each answered with exactly what the model computes for it."""

from __future__ import annotations

import asyncio

import numpy as np

from tests.support import RunningStack, tiny_expected
from trustserve.client import AsyncTrustserveClient, ClientPolicy

N, IN_FLIGHT = 200, 32


def inputs() -> list[np.ndarray]:
    rng = np.random.default_rng(25)
    return [rng.standard_normal((1 + i % 3, 4)).astype(np.float32) for i in range(N)]


async def answered(client: AsyncTrustserveClient, xs: list[np.ndarray]) -> list[np.ndarray]:
    gate = asyncio.Semaphore(IN_FLIGHT)

    async def one(x: np.ndarray) -> np.ndarray:
        async with gate:
            return (await client.infer("tiny", {"x": x}, version="1"))["y"]

    return await asyncio.gather(*(one(x) for x in xs))


def check(xs: list[np.ndarray], ys: list[np.ndarray]) -> None:
    for x, y in zip(xs, ys, strict=True):
        np.testing.assert_allclose(y, tiny_expected(x)[0], rtol=1e-6)


async def test_200_standard_requests_at_32_in_flight(tiny_stack: RunningStack) -> None:
    xs = inputs()
    async with AsyncTrustserveClient(tiny_stack.url, ca=tiny_stack.ca, sealed=False) as c:
        check(xs, await answered(c, xs))
    assert "reads job bodies from shared memory" in tiny_stack.log.read_text()


async def test_200_sealed_requests_at_32_in_flight(tiny_stack: RunningStack) -> None:
    xs = inputs()
    policy = ClientPolicy.development(tiny_stack.home)
    async with AsyncTrustserveClient(tiny_stack.url, policy=policy, ca=tiny_stack.ca) as c:
        check(xs, await answered(c, xs))
