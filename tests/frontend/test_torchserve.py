"""The TorchServe-compatible inference API: /ping and /predictions with raw bodies."""

from __future__ import annotations

import pytest

from tests.frontend.inprocess import Frontend
from tests.support import png


async def test_ping(tiny_frontend: Frontend) -> None:
    assert (await tiny_frontend.client.get("/ping")).json() == {"status": "Healthy"}


@pytest.mark.parametrize(
    ("colour", "fmt", "label"),
    [((250, 10, 10), "PNG", "red"), ((10, 240, 20), "JPEG", "green"), ((5, 5, 250), "PNG", "blue")],
)
async def test_image_classifier_answers_top_k_labels(
    tiny_frontend: Frontend, colour: tuple[int, int, int], fmt: str, label: str
) -> None:
    r = await tiny_frontend.client.post("/predictions/colour", content=png(colour, fmt=fmt))
    assert r.status_code == 200, r.text
    probs = r.json()
    assert next(iter(probs)) == label
    assert set(probs) == {"red", "green", "blue"}
    assert abs(sum(probs.values()) - 1) < 1e-3


async def test_json_body_for_a_non_image_model(tiny_frontend: Frontend) -> None:
    c = tiny_frontend.client
    one = await c.post("/predictions/tiny/1", json=[1, 2, 3, 4])
    many = await c.post("/predictions/tiny", json={"data": [[0, 0, 0, 0], [1, 1, 1, 1]]})
    assert one.status_code == 200 and one.json() == {"y": [3, 5, 7, 9], "s": [10]}
    assert many.json() == [{"y": [1, 1, 1, 1], "s": [0]}, {"y": [3, 3, 3, 3], "s": [4]}]


async def test_json_body_of_the_wrong_size_is_400(tiny_frontend: Frontend) -> None:
    r = await tiny_frontend.client.post("/predictions/tiny", json=[1, 2, 3])
    assert r.status_code == 400 and "each instance needs 4" in r.json()["error"]
