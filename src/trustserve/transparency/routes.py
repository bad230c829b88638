"""The KMS's public log routes (contract with the KMS side) and the reading of their answers.

* ``GET /v1/log/checkpoint``: the newest signed checkpoint with its cosignatures (text);
* ``GET /v1/log/entries?start=S&end=E``: ``{"size", "entries": [{"index", "entry"}]}``,
  at most ``MAX_PAGE`` entries;
* ``GET /v1/log/proof/consistency?old=M&new=N``: ``{"old", "new", "proof": [b64]}``;
* ``GET /v1/log/proof/inclusion?index=i&size=N``: ``{"index", "size", "proof": [b64]}``.

A frontend passes the checkpoint and consistency proofs on under ``/v2/transparency/``.
Nothing read here is trusted: a proof is checked against signed roots by whoever uses it.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from trustserve.errors import TransparencyRefused

CHECKPOINT = "/v1/log/checkpoint"
ENTRIES = "/v1/log/entries"
CONSISTENCY = "/v1/log/proof/consistency"
INCLUSION = "/v1/log/proof/inclusion"
MAX_PAGE = 1000
MAX_PROOF = 64  # hashes: a tree of 2^64 entries


def read_proof(answer: Any, **expected: int) -> list[bytes]:
    """The hashes of a proof answer, once it names the sizes/index it was asked for."""
    if not isinstance(answer, dict):
        raise TransparencyRefused("a proof answer is not a JSON object")
    for name, value in expected.items():
        if answer.get(name) != value:
            raise TransparencyRefused(
                f"a proof answer for {name} {answer.get(name)!r:.20}, asked for {value}"
            )
    proof = answer.get("proof")
    if (
        not isinstance(proof, list)
        or len(proof) > MAX_PROOF
        or not all(isinstance(p, str) for p in proof)
    ):
        raise TransparencyRefused(f"a proof is a list of at most {MAX_PROOF} base64 hashes")
    try:
        return [base64.b64decode(p, validate=True) for p in proof]
    except binascii.Error:
        raise TransparencyRefused("a proof step is not base64") from None


def read_entries(answer: Any, start: int, end: int) -> tuple[int, list[dict[str, Any]]]:
    """(the log's size, the entries ``start``..``end``-1 in order) of an entries answer."""
    if not isinstance(answer, dict) or not isinstance(answer.get("entries"), list):
        raise TransparencyRefused("an entries answer is not {size, entries}")
    size = answer.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < end:
        raise TransparencyRefused(f"an entries answer names size {size!r:.20}, below {end}")
    items = answer["entries"]
    if len(items) != end - start:
        raise TransparencyRefused(f"asked for entries {start}..{end - 1}, got {len(items)} entries")
    entries = []
    for i, item in enumerate(items, start):
        if not isinstance(item, dict) or item.get("index") != i:
            raise TransparencyRefused(f"entry {i} is missing or out of order")
        entry = item.get("entry")
        if not isinstance(entry, dict):
            raise TransparencyRefused(f"entry {i} is not a JSON object")
        entries.append(entry)
    return size, entries
