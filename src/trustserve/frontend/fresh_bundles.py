"""Coalescing clients' nonces: one piece of KMS evidence for every client waiting.

The KMS meters bundles made for a nonce per client, and the frontend is one
client. So the frontend asks for at most one such bundle at a time: every nonce
that arrives while one is being made waits for the next, which binds the RFC
9162 Merkle root of all of them (at most ``MAX_BATCH``); each client gets the
bundle with its own inclusion proof (``trustserve.keyrelease.bundle``). One client
sending many nonces only makes the batch larger, never the KMS's work. The
frontend also keeps within the KMS's default per-client budget on its own
(``PER_SECOND``, bursts of ``BURST``, a little under it): a busy frontend sends
a batch at most every 0.6 s rather than have one refused.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from trustserve.crypto import merkle
from trustserve.errors import Unavailable
from trustserve.keyrelease.bundle import MAX_BATCH, encode_nonce

MAX_WAITING = 4 * MAX_BATCH
PER_SECOND = 1.6  # under the KMS's default --fresh-bundle-rate (2) and -burst (10),
BURST = 8.0  # with room for requests that arrive there closer together than they left

Fetch = Callable[[str], Awaitable[dict[str, Any]]]


class NonceBatcher:
    """``fetch(nonce)`` gets a bundle bound to one (base64url) nonce from the KMS."""

    def __init__(self, fetch: Fetch) -> None:
        self._fetch = fetch
        self._waiting: list[tuple[bytes, asyncio.Future[dict[str, Any]]]] = []
        self._task: asyncio.Task[None] | None = None
        self._tokens, self._at = BURST, time.monotonic()

    async def bundle(self, nonce: bytes) -> dict[str, Any]:
        if len(self._waiting) >= MAX_WAITING:
            raise Unavailable("too many attestation requests are waiting; retry", 1)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting.append((nonce, future))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run())
        return await future

    async def _pace(self) -> None:
        """Wait, if need be, until one more request is within the KMS's per-client budget."""
        now = time.monotonic()
        self._tokens = min(BURST, self._tokens + (now - self._at) * PER_SECOND)
        self._at = now
        if self._tokens < 1.0:
            await asyncio.sleep((1.0 - self._tokens) / PER_SECOND)
            self._tokens, self._at = 1.0, time.monotonic()
        self._tokens -= 1.0

    async def _run(self) -> None:
        while self._waiting:
            await self._pace()  # nonces arriving meanwhile join this batch
            batch = [(n, f) for n, f in self._waiting[:MAX_BATCH] if not f.done()]
            del self._waiting[:MAX_BATCH]
            if not batch:
                continue
            nonces = [n for n, _ in batch]
            root, paths = merkle.inclusion_proofs([merkle.leaf_hash(n) for n in nonces])
            try:
                bundle = await self._fetch(encode_nonce(root))
            except Exception as exc:  # every waiter hears why (an Unavailable, usually)
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for index, (_, future) in enumerate(batch):
                if not future.done():
                    proof = {
                        "leaf_index": index,
                        "tree_size": len(nonces),
                        "inclusion_path": [encode_nonce(h) for h in paths[index]],
                    }
                    future.set_result({**bundle, "nonce_batch": proof})
