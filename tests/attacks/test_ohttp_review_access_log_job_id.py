"""OHTTP review: the access log writes async job ids, which are bearer capabilities.

``frontend/jobs.py``: "A job id is 256 random bits: knowing it is what lets one fetch the
answer" (``GET /v2/jobs/{id}``, no other check). The access log added for the relay work
says it never writes "a query string (a query may carry a secret)", yet it writes the
path whole, and a job poll's path is the secret. Whoever reads the log (a log shipper,
an operator's SIEM, any local user: the file is created with the umask) can fetch the
answer of every async job in its retention, in plaintext for a standard (unsealed) one.
The log should show the route (``/v2/jobs/{job}``), not the id.
"""

from __future__ import annotations

import asyncio
import logging
import secrets

from starlette.types import Message, Receive, Scope, Send

from trustserve.frontend.access_log import AccessLog


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


async def answered_200(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


def test_a_job_poll_does_not_write_the_job_id() -> None:
    logger = logging.getLogger("tests.ohttp_review.access")
    logger.propagate = False
    lines = Lines()
    logger.addHandler(lines)
    logger.setLevel(logging.INFO)
    job_id = secrets.token_urlsafe(32)
    scope: Scope = {
        "type": "http",
        "method": "GET",
        "path": f"/v2/jobs/{job_id}",
        "query_string": b"",
        "headers": [],
        "client": ("192.0.2.7", 40000),
    }

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        pass

    try:
        asyncio.run(AccessLog(answered_200, logger)(scope, receive, send))
    finally:
        logger.removeHandler(lines)
    assert len(lines.lines) == 1 and "192.0.2.7" in lines.lines[0]
    assert job_id not in lines.lines[0], lines.lines[0]
