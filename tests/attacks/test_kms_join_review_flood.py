"""Join flood: anonymous join requests must not cost the KMS unbounded work and audit log.

Before: ``POST /v1/replicas/join`` was not metered at all. A challenge costs nothing to
get, so every request with a fresh challenge and made-up evidence had its evidence
verified (for sgx/tdx: quote parsing, signature chains, collateral), and every refusal
appended a signed, fsynced line to the audit log; a KMS without ``--peer-policy``
audited each refusal too. One address could do that as fast as it could send. Now
join attempts are metered like fresh bundles (a small budget per client and one for
all; replicas join rarely), and past it the answer is 429/503 with nothing verified
or written.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from tests.attacks.kms_local import http, local_kms
from trustserve.attestation import Policy
from trustserve.crypto import hpke
from trustserve.encoding import b64
from trustserve.kms import join
from trustserve.kms.budgets import FreshEvidenceBudgets

ATTACKER = "198.51.100.66"
FLOOD = 40


def _refusals(home: Path) -> int:
    log = home / "kms" / "audit.jsonl"
    lines = log.read_text().splitlines() if log.exists() else []
    return sum(json.loads(line)["event"] == "replica-join-refused" for line in lines)


def _body(nonce: str) -> dict[str, object]:
    statement = b64(os.urandom(64))
    return {
        "nonce": nonce,
        "public_key": b64(hpke.generate_keypair()[1]),
        "evidence": {"kind": "sim", "data": {"statement": statement, "signature": statement}},
        "release_policy": Policy.default().to_json(),
        "peer_policy": Policy.default().to_json(),
    }


async def _flood(tmp_path: Path, with_peer_policy: bool) -> tuple[list[int], int, float]:
    service = local_kms(tmp_path)
    policy = Policy.development(service.home) if with_peer_policy else None
    statuses = []
    async with http(service, ATTACKER, joins=join.Joins(service, policy)) as c:
        start = time.monotonic()
        for _ in range(FLOOD):
            nonce = (await c.post("/v1/challenge")).json()["nonce"]
            r = await c.post("/v1/replicas/join", json=_body(nonce))
            assert r.status_code in (403, 429, 503), r.text
            statuses.append(r.status_code)
        elapsed = time.monotonic() - start
    return statuses, _refusals(service.home), elapsed


def _bound(elapsed: float) -> float:
    """What the per-client budget allows in ``elapsed`` seconds (no timing assumed)."""
    return join.JOIN_BUDGET.per_client_burst + elapsed * join.JOIN_BUDGET.per_client_rate + 1


async def test_a_join_flood_is_metered_before_evidence_is_verified(tmp_path: Path) -> None:
    statuses, audited, elapsed = await _flood(tmp_path, with_peer_policy=True)
    assert statuses.count(403) <= _bound(elapsed), statuses
    assert audited == statuses.count(403)
    assert 429 in statuses


async def test_a_kms_taking_no_replicas_does_not_audit_a_flood(tmp_path: Path) -> None:
    statuses, audited, elapsed = await _flood(tmp_path, with_peer_policy=False)
    assert audited <= _bound(elapsed), statuses
    assert 429 in statuses


async def test_past_the_budget_nothing_in_the_body_is_parsed(tmp_path: Path) -> None:
    """The policies in a join body are parsed (a TPM AK CA entry is X.509 parsing, and a
    body may hold 4 MiB of them): past the budget, not even that."""
    service = local_kms(tmp_path)
    joins = join.Joins(service, Policy.development(service.home))
    joins.budgets = FreshEvidenceBudgets(join.JOIN_BUDGET, clock=lambda: 0.0)  # no refill
    heavy = {**_body(""), "release_policy": {"tpm_ak_ca_certs": ["not a certificate"]}}
    async with http(service, ATTACKER, joins=joins) as c:
        first = await c.post("/v1/replicas/join", json=heavy)
        assert first.status_code == 400, first.text  # within the budget: parsed, refused
        statuses = [
            (await c.post("/v1/replicas/join", json=heavy)).status_code
            for _ in range(join.JOIN_BUDGET.per_client_burst)
        ]
    assert statuses[-1] == 429, statuses
