"""Prometheus metrics on their own port, and TLS on by default."""

from __future__ import annotations

import ssl
from pathlib import Path

import httpx
import pytest

from tests.support import RunningStack, start_stack, write_tiny


def test_metrics_count_requests_and_batches(tiny_stack: RunningStack) -> None:
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}
    with tiny_stack.client() as c:
        for _ in range(3):
            assert c.post("/v2/models/tiny/infer", json=body).status_code == 200
        c.post("/v2/models/tiny/infer", content=b"{")
    url = f"https://127.0.0.1:{tiny_stack.metrics_port}/metrics"
    text = httpx.get(url, verify=str(tiny_stack.ca)).text
    assert 'trustserve_requests_total{api="v2",model="tiny",status="200",version="1"}' in text
    assert 'trustserve_requests_total{api="v2",model="tiny",status="400",version="1"}' in text
    assert 'trustserve_batch_size_count{model="tiny",version="1"}' in text
    assert 'trustserve_inference_seconds_bucket{le="0.001",model="tiny",version="1"}' in text
    assert 'trustserve_queue_seconds_count{model="tiny",version="1"}' in text
    assert 'trustserve_workers{model="tiny",version="1"} 1.0' in text


def test_tls_is_on_and_verifies_against_the_local_ca(tiny_stack: RunningStack) -> None:
    with pytest.raises(httpx.ConnectError):
        httpx.get(tiny_stack.url + "/v2", verify=True)  # the system CAs do not know our CA
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.get(f"http://localhost:{tiny_stack.port}/v2")
    ctx = ssl.create_default_context(cafile=str(tiny_stack.ca))
    assert httpx.get(tiny_stack.url + "/v2", verify=ctx).status_code == 200
    assert (tiny_stack.home / "tls" / "server-key.pem").stat().st_mode & 0o077 == 0


def test_two_versions_of_one_model_are_two_series(tmp_path: Path) -> None:
    store = tmp_path / "store"
    write_tiny(store, version="1")
    write_tiny(store, version="2")
    stack = start_stack(tmp_path / "home", store, "--workers", "1", dev=False)
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}
    try:
        for version in ("1", "2"):  # the stack is ready with one; a request waits for no worker
            stack.wait_model_ready("tiny", version, timeout=180)
        with stack.client() as c:
            for version in ("1", "2"):
                r = c.post(f"/v2/models/tiny/versions/{version}/infer", json=body, timeout=60)
                assert r.status_code == 200, r.text
        url = f"https://127.0.0.1:{stack.metrics_port}/metrics"
        text = httpx.get(url, verify=str(stack.ca)).text
    finally:
        stack.stop()
    for version in ("1", "2"):
        assert f'trustserve_workers{{model="tiny",version="{version}"}} 1.0' in text
        assert (
            f'trustserve_requests_total{{api="v2",model="tiny",status="200",version="{version}"}}'
            in text
        )
