"""Challenge floods: anonymous ``/v1/challenge`` calls must not stop a worker's key release.

First: the KMS kept at most 100,000 open nonces and, when full, dropped the
oldest; 100,000 anonymous calls pushed out the nonce a worker had just been
given. Then: 64 open nonces per address and no eviction, but the table's
global cap, once filled from many addresses, refused every worker its
challenge (429). Now a challenge is stateless: the nonce carries its expiry
and a MAC under a key of the KMS process, so issuing one stores nothing; only
a nonce spent by a release whose evidence passed is remembered (until it
expires), so only attested requesters take any of that capacity.
"""

from __future__ import annotations

import asyncio
import base64
import os
from pathlib import Path

from tests.attacks.kms_local import http, local_kms
from trustserve.attestation import make_provider
from trustserve.keyrelease.protocol import make_request
from trustserve.kms.challenges import Challenges


async def test_challenges_from_many_addresses_leave_a_worker_its_release(
    tmp_path: Path,
) -> None:
    service = local_kms(tmp_path)
    service.challenges = Challenges(ttl=60, limit=300)
    sim = make_provider("sim", service.home)

    async def flood(i: int) -> list[int]:
        async with http(service, f"198.51.100.{i + 1}") as attacker:
            return [(await attacker.post("/v1/challenge")).status_code for _ in range(50)]

    per_address = await asyncio.gather(*(flood(i) for i in range(10)))
    statuses = [status for statuses in per_address for status in statuses]
    assert statuses == [200] * 500  # costs the KMS nothing to keep
    async with http(service, "127.0.0.1") as worker:
        r = await worker.post("/v1/challenge")
        assert r.status_code == 200, r.text
        nonce = base64.b64decode(r.json()["nonce"])
        _, request = make_request(nonce, sim, ["serving"])
        released = await worker.post("/v1/release", json=request.to_json())
        assert released.status_code == 200, released.text


def test_a_nonce_is_good_once_only_after_a_release_passed() -> None:
    challenges = Challenges(ttl=60, limit=2)
    nonce, expires_at = challenges.issue(1000.0)
    assert expires_at == 1060.0
    assert challenges.check(nonce, 1001.0) is None
    assert challenges.check(nonce, 1001.0) is None  # a refused release does not use it up
    assert challenges.spend(nonce, 1001.0) is None
    assert challenges.check(nonce, 1002.0) == "unknown or already used"
    assert challenges.spend(nonce, 1002.0) == "unknown or already used"
    assert challenges.check(nonce, 1061.0) == "expired"


def test_forged_or_foreign_nonces_are_unknown() -> None:
    challenges = Challenges(ttl=60)
    nonce, _ = challenges.issue(1000.0)
    assert challenges.check(os.urandom(32), 1001.0) == "unknown or already used"
    assert Challenges(ttl=60).check(nonce, 1001.0) == "unknown or already used"
    later = bytearray(nonce)
    later[0] ^= 0x01  # a later expiry, made up
    assert challenges.check(bytes(later), 1001.0) == "unknown or already used"


def test_spent_nonces_are_forgotten_when_they_expire_and_bounded_before() -> None:
    challenges = Challenges(ttl=60, limit=2)
    a, b, c = (challenges.issue(1000.0)[0] for _ in range(3))
    assert challenges.spend(a, 1001.0) is None
    assert challenges.spend(b, 1001.0) is None
    assert challenges.spend(c, 1001.0) == "too many releases at once: retry"
    d = challenges.issue(1100.0)[0]
    assert challenges.spend(d, 1100.0) is None  # a and b expired and were forgotten
