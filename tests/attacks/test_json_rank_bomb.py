"""JSON rank bomb: a large body whose tensor cannot fit the model must be refused cheaply.

Before: a 61 MiB JSON body whose tensor had the wrong rank was parsed whole
(orjson into Python objects, then ``np.asarray``) before its shape was
compared with the model: 2.7 s on the event loop and +856 MiB RSS for one
request. Now the frontend counts the JSON's separators against what the
model can take (``max_batch_size`` rows) before parsing, checks each input's
name, datatype, rank, dimensions and batch size from the header before its
data is converted, and parses bodies over 256 KiB off the event loop.
"""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import orjson

from tests.frontend.inprocess import local_frontend

URL = "/v2/models/tiny/infer"
HEADERS = {"Content-Type": "application/json"}


def _bomb(rows: int) -> bytes:
    """Rank 3 for a rank-2 model: [1, rows, 4], as nested JSON lists."""
    data = [[[1.5, 2.5, 3.5, 4.5]] * rows]
    return orjson.dumps(
        {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, rows, 4], "data": data}]}
    )


async def test_big_wrong_rank_body_is_refused_without_being_parsed(tmp_path: Path) -> None:
    client, _ = local_frontend(tmp_path / "store")
    body = _bomb(600_000)  # about 14 MiB
    async with client:
        tracemalloc.start()
        try:
            r = await client.post(URL, content=body, headers=HEADERS)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert r.status_code == 400, r.text
    assert "more values than model 'tiny' takes" in r.json()["error"]
    # the body itself is held about twice (received chunks, joined); no parse on top
    assert peak < 4 * len(body), f"{peak / 2**20:.0f} MiB traced for a {len(body) >> 20} MiB body"


async def test_wrong_rank_is_named_before_the_data_is_converted(tmp_path: Path) -> None:
    """Small enough to pass the value count: the shape is refused, the data never read."""
    client, _ = local_frontend(tmp_path / "store")
    data = [[["not", "a", "number", "!"]]]
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 1, 4], "data": data}]}
    async with client:
        r = await client.post(URL, json=body)
    assert r.status_code == 400
    assert "shape [1, 1, 4] does not match model shape [-1, 4]" in r.json()["error"]


async def test_batch_over_the_limit_is_refused_from_the_header(tmp_path: Path) -> None:
    client, _ = local_frontend(tmp_path / "store")
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [9, 4], "data": ["x"]}]}
    async with client:
        r = await client.post(URL, json=body)
    assert r.status_code == 400 and "batch size 9" in r.json()["error"]
