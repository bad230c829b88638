"""Audit flood: refusals must not let an anonymous requester write megabytes into the log.

Before: ``POST /v1/release`` with an unknown nonce and an ``evidence.kind`` of
1 MiB was refused, and the refusal record
carried those fields whole: five requests grew ``audit.jsonl`` by 5 MiB (one fsync each). Now
every string the requester chose is cut to a fixed size in the record (its
start, its length and its SHA-256 stay, so the refusal is still evidence).
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

from tests.attacks.kms_local import http, local_kms
from trustserve.kms import audit


def _release(kind: str, key_ids: list[str]) -> dict[str, object]:
    return {
        "nonce": base64.b64encode(os.urandom(32)).decode(),
        "public_key": base64.b64encode(os.urandom(32)).decode(),
        "evidence": {"kind": kind, "data": {}},
        "key_ids": key_ids,
    }


async def test_huge_refused_fields_stay_small_in_the_audit_log(tmp_path: Path) -> None:
    service = local_kms(tmp_path)
    log = service.state.dir / "audit.jsonl"
    before = log.stat().st_size if log.exists() else 0
    kind = "k" * (1024 * 1024)
    async with http(service) as c:
        for _ in range(5):
            r = await c.post("/v1/release", json=_release(kind, ["serving"]))
            assert r.status_code == 403, r.text
    grown = log.stat().st_size - before
    assert grown < 8 * 1024, f"five refusals wrote {grown} bytes"
    records = [json.loads(line) for line in log.read_text().splitlines()]
    refusals = [r for r in records if r["event"] == "refusal"]
    assert len(refusals) == 5
    assert "1048576 chars" in refusals[0]["evidence_kind"]
    assert service.verify_audit().ok


def test_bounded_keeps_short_values_and_names_long_ones() -> None:
    assert audit.bounded({"a": "short", "b": [1, 2]}) == {"a": "short", "b": [1, 2]}
    long = "z" * 10_000
    cut = audit.bounded(long)
    assert len(cut) < 200 and "10000 chars" in cut
    assert audit.bounded(list(range(1000)))[-1] == "... 1000 items in all"
