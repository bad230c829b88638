"""What of the KMS state goes into its transparency log (``trustserve.transparency.log``):
the log entries of its serving- and model-key records (public halves only), and the log a
state made before there was one is given."""

from __future__ import annotations

import time
from typing import Any

from trustserve.transparency import entries
from trustserve.transparency import log as tlog


def serving_entry(record: dict[str, Any], now: float) -> dict[str, Any]:
    """The log entry of serving key ``record`` (its public half only)."""
    rotation = record.get("rotation")
    return entries.serving_key(
        record["key_id"],
        record["public_key"],
        float(record["not_after"]),
        rotation if type(rotation) is int else 0,
        now,
    )


def model_entry(key_id: str, record: dict[str, Any]) -> dict[str, Any]:
    """The log entry of model key ``record``: name, version, digest, id; never the key."""
    created = float(record.get("created_at", time.time()))
    return entries.model_key(
        record["model"], record["version"], record.get("digest"), key_id, created
    )


def backfill(state: dict[str, Any]) -> None:
    """Give a state made before the log one: an entry per serving key (oldest first) and
    per model key it holds (inside a ``KmsState.update``)."""
    if "log" in state:
        return
    tlog.section(state)
    for record in reversed(state["serving"]):
        tlog.append(state, serving_entry(record, float(record.get("created_at", time.time()))))
    models = sorted(state["models"].items(), key=lambda kv: kv[1].get("created_at", 0))
    for key_id, record in models:
        tlog.append(state, model_entry(key_id, record))
