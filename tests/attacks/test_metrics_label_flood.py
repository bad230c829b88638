"""Metrics label flood: a random model name in the URL must not become a metrics label.

Before: every inference request was counted under the model name from its
URL, even when the answer was 404; each new name made label sets that
Prometheus clients keep forever (about 5 KB each), so an anonymous client
could grow the frontend's memory and the metrics page without bound. Now only
registered models are labels; every other request is counted under
``unknown``.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from prometheus_client import generate_latest

from tests.frontend.inprocess import local_frontend


async def test_unknown_model_names_share_one_label(tmp_path: Path) -> None:
    client, metrics = local_frontend(tmp_path / "store")
    names = [f"m{secrets.token_hex(8)}" for _ in range(200)]
    async with client:
        for name in names[:100]:
            assert (await client.post(f"/v2/models/{name}/infer", json={})).status_code == 404
        for name in names[100:]:
            assert (await client.post(f"/predictions/{name}", content=b"x")).status_code == 404
        known = await client.post("/v2/models/tiny/infer", json={"inputs": []})
        assert known.status_code == 400
    page = generate_latest(metrics.registry).decode()
    assert not any(name in page for name in names)
    v2 = 'trustserve_requests_total{api="v2",model="unknown",status="404",version=""} 100.0'
    ts = 'trustserve_requests_total{api="torchserve",model="unknown",status="404",version=""} 100.0'
    assert v2 in page and ts in page
    assert 'model="tiny",status="400"' in page
