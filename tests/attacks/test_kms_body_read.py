"""The KMS reads a body only up to its limit.

Before: ``/v1/*`` handlers called ``request.body()``, which buffers the whole
body (any size, any time) and only then compared it with the 4 MiB limit.
Now the declared Content-Length is checked first and the stream is cut as
soon as it passes the limit: 413 after at most the limit plus one chunk.
"""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path
from typing import Any

from tests.attacks.kms_local import local_kms
from trustserve.kms.app import MAX_BODY, create_app

CHUNK = 256 * 1024


async def _send_chunked(app: Any, chunks: int) -> tuple[int, int]:
    """POST /v1/release as a chunked stream of ``chunks`` chunks: (status, chunks read)."""
    read = 0
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal read
        read += 1
        return {"type": "http.request", "body": b"x" * CHUNK, "more_body": read < chunks}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/release",
        "raw_path": b"/v1/release",
        "query_string": b"",
        "headers": [(b"content-type", b"application/json")],
        "client": ("203.0.113.9", 40000),
        "server": ("127.0.0.1", 8000),
    }
    await app(scope, receive, send)
    return status, read


def test_oversized_stream_is_cut_at_the_limit(tmp_path: Path) -> None:
    app = create_app(local_kms(tmp_path), token=secrets.token_urlsafe(16))
    total = 64  # 16 MiB offered
    status, read = asyncio.run(_send_chunked(app, total))
    assert status == 413
    assert read <= MAX_BODY // CHUNK + 1 < total


async def test_oversized_declared_length_is_refused_unread(tmp_path: Path) -> None:
    from tests.attacks.kms_local import http

    async with http(local_kms(tmp_path)) as c:
        r = await c.post(
            "/v1/release",
            content=b"{}",
            headers={"Content-Length": str(MAX_BODY + 1), "Content-Type": "application/json"},
        )
    assert r.status_code in (400, 413)
