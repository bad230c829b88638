"""Starts, restarts and stops worker processes, a number per model.

The supervisor runs beside the frontend and never sees a request; a worker that
exits unexpectedly is started again (with a growing back-off while it keeps
failing), and the broker hands its unanswered jobs to another worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from dataclasses import dataclass, field

from trustserve.frontend.registry import ModelEntry
from trustserve.worker.main import EXIT_UNSERVABLE

log = logging.getLogger(__name__)
STOP_GRACE_S = 10.0


@dataclass
class WorkerSlot:
    entry: ModelEntry
    process: asyncio.subprocess.Process | None = None
    started_at: float = 0.0
    restarts: int = 0
    stopping: bool = False
    task: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None


class WorkerSupervisor:
    def __init__(self, worker_args: list[str], env: dict[str, str] | None = None) -> None:
        self.worker_args = worker_args
        self.env = env
        self._slots: dict[str, list[WorkerSlot]] = {}

    def workers(self, queue: str) -> list[WorkerSlot]:
        return list(self._slots.get(queue, []))

    async def scale(self, entry: ModelEntry, n: int) -> None:
        """Run ``n`` workers for ``entry``; asking again after a load failure tries afresh."""
        slots = self._slots.setdefault(entry.queue, [])
        slots[:] = [s for s in slots if s.task is None or not s.task.done()]
        entry.failed = None
        while len(slots) < n:
            slot = WorkerSlot(entry)
            slot.task = asyncio.create_task(self._keep_running(slot))
            slots.append(slot)
        surplus = slots[n:]
        del slots[n:]
        await asyncio.gather(*(self._stop(s) for s in surplus))
        entry.min_workers = n

    async def stop(self, queue: str) -> None:
        await asyncio.gather(*(self._stop(s) for s in self._slots.pop(queue, [])))

    async def stop_all(self) -> None:
        await asyncio.gather(*(self.stop(q) for q in list(self._slots)))

    async def _keep_running(self, slot: WorkerSlot) -> None:
        backoff = 0.5
        while not slot.stopping:
            args = [
                *self.worker_args,
                "--archive",
                str(slot.entry.path),
            ]
            slot.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "trustserve.worker", *args, env=self.env
            )
            slot.started_at = time.monotonic()
            code = await slot.process.wait()
            if slot.stopping:
                return
            if code == EXIT_UNSERVABLE:
                slot.entry.failed = (
                    f"model {slot.entry.manifest.name} version {slot.entry.manifest.version} "
                    "cannot be served: its archive did not open or its key was refused "
                    "(the worker log says which)"
                )
                log.error("%s", slot.entry.failed)
                return
            if time.monotonic() - slot.started_at > 60:
                backoff = 0.5  # it had been running fine: restart at once
            slot.restarts += 1
            log.warning(
                "worker for %s (pid %s) exited with %s; restarting in %.1f s",
                slot.entry.queue,
                slot.process.pid,
                code,
                backoff,
            )
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 30.0)

    async def _stop(self, slot: WorkerSlot) -> None:
        slot.stopping = True
        proc = slot.process
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), STOP_GRACE_S)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        if slot.task is not None:
            slot.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await slot.task
