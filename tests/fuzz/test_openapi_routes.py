"""Each server's routes and its OpenAPI document name the same paths and methods, and each
server answers ``GET /openapi.json`` with its document."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from starlette.applications import Starlette
from starlette.routing import Route

from tests.attacks.kms_local import local_kms
from tests.frontend.inprocess import inference_app
from trustserve.broker.embedded import EmbeddedBroker
from trustserve.frontend.management import ManagementApi
from trustserve.frontend.metrics import Metrics
from trustserve.frontend.registry import ModelRegistry
from trustserve.frontend.repository import RepositoryApi
from trustserve.kms.app import create_app
from trustserve.openapi import DOCUMENTS, document

METHODS = {"get", "put", "post", "delete", "patch"}


class NoPool:
    async def scale(self, queue: str, archive: Path, n: int) -> None:
        pass

    async def stop(self, queue: str) -> None:
        pass

    def workers(self, queue: str) -> list[Any]:
        return []


def _apps(tmp_path: Path, token: str) -> dict[str, Any]:
    registry = ModelRegistry(tmp_path)
    broker = EmbeddedBroker()
    return {
        "inference": _inference_app(registry, broker, token),
        "management": ManagementApi(registry, broker, NoPool(), 1).app(token),
        "kms": create_app(local_kms(tmp_path), token=token),
    }


def _inference_app(registry: ModelRegistry, broker: EmbeddedBroker, token: str) -> Any:
    """The inference app as the stack serves it: with the model-repository routes."""
    app = inference_app(registry, broker, Metrics(), 64 << 20)
    app.router.routes.extend(RepositoryApi(registry, broker, NoPool(), 1, token).routes())
    return app


def _routed(app: Any) -> set[tuple[str, str]]:
    inner = app if isinstance(app, Starlette) else app.app  # the management token wrapper
    found = set()
    for route in inner.routes:
        assert isinstance(route, Route)
        for method in route.methods or ():
            if method.lower() in METHODS:
                found.add((route.path, method.lower()))
    return found


def _documented(name: str) -> set[tuple[str, str]]:
    return {
        (path, method)
        for path, item in document(name)["paths"].items()
        for method in item
        if method in METHODS
    }


@pytest.mark.parametrize("name", DOCUMENTS)
def test_every_route_is_documented_and_every_documented_path_is_routed(
    tmp_path: Path, name: str
) -> None:
    routed = _routed(_apps(tmp_path, secrets.token_urlsafe(16))[name])
    documented = _documented(name)
    assert routed - documented == set(), "routes missing from the document"
    assert documented - routed == set(), "documented but not routed"


@pytest.mark.parametrize("name", DOCUMENTS)
def test_document_is_openapi_3_1_that_schemathesis_loads(name: str) -> None:
    raw = document(name)
    assert raw["openapi"].startswith("3.1")
    ids = [
        op["operationId"]
        for item in raw["paths"].values()
        for op in item.values()
        if "operationId" in op
    ]
    assert len(ids) == len(set(ids)), "operation ids must be unique"
    schema = schemathesis.openapi.from_dict(raw)
    assert len(list(schema.get_all_operations())) == len(_documented(name))


@pytest.mark.parametrize("name", DOCUMENTS)
async def test_each_server_serves_its_document(tmp_path: Path, name: str) -> None:
    token = secrets.token_urlsafe(16)
    app = _apps(tmp_path, token)[name]
    transport = httpx.ASGITransport(app=app)
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(transport=transport, base_url="http://x") as client:
        r = await client.get("/openapi.json", headers=headers)
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert r.json() == document(name)
