"""Fresh-bundle starvation: one anonymous client must not stop sealed inference for everyone.

Before: bundles made for a client's nonce were metered by one global budget
(20 a second, bursts of 40) and the SDK always sends a nonce; one client
spending it made 20 of 21 other clients' bundle requests fail with 503. Now
each client (address, an IPv6 /64, or behind a configured trusted proxy the
address in its header) has a budget of its own, anonymous clients together a
total that leaves the configured frontend networks a share of their own, and a
frontend coalesces the nonces of concurrent clients into one piece of evidence
(``tests/frontend/test_fresh_bundles.py``).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx

from tests.attacks.kms_local import http, local_kms
from trustserve.attestation import EvidenceProvider, make_provider
from trustserve.client.verify import ClientPolicy, verify
from trustserve.keyrelease.bundle import encode_nonce
from trustserve.kms.peers import Peers
from trustserve.kms.service import KmsService

ATTACKER = "198.51.100.66"


async def _fresh(client: httpx.AsyncClient, service: KmsService) -> httpx.Response:
    """A fresh bundle as the SDK asks for it; checked like the SDK checks it when 200."""
    nonce = os.urandom(32)
    r = await client.get("/v1/attestation", params={"nonce": encode_nonce(nonce)})
    if r.status_code == 200:
        assert verify(r.json(), ClientPolicy.development(service.home), nonce=nonce).key_id
    return r


@asynccontextmanager
async def flooding(
    service: KmsService,
    sim: EvidenceProvider,
    address: Callable[[int], str],
    streams: int = 6,
    **app_options: Any,
) -> AsyncIterator[list[httpx.Response]]:
    """``streams`` concurrent fresh-bundle requests without pause, the i-th from
    ``address(i)``, until the block ends; entered once the flood met its first refusal."""
    seen: list[httpx.Response] = []
    stop = asyncio.Event()

    async def stream(i: int) -> None:
        while not stop.is_set():
            async with http(service, address(i), sim, **app_options) as c:
                seen.append(await _fresh(c, service))
            i += streams

    tasks = [asyncio.create_task(stream(s)) for s in range(streams)]
    try:
        async with asyncio.timeout(120):
            while all(r.status_code == 200 for r in seen):
                await asyncio.sleep(0.01)
        yield seen
    finally:
        stop.set()
        await asyncio.gather(*tasks)


async def test_one_address_spending_its_budget_leaves_every_other_client_theirs(
    tmp_path: Path,
) -> None:
    service = local_kms(tmp_path)
    sim = make_provider("sim", service.home)
    statuses = []
    async with flooding(service, sim, lambda i: ATTACKER) as attacker:
        for i in range(21):
            async with http(service, f"203.0.113.{i + 1}", sim) as legit:
                statuses.append((await _fresh(legit, service)).status_code)
    assert statuses == [200] * 21
    refused = [r for r in attacker if r.status_code != 200]
    assert {r.status_code for r in refused} == {429}
    assert "fresh bundles for this client" in refused[0].json()["error"]
    assert int(refused[0].headers["retry-after"]) >= 1


async def test_behind_a_trusted_proxy_each_forwarded_client_has_its_own_budget(
    tmp_path: Path,
) -> None:
    service = local_kms(tmp_path)
    sim = make_provider("sim", service.home)
    peers = Peers.configured(trusted_proxies=["10.0.0.5/32"], client_header="X-Forwarded-For")
    async with http(service, "10.0.0.5", sim, peers=peers) as proxy:
        proxy.headers["X-Forwarded-For"] = f"192.0.2.1, {ATTACKER}"  # rightmost: the proxy's
        spent = await asyncio.gather(*(_fresh(proxy, service) for _ in range(30)))
        assert 429 in [r.status_code for r in spent]
        proxy.headers["X-Forwarded-For"] = f"{ATTACKER}, 203.0.113.9"
        assert (await _fresh(proxy, service)).status_code == 200


async def test_a_client_cannot_pick_its_key_with_the_header_or_its_ipv6_suffix(
    tmp_path: Path,
) -> None:
    service = local_kms(tmp_path)
    sim = make_provider("sim", service.home)
    peers = Peers.configured(trusted_proxies=["10.0.0.5/32"], client_header="X-Forwarded-For")

    async def ask(address: str, forwarded: str | None = None) -> int:
        async with http(service, address, sim, peers=peers) as c:
            if forwarded is not None:
                c.headers["X-Forwarded-For"] = forwarded  # not from the proxy: ignored
            return (await _fresh(c, service)).status_code

    direct = await asyncio.gather(*(ask(ATTACKER, f"203.0.113.{i + 1}") for i in range(30)))
    assert 429 in direct
    v6 = await asyncio.gather(*(ask(f"2001:db8:66::{i + 1:x}") for i in range(30)))
    assert 429 in v6  # one /64 is one client
    assert await ask("2001:db8:67::1") == 200


async def test_many_addresses_spending_the_total_leave_the_frontends_their_share(
    tmp_path: Path,
) -> None:
    service = local_kms(tmp_path)
    sim = make_provider("sim", service.home)
    peers = Peers.configured(reserved=["10.1.0.0/16"])
    statuses = []

    def address(i: int) -> str:
        return f"198.51.{100 + i // 250 % 100}.{i % 250 + 1}"

    async with flooding(service, sim, address, streams=12, peers=peers) as flood:
        for _ in range(10):
            async with http(service, "10.1.2.3", sim, peers=peers) as frontend:
                statuses.append((await _fresh(frontend, service)).status_code)
    assert statuses == [200] * 10
    refused = [r for r in flood if r.status_code != 200]
    assert refused[0].status_code == 503 and "fresh bundles" in refused[0].json()["error"]
