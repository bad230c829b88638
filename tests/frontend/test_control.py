"""The management API and the repository extension start, retire and guard models alike.

In process: both apps over ``httpx.ASGITransport``, the embedded broker, and a stand-in
worker pool that records what it is asked (no worker process is needed to retire one).
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette

from tests.support import write_tiny
from trustserve.broker.embedded import EmbeddedBroker
from trustserve.errors import ConfigError
from trustserve.frontend.control import Worker
from trustserve.frontend.management import ManagementApi
from trustserve.frontend.registry import ModelRegistry
from trustserve.frontend.repository import RepositoryApi
from trustserve.responses import BearerToken

TOKEN = secrets.token_urlsafe(32)  # made per run: no fixed secret, even in a test


class Pool:
    def __init__(self) -> None:
        self.asked: list[tuple[str, str, int]] = []

    async def scale(self, queue: str, archive: Path, n: int) -> None:
        self.asked.append(("scale", queue, n))

    async def stop(self, queue: str) -> None:
        self.asked.append(("stop", queue, 0))

    def workers(self, queue: str) -> Sequence[Worker]:
        return []


@pytest.fixture
async def apis(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient, Pool]]:
    write_tiny(tmp_path)
    registry, broker, pool = ModelRegistry(tmp_path), EmbeddedBroker(), Pool()
    registry.register("tiny-1.tsm", 1)
    management = ManagementApi(registry, broker, pool, 1).app(TOKEN)
    repository = Starlette(routes=RepositoryApi(registry, broker, pool, 1, TOKEN).routes())
    clients = [
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://frontend")
        for app in (management, repository)
    ]
    yield clients[0], clients[1], pool
    for c in clients:
        await c.aclose()
    await broker.close()


async def test_both_refuse_a_missing_or_wrong_token_with_their_own_message(
    apis: tuple[httpx.AsyncClient, httpx.AsyncClient, Pool],
) -> None:
    management, repository, pool = apis
    for auth in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        r = await management.delete("/models/tiny", headers=auth)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert "missing or wrong management token" in r.json()["error"]
        r = await repository.post("/v2/repository/models/tiny/unload", headers=auth)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert "needs the management token" in r.json()["error"]
    assert pool.asked == []


async def test_both_take_the_bearer_scheme_in_any_case(
    apis: tuple[httpx.AsyncClient, httpx.AsyncClient, Pool],
) -> None:
    management, repository, _ = apis
    r = await management.get("/models", headers={"Authorization": f"bearer {TOKEN}"})
    assert r.status_code == 200, r.text
    r = await repository.post("/v2/repository/index", headers={"Authorization": f"BEARER {TOKEN}"})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("via", ["management", "repository"])
async def test_either_api_retires_a_model_the_same_way(
    apis: tuple[httpx.AsyncClient, httpx.AsyncClient, Pool], via: str
) -> None:
    management, repository, pool = apis
    auth = {"Authorization": f"Bearer {TOKEN}"}
    if via == "management":
        r = await management.delete("/models/tiny", headers=auth)
    else:
        r = await repository.post("/v2/repository/models/tiny/unload", headers=auth)
    assert r.status_code == 200, r.text
    assert pool.asked == [("stop", "tiny:1", 0)]  # nothing queued: stopped at once
    assert (await management.get("/models/tiny", headers=auth)).status_code == 404


def test_an_empty_token_is_refused_at_start_not_matched_by_a_missing_header() -> None:
    with pytest.raises(ConfigError, match="empty bearer token"):
        BearerToken("", "refused")
