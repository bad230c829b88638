"""The figures a worker sends with its answers, for the frontend's metrics (no subprocess)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.worker.test_loop import MemorySource, TinyEngine, loop_with, v2
from trustserve.archive import Manifest
from trustserve.broker.base import Job, JobKind
from trustserve.worker.cores import HostCores, LoneWide, host_cores
from trustserve.worker.loop import WorkerLoop


async def test_each_engine_run_is_reported_once_and_every_answer_has_its_timings() -> None:
    source, engine = MemorySource(), TinyEngine()
    await loop_with(engine, source, max_batch=4).process(
        [v2(np.ones((n, 4), np.float32)) for n in (3, 2, 2, 4)]
    )
    assert engine.batches == [3, 4, 4]
    metas = [o.meta for _, o in source.answers]
    assert [m.batch_first for m in metas] == [True, True, False, True]
    assert [m.batch_size for m in metas if m.batch_first] == engine.batches
    for m in metas:
        assert m.inference_ms is not None and m.inference_ms >= 0
        assert m.preprocess_ms is not None and m.preprocess_ms >= 0
        assert m.queue_ms is not None and m.queue_ms >= 0


async def test_key_refreshes_ride_on_the_next_answer_only_even_an_error() -> None:
    pending = [{"ok": 2, "refused": 1}]
    source, engine = MemorySource(), TinyEngine()
    loop = loop_with(engine, source)
    loop.refreshes = lambda: pending.pop() if pending else None
    bad = Job("bad", "tiny:1", JobKind.TORCHSERVE, b"{no", 0.0)
    await loop.process([bad, v2(np.ones((1, 4), np.float32))])
    (_, error), (_, answer) = source.answers
    assert error.status == 400 and error.meta.key_refreshes == {"ok": 2, "refused": 1}
    assert answer.status == 200 and answer.meta.key_refreshes is None


async def test_a_batch_on_the_wide_session_says_so_once(tmp_path: Path) -> None:
    """What ``trustserve_wide_batches_total`` counts: the worker marks the first answer of
    a batch the wide session ran, and no other (a quiet host: the runnable count is the
    worker's own thread only; no sibling holds a claim)."""
    source, narrow, wide = MemorySource(), TinyEngine(), TinyEngine()
    cores = HostCores(tmp_path / "cores.lock")
    shared = LoneWide(narrow, cores, runnable=lambda: 1)
    shared.widen(wide, host_cores())
    manifest: Manifest = loop_with(narrow, source, max_batch=8).manifest
    loop = WorkerLoop(source, "tiny:1", manifest, shared)
    await loop.process([v2(np.ones((n, 4), np.float32)) for n in (1, 1)])  # lone: wide
    await loop.process([v2(np.ones((n, 4), np.float32)) for n in (3, 3)])  # 6 rows: narrow
    assert wide.batches == [2] and narrow.batches == [6]
    metas = [o.meta for _, o in source.answers]
    assert [m.wide for m in metas] == [True, False, False, False]
    assert [m.batch_first for m in metas] == [True, False, True, False]
    cores.close()
