"""Attack: a plaintext-mode broker writes an answer's figures itself: a batch of -10**15 rows.

Without a broker key (plaintext mode) an answer's ``OutcomeMeta`` crosses the broker in
clear, so whoever holds the broker (Redis, its host) can write it. The frontend reads
every answer's head with ``broker.wire.outcome_from`` and feeds the figures to its
metrics. A head with ``batch_size = -10**15`` on a batch's first answer was read as it
was: ``trustserve_batch_size_sum`` went to -1e15, and every mean batch size a dashboard
shows with it. Now every number in an answer's head is bounded when it is read: a batch
has 1 to 1024 rows (``archive.MAX_BATCH_SIZE``, the largest ``max_batch_size`` a model
may have, which a worker never exceeds), durations are finite and not negative (and
clipped at a day), ``header_length`` lies within a frame; anything else is refused, so
the answer is dropped like any other malformed one and nothing is counted.

The figures go through the real reader and the real metrics registry; only the head
is the attacker's.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
from prometheus_client import generate_latest

from trustserve.archive import MAX_BATCH_SIZE
from trustserve.broker.base import MAX_FIGURE_MS, OutcomeMeta
from trustserve.broker.wire import outcome_from
from trustserve.frontend.metrics import Metrics


def _head(**meta: object) -> dict[str, Any]:
    figures = {"inference_ms": 2.0, "queue_ms": 1.0, "batch_first": True, **meta}
    return {"id": "j", "status": 200, "meta": figures}


def _samples(metrics: Metrics, name: str) -> list[float]:
    page = generate_latest(metrics.registry).decode().splitlines()
    return [float(line.split()[-1]) for line in page if line.startswith(name + "{")]


def _frontend_reads(head: dict[str, Any]) -> Metrics:
    """What the frontend does with an answer's head: read it, then count its figures."""
    metrics = Metrics()
    try:
        meta = outcome_from(head, b"{}").meta
    except ValueError:
        return metrics  # a malformed answer is dropped (the broker's reader logs it)
    metrics.observe("tiny", "1", "v2", 200, 0.01, meta)
    return metrics


def test_a_negative_batch_never_reaches_the_batch_size_histogram() -> None:
    metrics = _frontend_reads(_head(batch_size=-(10**15)))
    assert all(s >= 0 for s in _samples(metrics, "trustserve_batch_size_sum"))
    assert not any(_samples(metrics, "trustserve_batch_size_count"))


@pytest.mark.parametrize(
    "meta",
    [
        {"batch_size": -(10**15)},
        {"batch_size": 0},
        {"batch_size": MAX_BATCH_SIZE + 1},
        {"batch_size": 1 << 62},
        {"header_length": -1},
        {"header_length": 1 << 40},
        {"inference_ms": math.inf},
        {"queue_ms": math.nan},
        {"preprocess_ms": -math.inf},
    ],
)
def test_numbers_no_worker_sends_are_refused(meta: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="metadata"):
        OutcomeMeta.from_json(meta)
    with pytest.raises(ValueError, match="metadata"):
        outcome_from({"id": "j", "status": 200, "meta": meta}, b"")


def test_a_huge_duration_is_clipped_not_counted_whole() -> None:
    meta = OutcomeMeta.from_json({"inference_ms": 1e300, "queue_ms": 1e300, "preprocess_ms": 1e18})
    assert meta.inference_ms == meta.queue_ms == meta.preprocess_ms == MAX_FIGURE_MS


@pytest.mark.parametrize("rows", [1, MAX_BATCH_SIZE])
def test_what_a_genuine_worker_sends_still_reads(rows: int) -> None:
    metrics = _frontend_reads(_head(batch_size=rows, preprocess_ms=0, header_length=0))
    assert _samples(metrics, "trustserve_batch_size_sum") == [rows]
