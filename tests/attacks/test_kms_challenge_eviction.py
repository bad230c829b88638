"""Challenge flood: anonymous ``/v1/challenge`` calls must not evict a legitimate nonce.

Before: the KMS kept at most 100,000 open nonces and, when full, dropped the
oldest; 100,000 anonymous calls pushed out the nonce a worker had just been
given, and its key release was refused. Now one address may hold at most
``PER_CLIENT`` open challenges and the table is never evicted: past either
bound the answer is 429 with Retry-After, and the nonces already issued stay
good.
"""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from tests.attacks.kms_local import http, local_kms
from trustserve.attestation import make_provider
from trustserve.errors import TooManyRequests
from trustserve.kms.release import PER_CLIENT, Challenges, make_request


async def test_flood_from_one_address_gets_429_and_the_worker_still_gets_its_keys(
    tmp_path: Path,
) -> None:
    service = local_kms(tmp_path)
    sim = make_provider("sim", service.home)
    async with http(service, "127.0.0.1") as worker, http(service, "198.51.100.66") as attacker:
        nonce = base64.b64decode((await worker.post("/v1/challenge")).json()["nonce"])
        statuses = [
            (await attacker.post("/v1/challenge")).status_code for _ in range(PER_CLIENT + 20)
        ]
        assert statuses.count(200) == PER_CLIENT
        assert statuses[PER_CLIENT:] == [429] * 20
        r = await attacker.post("/v1/challenge")
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        assert "challenges are already open" in r.json()["error"]
        _, request = make_request(nonce, sim, ["serving"])
        released = await worker.post("/v1/release", json=request.to_json())
        assert released.status_code == 200, released.text


def test_full_table_refuses_instead_of_evicting() -> None:
    challenges = Challenges(ttl=60, limit=10, per_client=1_000)
    legit, _ = challenges.issue(1000.0, "worker")
    for i in range(9):
        challenges.issue(1000.0, f"attacker-{i}")
    with pytest.raises(TooManyRequests):
        challenges.issue(1000.0, "attacker-x")
    assert challenges.consume(legit, 1001.0) is None


def test_used_and_expired_challenges_free_their_slots() -> None:
    challenges = Challenges(ttl=60, limit=100, per_client=2)
    a, _ = challenges.issue(1000.0, "w")
    challenges.issue(1000.0, "w")
    with pytest.raises(TooManyRequests):
        challenges.issue(1000.0, "w")
    assert challenges.consume(a, 1000.5) is None
    challenges.issue(1000.5, "w")  # the used one's slot is free again
    challenges.issue(1100.0, "w")  # the rest expired
    challenges.issue(1100.0, "w")
