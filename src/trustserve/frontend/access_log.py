"""A line per HTTP request: who asked (the peer address), what (method, path) and the status.

Never a body, a header or the query string (a query may carry a secret; a sealed body
is the client's), and never a path segment that is a capability: an async job's id is
what lets one fetch its answer, so a poll is written as its route, ``/v2/jobs/{job}``
(model names and versions in paths are written as they are). The line is what an
operator, or a relay's user auditing it, needs to see who talks to the frontend. The
address is ``scope["client"]``: the TCP peer, unless the server was told to believe a
trusted proxy's forwarded header (the stack's ``listen.trusted_proxies``); a header from
anyone else never reaches this line.

    2026-12-06T19:40:00.123Z 127.0.0.3 POST /v2/ohttp/tiny/1 200
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from trustserve.frontend.jobs import JOBS_PATH

LOGGER = "trustserve.access"
# routes whose next path segment is a bearer capability, by their segments before it,
# with the name the line shows instead of it
CAPABILITY_ROUTES: tuple[tuple[tuple[str, ...], str], ...] = (
    (tuple(JOBS_PATH.strip("/").split("/")), "{job}"),
)


def _clean(text: str, limit: int = 512) -> str:
    """``text`` with anything that could forge or break a line percent-escaped."""
    out = [c if " " < c < "\x7f" and c not in '"%' else f"%{ord(c):02X}" for c in text[:limit]]
    return "".join(out) + ("..." if len(text) > limit else "")


def logged_path(path: str) -> str:
    """``path`` as the line shows it: a capability route's template in place of the
    capability (also for a path the router did not match, say with doubled slashes or
    more segments: a mistyped poll still carries a real id), else the path escaped."""
    segments = [part for part in path.split("/") if part]
    for prefix, name in CAPABILITY_ROUTES:
        n = len(prefix)
        if len(segments) > n and tuple(part.lower() for part in segments[:n]) == prefix:
            return "/" + "/".join((*prefix, name)) + ("/..." if len(segments) > n + 1 else "")
    return _clean(path)


def _create_private(target: Path) -> None:
    """``target`` made, if missing, 0600 in a 0700 directory (as the KMS audit log is): it
    holds client addresses, for the operator only, not for every local user."""
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.fchmod(fd, 0o600)  # one left readable by an older version, too
    finally:
        os.close(fd)


def open_access_log(target: Path) -> logging.Logger:
    """The access logger writing to ``target`` (appended, 0600; ``-`` for standard error)."""
    logger = logging.getLogger(LOGGER)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # not into the process's own log
    handler: logging.Handler
    if str(target) == "-":
        handler = logging.StreamHandler(sys.stderr)
    else:
        _create_private(target)
        handler = logging.FileHandler(target, encoding="utf-8")
    formatter = logging.Formatter("%(asctime)s.%(msecs)03dZ %(message)s", "%Y-%m-%dT%H:%M:%S")
    formatter.converter = time.gmtime
    handler.setFormatter(formatter)
    logger.addHandler(handler)
    return logger


def close_access_log(logger: logging.Logger) -> None:
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()


class AccessLog:
    """ASGI middleware: after each HTTP request, one line to ``logger``."""

    def __init__(self, app: ASGIApp, logger: logging.Logger) -> None:
        self.app = app
        self.logger = logger

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status: list[int] = []

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.append(int(message["status"]))
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except Exception:
            if not status:  # the server answers 500 for an error raised before the answer
                status.append(500)
            raise
        finally:
            client = scope.get("client")
            peer = _clean(str(client[0])) if client else "-"
            path = logged_path(str(scope.get("path", "")))
            method = _clean(scope.get("method", ""), 16)
            code = str(status[0]) if status else "-"  # "-": the client left first
            self.logger.info("%s %s %s %s", peer, method, path, code)
