"""Request bodies in shared memory between the embedded broker and its local workers.

The frontend owns one anonymous memory file (``memfd``: never in /dev/shm, mode 0600,
sealed so it can neither grow nor shrink, so no worker can make the frontend's own
mapping fault, and against every write but the frontend's own mapping's), cut into
``slabs`` fixed slabs. Each worker that asks for it gets a read-only descriptor of it
once, with its welcome over its Unix socket (SCM_RIGHTS).

A job whose body fits a free slab is written there once and travels as a reference
``[slab, length]`` in its frame head; the worker reads it through its read-only
mapping (``SlabView.body``), a zero-copy view. A slab belongs to one delivery of one
job to one worker connection: from the write until that worker answers the job or its
connection ends, whatever the job's deadline did meanwhile; only then is it reused.
A body larger than a slab, an empty one, or a full pool travels in the frame as before:
the pool never fails a request.
"""

from __future__ import annotations

import fcntl
import logging
import mmap
import os
import socket
from pathlib import Path
from typing import Any

from trustserve.broker.wire import unframe

log = logging.getLogger(__name__)

SLAB_BYTES = 1 << 20  # a 224x224x3 FP32 v2 body (602 KB) fits with room to spare
SLABS = 64  # memory is taken only as slabs are first written
_SEAL_FUTURE_WRITE = getattr(fcntl, "F_SEAL_FUTURE_WRITE", 0x0010)  # linux/fcntl.h


class SlabPool:
    """The frontend's side: slabs to write bodies into, freed by the broker."""

    def __init__(self, slabs: int = SLABS, slab_bytes: int = SLAB_BYTES) -> None:
        fd = os.memfd_create("trustserve-slabs", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            os.fchmod(fd, 0o600)
            os.ftruncate(fd, slabs * slab_bytes)
            self._map = mmap.mmap(fd, slabs * slab_bytes)
            # this mapping writes on; no descriptor a worker reopens through /proc can
            # write (its user may open a 0600 file), nor any new mapping (Linux 5.1)
            seals = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | _SEAL_FUTURE_WRITE
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals | fcntl.F_SEAL_SEAL)
            # what workers get: the same memory, opened read-only, so they cannot write a slab
            self.reader_fd = os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_CLOEXEC)
        except BaseException:
            if hasattr(self, "_map"):
                self._map.close()
            os.close(fd)
            raise
        self._fd = fd
        self.slabs = slabs
        self.slab_bytes = slab_bytes
        self._free = list(range(slabs - 1, -1, -1))
        self._used: set[int] = set()

    @classmethod
    def create(cls) -> SlabPool | None:
        """A pool, or None where this system has no memfd (bodies then go through the socket)."""
        try:
            return cls()
        except (OSError, AttributeError) as exc:
            log.warning("no shared memory for local jobs (%s): bodies go through the socket", exc)
            return None

    @property
    def in_use(self) -> int:
        return len(self._used)

    def put(self, data: bytes) -> int | None:
        """The slab ``data`` was written into, or None: too big, empty, or no slab free."""
        if not data or len(data) > self.slab_bytes or not self._free:
            return None
        slab = self._free.pop()
        self._used.add(slab)
        start = slab * self.slab_bytes
        self._map[start : start + len(data)] = data
        return slab

    def free(self, slab: int) -> None:
        if slab in self._used:  # a slab is freed once, whoever asks twice
            self._used.remove(slab)
            self._free.append(slab)

    def close(self) -> None:
        self._map.close()
        os.close(self.reader_fd)
        os.close(self._fd)


class SlabView:
    """A worker's side: the pool mapped read-only; every reference checked before it is read."""

    def __init__(self, fd: int, slabs: int, slab_bytes: int) -> None:
        try:
            if os.fstat(fd).st_size < slabs * slab_bytes:
                raise ValueError("the shared memory is smaller than the welcome says")
            self._map = mmap.mmap(fd, slabs * slab_bytes, prot=mmap.PROT_READ)
        finally:
            os.close(fd)
        self._view = memoryview(self._map)
        self.slabs = slabs
        self.slab_bytes = slab_bytes

    def body(self, ref: Any) -> memoryview:
        """The bytes ``ref`` (``[slab, length]``) names; ValueError for any other reference."""
        if not (isinstance(ref, list) and len(ref) == 2 and all(type(x) is int for x in ref)):
            raise ValueError("a job's shared-memory reference is malformed")
        slab, length = ref
        if not 0 <= slab < self.slabs:
            raise ValueError(f"a job names slab {slab}, outside the pool of {self.slabs}")
        if not 0 < length <= self.slab_bytes:
            raise ValueError(f"a job's body length {length} does not fit a slab")
        start = slab * self.slab_bytes
        return self._view[start : start + length]


def send_with_fd(sock: Any, data: bytes, fd: int) -> int:
    """Sends ``data`` with ``fd`` attached on the connected Unix socket ``sock`` (an asyncio
    transport's: a duplicate is used); returns how many bytes went (the rest is the caller's)."""
    with socket.socket(fileno=os.dup(sock.fileno())) as dup:
        return socket.send_fds(dup, [data], [fd])


def parse_welcome(welcome: dict[str, Any], fds: list[int]) -> SlabView | None:
    """The worker's view of the pool its welcome offers, if any; stray descriptors closed."""
    slabs, size = welcome.get("slabs"), welcome.get("slab_bytes")
    if len(fds) != 1 or type(slabs) is not int or type(size) is not int:
        for fd in fds:
            os.close(fd)
        return None
    if not (0 < slabs <= 1 << 16 and 0 < size <= 1 << 30):
        os.close(fds[0])
        raise ValueError("the welcome's shared-memory pool is out of bounds")
    return SlabView(fds[0], slabs, size)


def handshake(path: Path, hello: bytes) -> tuple[socket.socket, dict[str, Any], list[int]]:
    """Connects, says hello, reads the welcome and the descriptor that may come with it.

    Blocking, in a thread: the welcome must be read with ``recvmsg`` (a stream reader
    would drop the descriptor), and nothing follows it until the worker asks."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    fds: list[int] = []
    try:
        sock.settimeout(60)
        sock.connect(str(path))
        sock.sendall(hello)
        data = b""
        while len(data) < 8 or len(data) < 8 + int.from_bytes(data[:4], "big"):
            if len(data) >= 8 and int.from_bytes(data[:4], "big") > 1 << 16:
                raise ConnectionError("the embedded broker's welcome is too large")
            chunk, got, _flags, _ = socket.recv_fds(sock, 1 << 16, 1)
            fds += got
            for fd in got:  # recv_fds leaves them inheritable: no child gets the pool
                os.set_inheritable(fd, False)
            if not chunk:
                raise ConnectionError("the embedded broker closed the connection")
            data += chunk
        meta, _ = unframe(data)
        sock.settimeout(None)
        sock.setblocking(False)
        return sock, meta, fds
    except BaseException:
        for fd in fds:
            os.close(fd)
        sock.close()
        raise
