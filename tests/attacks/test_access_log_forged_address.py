"""Issue 24 item 4: a client names its own address in X-Forwarded-For / Forwarded.

The frontend's access log is how an operator (and a user who put an OHTTP relay in
front of the gateway) tells who talked to it. uvicorn, by default, believes the
forwarded headers of any peer on 127.0.0.1: a client on the same host, or behind any
local forwarder, wrote whatever address it liked into that log (and into every
``request.client`` the frontend reads). Now the peer is the TCP connection's, unless
the operator names a trusted proxy (``--trusted-proxy``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import RunningStack, start_stack

FORGED = "203.0.113.7"


@pytest.fixture(scope="module")
def logged_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    root = tmp_path_factory.mktemp("access-log")
    store = root / "store"
    store.mkdir()
    stack = start_stack(root / "home", store, "--access-log", str(root / "access.log"))
    yield stack
    stack.stop()


def lines_for(log: Path, path: str, timeout: float = 60) -> list[str]:
    """The access log's lines for ``path``, once there is one."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists():
            found = [line for line in log.read_text().splitlines() if f" {path} " in line]
            if found:
                return found
        time.sleep(0.1)
    raise AssertionError(f"no access log line for {path} in {timeout} s")


def test_the_access_log_shows_the_tcp_peer_not_a_forwarded_header(
    logged_stack: RunningStack,
) -> None:
    forged = {
        "X-Forwarded-For": FORGED,
        "X-Forwarded-Proto": "https",
        "Forwarded": f"for={FORGED};proto=https",
        "X-Real-IP": FORGED,
    }
    with logged_stack.client() as c:
        assert c.get("/v2/health/live", headers=forged).status_code == 200
        assert c.get("/v2/models/absent/ready", headers=forged).status_code == 404
    log = logged_stack.home.parent / "access.log"
    [ready] = lines_for(log, "/v2/models/absent/ready")  # after the live probe: both logged
    text = log.read_text()
    assert FORGED not in text, text
    assert ready.split()[1:] == ["127.0.0.1", "GET", "/v2/models/absent/ready", "404"]
    for line in lines_for(log, "/v2/health/live"):  # the start-up's probes and the forged one
        assert line.split()[1:] == ["127.0.0.1", "GET", "/v2/health/live", "200"], line


def test_the_access_log_holds_no_query_string_or_body(logged_stack: RunningStack) -> None:
    secret = "s3cr3t-token-in-a-query"
    with logged_stack.client() as c:
        c.post("/v2/models/absent/infer", params={"token": secret}, content=secret.encode())
    log = logged_stack.home.parent / "access.log"
    [line] = lines_for(log, "/v2/models/absent/infer")
    assert secret not in log.read_text()
    assert line.split()[1:] == ["127.0.0.1", "POST", "/v2/models/absent/infer", "404"]
