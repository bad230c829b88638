"""Starts, restarts and stops worker processes, a number per queue.

The supervisor runs beside the frontend and never sees a request; a worker that
exits unexpectedly is started again (with a growing back-off while it keeps
failing), and the broker hands its unanswered jobs to another worker. A worker
that exits with ``EXIT_UNSERVABLE`` is not restarted: the supervisor reports it
through ``on_unservable(queue, reason)``. Each restart is reported through
``on_restart(queue)`` (the restart counter of the metrics).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from trustserve.worker.exits import EXIT_UNSERVABLE, UNSERVABLE
from trustserve.worker.options import WorkerOptions

log = logging.getLogger(__name__)
STOP_GRACE_S = 10.0
HEALTHY_AFTER_S = 60.0  # a worker that ran this long restarts at once if it dies
MAX_BACKOFF_S = 30.0
WORKER_COMMAND = (sys.executable, "-m", "trustserve.worker")
PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int) -> Callable[[], None]:
    """Runs in the child before exec: SIGTERM when the supervisor dies (even by kill -9),
    so no orphan keeps serving and a restarted supervisor does not double the workers."""

    def arm() -> None:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # it died before the line above
            os._exit(1)

    return arm


@dataclass
class WorkerSlot:
    queue: str
    archive: Path
    process: asyncio.subprocess.Process | None = None
    started_at: float = 0.0
    restarts: int = 0
    stopping: bool = False
    task: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None


async def _pass_on(stderr: asyncio.StreamReader) -> str | None:
    """Copies a worker's log to ours until it exits; returns the reason it gave up, if any."""
    why = None
    async for line in stderr:
        sys.stderr.buffer.write(line)
        sys.stderr.buffer.flush()
        text = line.decode(errors="replace").rstrip()
        if UNSERVABLE in text:
            why = text.split(UNSERVABLE, 1)[1]
    return why


class WorkerSupervisor:
    """``options`` is the template every worker starts with (its archive is set per queue);
    ``command`` the program that reads them (the worker module by default)."""

    def __init__(
        self,
        options: WorkerOptions,
        env: dict[str, str] | None = None,
        *,
        on_unservable: Callable[[str, str], None] | None = None,
        on_restart: Callable[[str], None] | None = None,
        command: Sequence[str] = WORKER_COMMAND,
        first_backoff_s: float = 0.5,
    ) -> None:
        self.options = options
        self.env = env
        self.on_unservable = on_unservable
        self.on_restart = on_restart
        self.command = tuple(command)
        self.first_backoff_s = first_backoff_s
        self._slots: dict[str, list[WorkerSlot]] = {}

    def workers(self, queue: str) -> list[WorkerSlot]:
        return list(self._slots.get(queue, []))

    async def scale(self, queue: str, archive: Path, n: int) -> None:
        """Run ``n`` workers for ``queue``; asking again after a load failure tries afresh."""
        slots = self._slots.setdefault(queue, [])
        slots[:] = [s for s in slots if s.task is None or not s.task.done()]
        while len(slots) < n:
            slot = WorkerSlot(queue, archive)
            slot.task = asyncio.create_task(self._keep_running(slot))
            slots.append(slot)
        surplus = slots[n:]
        del slots[n:]
        await asyncio.gather(*(self._stop(s) for s in surplus))

    async def stop(self, queue: str) -> None:
        await asyncio.gather(*(self._stop(s) for s in self._slots.pop(queue, [])))

    async def stop_all(self) -> None:
        await asyncio.gather(*(self.stop(q) for q in list(self._slots)))

    def argv(self, slot: WorkerSlot) -> list[str]:
        return [*self.command, *replace(self.options, archive=slot.archive).to_argv()]

    async def _keep_running(self, slot: WorkerSlot) -> None:
        backoff = self.first_backoff_s
        while not slot.stopping:
            argv = self.argv(slot)
            slot.process = await asyncio.create_subprocess_exec(
                *argv,
                env=self.env,
                stderr=asyncio.subprocess.PIPE,
                preexec_fn=_die_with_parent(os.getpid()),
            )
            slot.started_at = time.monotonic()
            assert slot.process.stderr is not None
            why = await _pass_on(slot.process.stderr)
            code = await slot.process.wait()
            if slot.stopping:
                return
            if code == EXIT_UNSERVABLE:
                reason = f"{slot.queue} cannot be served: {why or 'see the worker log'}"
                log.error("%s", reason)
                if self.on_unservable is not None:
                    self.on_unservable(slot.queue, reason)
                return
            if time.monotonic() - slot.started_at > HEALTHY_AFTER_S:
                backoff = self.first_backoff_s
            slot.restarts += 1
            if self.on_restart is not None:
                self.on_restart(slot.queue)
            log.warning(
                "worker for %s (pid %s) exited with %s; restarting in %.1f s",
                slot.queue,
                slot.process.pid,
                code,
                backoff,
            )
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_S)

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
