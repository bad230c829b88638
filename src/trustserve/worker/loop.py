"""The worker loop: take a batch, run it, answer every job in it exactly once."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from trustserve.archive import Manifest
from trustserve.broker.base import Job, JobSource, Outcome
from trustserve.engines.base import Engine, Tensors
from trustserve.errors import TrustserveError
from trustserve.worker.batching import Decoded, concat, decode, encode_answer, plan, split
from trustserve.worker.sealed import SealedReader

log = logging.getLogger(__name__)


class WorkerLoop:
    def __init__(
        self,
        source: JobSource,
        queue: str,
        manifest: Manifest,
        engine: Engine,
        preprocess: Callable[[bytes], Any] | None = None,
        sealed: SealedReader | None = None,
    ) -> None:
        self.sealed = sealed
        self.source = source
        self.queue = queue
        self.manifest = manifest
        self.engine = engine
        self.preprocess = preprocess
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="engine")

    async def run(self, stop: asyncio.Event) -> None:
        """Until ``stop``: a batch being processed is finished, a pending take is abandoned
        (the broker hands anything it had taken to another worker)."""
        delay = self.manifest.max_batch_delay_ms / 1000
        stopping = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set():
                take = asyncio.ensure_future(
                    self.source.take(self.queue, self.manifest.max_batch_size, delay)
                )
                await asyncio.wait({take, stopping}, return_when=asyncio.FIRST_COMPLETED)
                if not take.done():
                    take.cancel()
                    break
                jobs = take.result()
                if jobs:
                    await self.process(jobs)
        finally:
            stopping.cancel()
            self._executor.shutdown(wait=False)

    async def process(self, jobs: list[Job]) -> None:
        loop = asyncio.get_running_loop()
        taken_at = time.time()
        decoded: list[Decoded] = []
        for job in jobs:
            try:
                decoded.append(await loop.run_in_executor(self._executor, self._decode, job))
            except TrustserveError as exc:
                await self._fail(job, exc.status, str(exc))
            except Exception:
                log.exception("reading a %s request failed", job.kind)
                await self._fail(job, 500, "the worker could not read this request")
        for run in plan(decoded, self.manifest.max_batch_size):
            start = time.perf_counter()
            try:
                outputs = await loop.run_in_executor(self._executor, self._infer, run)
            except Exception:
                log.exception("inference failed on a batch of %d", len(run))
                for d in run:
                    await self._fail(d.job, 500, "inference failed")
                continue
            infer_ms = (time.perf_counter() - start) * 1000
            rows = sum(d.rows for d in run)
            for d, out in zip(run, split(run, outputs), strict=True):
                body, meta = encode_answer(d, self.manifest, out)
                meta.update(
                    inference_ms=infer_ms,
                    queue_ms=max(0.0, (taken_at - d.job.enqueued_at) * 1000),
                    batch_size=rows,
                )
                await self.source.answer(d.job, Outcome(d.job.id, 200, body, meta))

    def _decode(self, job: Job) -> Decoded:
        return decode(job, self.manifest, self.preprocess, self.sealed)

    def _infer(self, run: list[Decoded]) -> Tensors:
        return self.engine.infer(concat(run))

    async def _fail(self, job: Job, status: int, message: str) -> None:
        await self.source.answer(job, Outcome(job.id, status, message.encode(), {"error": True}))
