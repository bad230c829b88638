"""The management API (TorchServe-style): register, list, describe, scale, unregister.

Bound to 127.0.0.1 by default and closed without the bearer token that ``up``
keeps in ``$TRUSTSERVE_HOME/management.token``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp

from trustserve.errors import BadRequest
from trustserve.frontend.control import ModelControl, TokenGuard
from trustserve.frontend.registry import ModelEntry
from trustserve.openapi import openapi_route
from trustserve.responses import EXCEPTION_HANDLERS, BearerToken, json_response

MAX_WORKERS = 64


def _count(request: Request, name: str, default: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or int(raw) > MAX_WORKERS:
        raise BadRequest(f"{name} must be an integer from 0 to {MAX_WORKERS}")
    return int(raw)


class ManagementApi(ModelControl):
    def app(self, token: str, token_file: Path | None = None) -> ASGIApp:
        routes = [
            Route("/models", self.list_models, methods=["GET"]),
            Route("/models", self.register, methods=["POST"]),
            Route("/models/{model}", self.describe, methods=["GET"]),
            Route("/models/{model}/all", self.describe_all, methods=["GET"]),
            Route("/models/{model}/{version}/set-default", self.set_default, methods=["PUT"]),
            Route("/models/{model}/{version}", self.describe, methods=["GET"]),
            Route("/models/{model}", self.scale, methods=["PUT"]),
            Route("/models/{model}/{version}", self.scale, methods=["PUT"]),
            Route("/models/{model}", self.unregister, methods=["DELETE"]),
            Route("/models/{model}/{version}", self.unregister, methods=["DELETE"]),
            openapi_route("management"),
        ]
        app = Starlette(routes=routes, exception_handlers=EXCEPTION_HANDLERS)
        where = f"the token in {token_file}" if token_file else "the management token"
        refusal = (
            f"missing or wrong management token: send 'Authorization: Bearer <token>' with {where}"
        )
        return TokenGuard(app, BearerToken(token, refusal))

    async def list_models(self, request: Request) -> Response:
        models = [
            {"modelName": e.manifest.name, "modelVersion": e.manifest.version, "modelUrl": e.url}
            for e in self.registry.entries()
        ]
        return json_response({"models": models})

    async def register(self, request: Request) -> Response:
        url = request.query_params.get("url")
        if not url:
            raise BadRequest("register needs ?url=<archive in the model store>")
        workers = _count(request, "initial_workers", self.default_workers)
        entry = self.registry.register(url, workers)
        await self.start(entry, workers)
        m = entry.manifest
        return json_response(
            {"status": f'Model "{m.name}" Version: {m.version} registered with {workers} workers'}
        )

    def _entry(self, request: Request) -> ModelEntry:
        return self.registry.resolve(
            request.path_params["model"], request.path_params.get("version")
        )

    async def describe(self, request: Request) -> Response:
        entry = self._entry(request)
        return json_response([await self._description(entry)])

    async def describe_all(self, request: Request) -> Response:
        name = request.path_params["model"]
        self.registry.resolve(name)  # 404 for an unknown model
        entries = [self.registry.resolve(name, v) for v in self.registry.versions(name)]
        return json_response([await self._description(e) for e in entries])

    async def set_default(self, request: Request) -> Response:
        name, version = request.path_params["model"], request.path_params["version"]
        self.registry.set_default(name, version)
        return json_response(
            {"status": f'Default version successfully updated for model "{name}" to "{version}"'}
        )

    async def _description(self, entry: ModelEntry) -> dict[str, Any]:
        m = entry.manifest
        return {
            "modelName": m.name,
            "modelVersion": m.version,
            "modelUrl": entry.url,
            "default": self.registry.default_version(m.name) == m.version,
            "encrypted": entry.encrypted,
            "failed": entry.failed,
            "minWorkers": entry.min_workers,
            "batchSize": m.max_batch_size,
            "maxBatchDelay": m.max_batch_delay_ms,
            "queueDepth": await self.broker.depth(entry.queue),
            "readyWorkers": await self.broker.consumers(entry.queue),
            "workers": [
                {"pid": w.pid, "restarts": w.restarts} for w in self.pool.workers(entry.queue)
            ],
            "inputs": [t.to_json() for t in m.inputs],
            "outputs": [t.to_json() for t in m.outputs],
        }

    async def scale(self, request: Request) -> Response:
        entry = self._entry(request)
        n = _count(request, "min_worker", entry.min_workers)
        await self.start(entry, n)
        return json_response({"status": f"model {entry.manifest.name} scaled to {n} workers"})

    async def unregister(self, request: Request) -> Response:
        entry = self._entry(request)
        await self.retire([entry])
        m = entry.manifest
        return json_response({"status": f'Model "{m.name}" version {m.version} unregistered'})
