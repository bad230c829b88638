"""The worker loop: take a batch, run it, answer every job in it exactly once.

Each answer carries the worker's figures for metrics in its ``OutcomeMeta`` (authenticated
with the answer in standard mode): a clock read or two per job, nothing more.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

from trustserve.archive import Manifest
from trustserve.broker.base import Job, JobSource, Outcome, OutcomeMeta
from trustserve.engines.base import Engine, Tensors
from trustserve.errors import TrustserveError
from trustserve.worker.batching import (
    Decoded,
    concat,
    decode,
    encode_answer,
    error_outcome,
    plan,
    split,
)
from trustserve.worker.cores import LoneWide
from trustserve.worker.sealed import SealedReader

log = logging.getLogger(__name__)


class BatchWindow:
    """Adaptive batching: how long the next take may wait to fill a batch.

    An idle worker dispatches a request at once (window 0: the broker hands over what
    is queued as soon as one job is there), so a lone request never waits for a batch
    that is not coming. The manifest's ``max_batch_delay_ms`` applies only while the
    load is known to outrun the engine: the previous take came back with a full batch.
    Under such load the queue refills while the engine runs, so full batches keep
    forming and the window costs nothing; below it, batches form from whatever
    arrived while the engine was busy.
    """

    def __init__(self, delay_s: float, max_items: int) -> None:
        self.delay_s = delay_s
        self.max_items = max_items
        self._loaded = False

    def next(self) -> float:
        return self.delay_s if self._loaded else 0.0

    def taken(self, n: int) -> None:
        self._loaded = n >= self.max_items


class WorkerLoop:
    def __init__(
        self,
        source: JobSource,
        queue: str,
        manifest: Manifest,
        engine: Engine,
        preprocess: Callable[[bytes], Any] | None = None,
        sealed: SealedReader | None = None,
        refreshes: Callable[[], dict[str, int] | None] | None = None,
        busy: Callable[[], contextlib.AbstractContextManager[None]] = contextlib.nullcontext,
    ) -> None:
        self.busy = busy  # held from a take until its answers are sent (worker/cores.py)
        self.sealed = sealed
        self.refreshes = refreshes  # key refresh counts to report (KeyRing.drain_refreshes)
        self.source = source
        self.queue = queue
        self.manifest = manifest
        self.engine = engine
        self.preprocess = preprocess
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="engine")

    async def run(self, stop: asyncio.Event) -> None:
        """Until ``stop``: a batch being processed is finished, a pending take is abandoned
        (the broker hands anything it had taken to another worker)."""
        size = self.manifest.max_batch_size
        window = BatchWindow(self.manifest.max_batch_delay_ms / 1000, size)
        stopping = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set():
                take = asyncio.ensure_future(self.source.take(self.queue, size, window.next()))
                await asyncio.wait({take, stopping}, return_when=asyncio.FIRST_COMPLETED)
                if not take.done():
                    take.cancel()
                    break
                jobs = take.result()
                window.taken(len(jobs))
                if jobs:
                    with self.busy():
                        await self.process(jobs)
        finally:
            stopping.cancel()
            self._executor.shutdown(wait=False)

    async def process(self, jobs: list[Job]) -> None:
        loop = asyncio.get_running_loop()
        taken_at = time.time()
        decoded: list[Decoded] = []
        prep_ms: dict[str, float] = {}
        for job in jobs:
            read, prep_ms[job.id] = await loop.run_in_executor(self._executor, self._decode, job)
            if isinstance(read, Outcome):
                await self._send(job, read)
            else:
                decoded.append(read)
        for run in plan(decoded, self.manifest.max_batch_size):
            start = time.perf_counter()
            try:
                outputs = await loop.run_in_executor(self._executor, self._infer, run)
            except Exception:
                log.exception("inference failed on a batch of %d", len(run))
                for d in run:
                    failed = error_outcome(
                        d.job, 500, TrustserveError.code, "inference failed", d.reply.sealed
                    )
                    await self._send(d.job, failed)
                continue
            infer_ms = (time.perf_counter() - start) * 1000
            rows = sum(d.rows for d in run)
            wide = isinstance(self.engine, LoneWide) and self.engine.last_wide
            for i, (d, out) in enumerate(zip(run, split(run, outputs), strict=True)):
                figures = OutcomeMeta(
                    inference_ms=infer_ms,
                    queue_ms=max(0.0, (taken_at - d.job.enqueued_at) * 1000),
                    batch_size=rows,
                    preprocess_ms=prep_ms[d.job.id],
                    batch_first=i == 0,
                    wide=wide and i == 0,
                )
                await self._send(d.job, self._answer(d, out, figures))

    async def _send(self, job: Job, outcome: Outcome) -> None:
        """Every answer leaves here; the first one after a key refresh reports it."""
        counts = self.refreshes() if self.refreshes is not None else None
        if counts is not None:
            outcome = replace(outcome, meta=replace(outcome.meta, key_refreshes=counts))
        await self.source.answer(job, outcome)

    def _answer(self, d: Decoded, outputs: Tensors, figures: OutcomeMeta) -> Outcome:
        try:
            body, meta = encode_answer(d, self.manifest, outputs)
        except Exception:
            log.exception("encoding an answer failed")
            return error_outcome(
                d.job, 500, TrustserveError.code, "encoding the answer failed", d.reply.sealed
            )
        timings = replace(figures, header_length=meta.header_length, sealed=meta.sealed)
        return Outcome(d.job.id, 200, body, timings)

    def _decode(self, job: Job) -> tuple[Decoded | Outcome, float]:
        """The job read (sealed request opened, body parsed, image preprocessed) and the
        milliseconds that took."""
        start = time.perf_counter()
        read = decode(job, self.manifest, self.preprocess, self.sealed)
        return read, (time.perf_counter() - start) * 1000

    def _infer(self, run: list[Decoded]) -> Tensors:
        return self.engine.infer(concat(run))
