"""What the metrics make of a request and of the figures its worker sent with the answer."""

from __future__ import annotations

import asyncio
from pathlib import Path

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tests.support import write_tiny
from trustserve.broker.base import Job, JobKind, OutcomeMeta
from trustserve.broker.embedded import EmbeddedBroker
from trustserve.frontend.metrics import Metrics
from trustserve.frontend.registry import ModelRegistry

TINY = {"model": "tiny", "version": "1"}


def samples(metrics: Metrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    page = generate_latest(metrics.registry).decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(page)
        for s in family.samples
    }


def value(metrics: Metrics, name: str, **labels: str) -> float:
    return samples(metrics).get((name, frozenset({**TINY, **labels}.items())), 0.0)


def test_a_batch_is_counted_once_however_many_requests_ran_in_it() -> None:
    metrics = Metrics()
    for first in (True, False, False):  # three requests of one 6-row batch
        meta = OutcomeMeta(
            inference_ms=4.0, queue_ms=2.0, batch_size=6, preprocess_ms=0.3, batch_first=first
        )
        metrics.observe("tiny", "1", "v2", 200, 0.010, meta)
    assert value(metrics, "trustserve_batch_size_count") == 1
    assert value(metrics, "trustserve_batch_size_sum") == 6
    assert value(metrics, "trustserve_inference_seconds_count") == 1
    assert value(metrics, "trustserve_queue_seconds_count") == 3
    assert value(metrics, "trustserve_preprocess_seconds_count") == 3
    assert abs(value(metrics, "trustserve_queue_seconds_sum") - 0.006) < 1e-9


def test_wide_batches_are_counted_once_each_and_narrow_ones_not() -> None:
    metrics = Metrics()
    for first, wide in ((True, True), (False, False), (True, False)):
        meta = OutcomeMeta(inference_ms=4.0, batch_size=1, batch_first=first, wide=wide)
        metrics.observe("tiny", "1", "v2", 200, 0.010, meta)
    assert value(metrics, "trustserve_wide_batches_total") == 1
    assert value(metrics, "trustserve_batch_size_count") == 2


def test_errors_count_by_code_whoever_answered() -> None:
    metrics = Metrics()
    metrics.observe("tiny", "1", "v2", 400, 0.01, OutcomeMeta("invalid_input"))  # the worker
    metrics.observe("tiny", "1", "v2", 413, 0.01, None, "payload_too_large")  # the frontend
    metrics.observe("tiny", "1", "v2", 200, 0.01, OutcomeMeta(inference_ms=1.0))
    assert value(metrics, "trustserve_errors_total", code="invalid_input") == 1
    assert value(metrics, "trustserve_errors_total", code="payload_too_large") == 1
    assert sum(v for (n, _), v in samples(metrics).items() if n == "trustserve_errors_total") == 2


def test_key_refreshes_add_up_across_answers() -> None:
    metrics = Metrics()
    metrics.observe("tiny", "1", "v2", 200, 0.01, OutcomeMeta(key_refreshes={"ok": 2}))
    metrics.observe("tiny", "1", "v2", 400, 0.01, OutcomeMeta(key_refreshes={"ok": 1, "failed": 1}))
    assert value(metrics, "trustserve_key_refreshes_total", result="ok") == 3
    assert value(metrics, "trustserve_key_refreshes_total", result="failed") == 1


async def test_scrape_samples_the_broker_and_forgets_unregistered_models(tmp_path: Path) -> None:
    store = tmp_path / "store"
    write_tiny(store)
    registry = ModelRegistry(store)
    entry = registry.register("tiny-1.tsm", 1)
    broker = EmbeddedBroker()
    broker.open_consumer(entry.queue)
    jobs = [Job(f"j{i}", entry.queue, JobKind.V2, b"", 1e12) for i in range(2)]
    waiting = [asyncio.ensure_future(broker.submit(j)) for j in jobs]  # nobody takes them
    await asyncio.sleep(0)
    metrics = Metrics()
    metrics.restarted(registry.entries(), entry.queue)
    await metrics.sample(registry.entries(), broker, lambda q: 3)
    assert value(metrics, "trustserve_queue_depth") == 2
    assert value(metrics, "trustserve_workers_live") == 1
    assert value(metrics, "trustserve_workers") == 3
    assert value(metrics, "trustserve_worker_restarts_total") == 1
    registry.unregister("tiny", None)
    await metrics.sample(registry.entries(), broker, lambda q: 0)
    assert not [n for n, _ in samples(metrics) if n == "trustserve_queue_depth"]
    for w in waiting:
        w.cancel()
    await broker.close()
