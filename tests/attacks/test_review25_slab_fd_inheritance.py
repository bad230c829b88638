"""Review (issue 25): the pool's descriptor a worker receives is not inherited by its children.

``socket.recv_fds`` returns descriptors that are inheritable (Python's PEP 446 default does
not cover SCM_RIGHTS), so between the welcome and ``SlabView`` closing it, anything the
worker started would have got a descriptor to every local job's body. The frontend's own
are close-on-exec; the worker's copy is now too, from the moment it arrives.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from trustserve.broker.embedded import EmbeddedBroker
from trustserve.broker.slabs import handshake
from trustserve.broker.wire import frame


async def test_the_descriptor_in_the_welcome_is_close_on_exec(tmp_path: Path) -> None:
    broker = EmbeddedBroker(clear_jobs=True)
    sock = tmp_path / "run" / "broker.sock"
    await broker.serve_workers(sock)
    assert broker.pool is not None and not os.get_inheritable(broker.pool.reader_fd)
    hello = frame({"op": "hello", "queue": "m:1", "slabs": True})
    conn, welcome, fds = await asyncio.to_thread(handshake, sock, hello)
    try:
        assert welcome["op"] == "welcome" and len(fds) == 1
        assert not os.get_inheritable(fds[0])
    finally:
        for fd in fds:
            os.close(fd)
        conn.close()
        await broker.close()
