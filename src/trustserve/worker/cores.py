"""One request alone gets every core: a per-host core budget the workers share.

The default stack runs one single-threaded worker per core, the best throughput once
every worker is busy; but then a lone request runs on one core while the others idle.
So each worker holds two engine sessions of its model: the narrow one (``--threads``)
and a wide one (``--lone-threads``, default every core of the host). A batch of at most
``LONE_MAX_ROWS`` rows runs wide when no other worker on the host is busy, narrow
otherwise. Both sessions compute the same thing (tests/engines/test_lone_threads.py).

The budget is a file in the workers' private run directory (``HOME/run/cores.lock``,
mode 0600 under the 0700 run directory: another tenant of the host neither reads who is
busy, a timing signal, nor locks it to slow us). A worker is busy while it holds a
POSIX record lock on the one byte at the offset of its PID, from taking a batch until
its answers are sent. Whether another worker is busy is whether a shared lock on every
other byte fails (non-blocking: nothing waits). The kernel drops a process's record
locks when it exits, so a killed worker's claim goes with it: nothing leaks, nothing is
cleaned up. A worker claims before it looks: two workers starting at once both see each
other and both run narrow, never both wide. A wide run that a sibling joins midway
shares the cores for the rest of that one run (at most ``LONE_MAX_ROWS`` rows).

Other programs on the host count too: a wide run also needs the cores free of them. An
intra-op thread that loses its core to another process holds every other thread at the
next barrier, so on an oversubscribed host two threads run a batch slower than one
(measured: 171 ms against 85 ms at load 8 on 2 cores, docs/performance.md). The kernel's
count of runnable threads (``/proc/loadavg``, read in about 40 µs, this thread included)
must leave the wide session its cores, give or take one thread waking for a moment.

Workers on one host share the budget when they share a home (the stack's, or
``--home`` for workers over Redis started by hand on one host); workers with separate
homes do not see each other.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from trustserve.engines.base import Engine, Tensors

log = logging.getLogger(__name__)
LONE_MAX_ROWS = 4  # a larger batch is load: the sessions' threads would oversubscribe
_BUSY_ELSEWHERE = (errno.EACCES, errno.EAGAIN)


def host_cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0))


def runnable_threads() -> int:
    """Threads running or waiting for a core on this host now, the caller included (0: the
    kernel does not say, and nothing holds a lone batch back)."""
    try:
        with open("/proc/loadavg", "rb") as f:
            return int(f.read().split()[3].split(b"/")[0])
    except (OSError, IndexError, ValueError):
        return 0


def trim_heap() -> None:
    """Hands the C heap's free pages back to the system (glibc ``malloc_trim``; elsewhere
    nothing). Building the wide session in a thread leaves a malloc arena of parse and
    optimisation garbage: resnet50 INT8's second session costs +81 MiB RSS before the
    trim, +24 MiB after (docs/performance.md)."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return
    trim(0)


class HostCores:
    """The busy claims of the workers that share ``path`` (one byte each, at their PID)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._me = os.getpid()

    @contextlib.contextmanager
    def busy(self) -> Iterator[None]:
        """This worker is busy inside; it waits at most for a sibling's look (microseconds)."""
        fcntl.lockf(self._fd, fcntl.LOCK_EX, 1, self._me)
        try:
            yield
        finally:
            fcntl.lockf(self._fd, fcntl.LOCK_UN, 1, self._me)

    def others_busy(self) -> bool:
        """True when another process holds a claim. The probe's shared locks leave out this
        process's own byte: record locks of one process merge, and would convert it."""
        ranges = [(self._me, 0), (0, self._me + 1)]  # (length, start): length 0 is "to the end"
        taken = []
        try:
            for length, start in ranges:
                try:
                    fcntl.lockf(self._fd, fcntl.LOCK_SH | fcntl.LOCK_NB, length, start)
                except OSError as exc:
                    if exc.errno in _BUSY_ELSEWHERE:
                        return True
                    raise
                taken.append((length, start))
            return False
        finally:
            for length, start in taken:
                fcntl.lockf(self._fd, fcntl.LOCK_UN, length, start)

    def close(self) -> None:
        os.close(self._fd)


class LoneWide:
    """An engine that runs a small batch on the wide session while no sibling is busy.

    ``wide`` may arrive later (``widen``): the worker answers with the narrow session
    while the wide one builds.
    """

    def __init__(
        self,
        narrow: Engine,
        cores: HostCores,
        max_rows: int = LONE_MAX_ROWS,
        runnable: Callable[[], int] = runnable_threads,
    ) -> None:
        self.name = narrow.name
        self.runnable = runnable
        self.threads = 0  # the wide session's, once it is built
        self.host_cores = host_cores()
        self.narrow = narrow
        self.wide: Engine | None = None
        self.cores = cores
        self.max_rows = max_rows
        self.wide_runs = 0
        self.narrow_runs = 0
        self.last_wide = False  # the last batch's session (one engine thread picks, reads)

    def widen(self, wide: Engine, threads: int) -> None:
        self.wide, self.threads = wide, threads

    def room(self) -> bool:
        """The host has cores for the wide session: besides this thread, at most one more
        runnable than its cores leave over."""
        others = self.runnable() - 1
        return others <= self.host_cores - self.threads + 1

    def pick(self, rows: int) -> Engine:
        if (
            self.wide is not None
            and rows <= self.max_rows
            and not self.cores.others_busy()
            and self.room()
        ):
            self.wide_runs += 1
            self.last_wide = True
            return self.wide
        self.narrow_runs += 1
        self.last_wide = False
        return self.narrow

    def infer(self, inputs: Tensors) -> Tensors:
        rows = next(iter(inputs.values())).shape[0] if inputs else 0
        return self.pick(int(rows)).infer(inputs)
