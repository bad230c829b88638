"""The stack's HTTP server and the access log: whose address a line shows, and what it never holds.

A real uvicorn server on loopback (in a thread), a real HTTP client; the forged-header
attack against the whole stack is tests/attacks/test_access_log_forged_address.py.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from tests.support import free_port
from trustserve.errors import ConfigError
from trustserve.frontend.access_log import AccessLog, close_access_log, open_access_log
from trustserve.stack.http import http_server, trusted_proxies

FORGED = "203.0.113.7"


async def echo_peer(request: Request) -> Response:
    if request.url.path == "/boom":
        raise RuntimeError("a bug")
    return PlainTextResponse(request.client.host if request.client else "-")


@contextmanager
def serving(log: Path, proxies: tuple[str, ...] = ()) -> Iterator[str]:
    """A logged server on 127.0.0.1 until the block ends; yields its URL."""
    logger = open_access_log(log)
    app = AccessLog(Starlette(routes=[Route("/{rest:path}", echo_peer)]), logger)
    port = free_port()
    server = http_server(app, "127.0.0.1", port, None, proxies)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            assert thread.is_alive(), "the server thread ended before it listened"
            time.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join()
        close_access_log(logger)


def test_a_forwarded_header_is_ignored_unless_its_sender_is_a_trusted_proxy(
    tmp_path: Path,
) -> None:
    log = tmp_path / "access.log"
    with serving(log) as url:
        peer = httpx.get(f"{url}/who", headers={"X-Forwarded-For": FORGED}).text
    assert peer == "127.0.0.1"
    assert log.read_text().split()[1:] == ["127.0.0.1", "GET", "/who", "200"]

    trusted = tmp_path / "trusted.log"
    with serving(trusted, trusted_proxies(("127.0.0.0/8",))) as url:
        peer = httpx.get(f"{url}/who", headers={"X-Forwarded-For": FORGED}).text
    assert peer == FORGED  # the operator said this proxy's header is the truth
    assert trusted.read_text().split()[1:] == [FORGED, "GET", "/who", "200"]


def test_a_path_cannot_forge_a_line(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    with serving(log) as url:
        httpx.get(f"{url}/a%0A2026-01-01T00:00:00Z%20{FORGED}%20GET%20/x%20200", params={"q": "1"})
    [line] = log.read_text().splitlines()
    assert line.split()[1:] == [
        "127.0.0.1",
        "GET",
        f"/a%0A2026-01-01T00:00:00Z%20{FORGED}%20GET%20/x%20200",
        "404",  # no route matches a newline
    ]


def test_a_job_id_is_never_written_however_the_path_is_spelled(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    job = secrets.token_urlsafe(32)  # a job id is a capability to its answer
    spellings = [f"/v2/jobs/{job}", f"/v2/jobs%2F{job}", f"//v2//jobs/{job}", f"/v2/jobs/{job}/x"]
    with serving(log) as url:
        for path in spellings:
            httpx.get(url + path)
        httpx.get(f"{url}/v2/models/tiny/infer")
    text = log.read_text()
    assert job not in text
    assert [line.split()[3] for line in text.splitlines()] == [
        "/v2/jobs/{job}",
        "/v2/jobs/{job}",
        "/v2/jobs/{job}",
        "/v2/jobs/{job}/...",
        "/v2/models/tiny/infer",  # a model name is not a secret
    ]


def test_a_request_that_failed_is_logged_with_its_500(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    with serving(log) as url:
        assert httpx.get(f"{url}/boom").status_code == 500
    assert log.read_text().split()[1:] == ["127.0.0.1", "GET", "/boom", "500"]


def test_a_trusted_proxy_that_is_not_an_address_is_refused_by_name() -> None:
    with pytest.raises(ConfigError, match=r"trusted-proxy.*proxy\.example"):
        trusted_proxies(("proxy.example",))


def test_serve_refuses_a_trusted_proxy_that_is_not_an_address_before_any_work(
    tmp_path: Path,
) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "trustserve.cli", "serve", "--home", str(tmp_path / "h"),
         "--model-store", str(tmp_path / "store"), "--port", str(free_port()),
         "--management-port", str(free_port()), "--metrics-port", str(free_port())],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "TRUSTSERVE_LISTEN_TRUSTED_PROXIES": "10.0.0.0/8,proxy.example"},
    )  # fmt: skip
    assert out.returncode == 2, out.stderr
    assert "--trusted-proxy" in out.stderr and "proxy.example" in out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "h" / "tls").exists()  # refused before the stack made anything
