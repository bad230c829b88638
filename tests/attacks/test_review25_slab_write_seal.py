"""Review (issue 25): no worker can write the slab pool, even by reopening its descriptor.

A worker gets the pool read-only, but a memfd of its own user reopens for writing through
``/proc/self/fd`` (mode 0600 keeps out only other users). So one model's worker could
rewrite a body another model's worker was reading in place. The pool is now sealed with
F_SEAL_FUTURE_WRITE once the frontend has mapped it: the frontend's own mapping writes on,
no new descriptor or mapping can.
"""

from __future__ import annotations

import mmap
import os

import pytest

from trustserve.broker.slabs import SlabPool


def test_a_worker_that_reopens_the_pool_for_writing_cannot_write_a_slab() -> None:
    pool = SlabPool(4, 4096)
    try:
        slab = pool.put(b"the body a worker reads")
        assert slab is not None
        start = slab * 4096
        try:
            rw = os.open(f"/proc/self/fd/{pool.reader_fd}", os.O_RDWR)
        except PermissionError:
            return  # not even reopened for writing: nothing to test
        try:
            with pytest.raises(PermissionError):
                os.pwrite(rw, b"forged", start)
            with pytest.raises(PermissionError):
                mmap.mmap(rw, 4 * 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(rw)
        with open(f"/proc/self/fd/{pool.reader_fd}", "rb") as seen:
            assert seen.read(start + 23)[start:] == b"the body a worker reads"
        pool.free(slab)
        assert pool.put(b"the frontend still writes") == slab  # its own mapping
        with open(f"/proc/self/fd/{pool.reader_fd}", "rb") as seen:
            assert seen.read(start + 25)[start:] == b"the frontend still writes"
    finally:
        pool.close()
