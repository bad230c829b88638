"""The model repository extension of Open Inference Protocol v2 (as Triton defines it).

On the inference port:

* ``POST /v2/repository/index``: every model in the model store (the ``.tsm``
  archives at its top, by the name and version in their manifests) and every
  registered model, with ``state`` ``READY`` (a worker serves it) or
  ``UNAVAILABLE`` and a ``reason`` (``unloaded``, still loading, or why its
  workers cannot load it). Open to anyone, like model metadata: it shows only
  the public manifests' names and versions.
* ``POST /v2/repository/models/{m}/load`` and ``/unload``: register every
  version of ``m`` found in the store and start its workers, or drain and stop
  them. They change what the server runs, so they need the management API's
  bearer token (constant-time compare); without it the answer is 401.
* ``GET /v2/models/{m}[/versions/{v}]/config``: the model's configuration in
  Triton's shape (inputs and outputs without the batch dimension, max batch
  size, dynamic batching delay), what ``tritonclient``'s ``get_model_config``
  reads.

Loading a model from bytes sent in the request (Triton's ``config`` and
``file:`` parameters) is not supported: a model comes only from the store.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from trustserve import archive
from trustserve.broker.base import Broker
from trustserve.errors import ArchiveError, BadRequest, NotFound, Unavailable
from trustserve.frontend.control import ModelControl, WorkerPool
from trustserve.frontend.registry import ModelEntry, ModelRegistry
from trustserve.responses import BearerToken, json_response

MAX_BODY = 64 * 1024
REFUSAL = "loading and unloading models needs the management token (Authorization: Bearer <token>)"
TRITON_PLATFORMS = {"onnx": "onnxruntime_onnx", "openvino": "openvino"}


@dataclass(frozen=True)
class _Stored:
    name: str
    version: str
    file: str  # relative to the model store


class RepositoryApi(ModelControl):
    def __init__(
        self,
        registry: ModelRegistry,
        broker: Broker,
        pool: WorkerPool,
        default_workers: int,
        token: str,
        *,
        load_timeout_s: float = 120.0,
    ) -> None:
        super().__init__(registry, broker, pool, max(1, default_workers))
        self._token = BearerToken(token, REFUSAL)
        self.load_timeout_s = load_timeout_s

    def routes(self) -> list[Route]:
        return [
            Route("/v2/repository/index", self.index, methods=["POST"]),
            Route("/v2/repository/models/{model}/load", self.load, methods=["POST"]),
            Route("/v2/repository/models/{model}/unload", self.unload, methods=["POST"]),
            Route("/v2/models/{model}/config", self.config, methods=["GET"]),
            Route("/v2/models/{model}/versions/{version}/config", self.config, methods=["GET"]),
        ]

    # -- index and config (public) -------------------------------------------

    async def index(self, request: Request) -> Response:
        body = await _json_body(request)
        ready_only = body.get("ready", False)
        if not isinstance(ready_only, bool):
            raise BadRequest("index: 'ready' must be true or false")
        rows: dict[tuple[str, str], dict[str, str]] = {}
        for stored in self._stored():
            rows[stored.name, stored.version] = _row(stored.name, stored.version, "unloaded")
        for entry in self.registry.entries():
            m = entry.manifest
            rows[m.name, m.version] = await self._state(entry)
        models = [rows[k] for k in sorted(rows)]
        if ready_only:
            models = [r for r in models if r["state"] == "READY"]
        return json_response(models)

    async def config(self, request: Request) -> Response:
        entry = self.registry.resolve(
            request.path_params["model"], request.path_params.get("version")
        )
        return json_response(triton_config(entry.manifest))

    # -- load and unload (management token) ---------------------------------

    async def load(self, request: Request) -> Response:
        if (denied := self._token.refused(request.headers)) is not None:
            return denied
        body = await _json_body(request)
        params = body.get("parameters") or {}
        if not isinstance(params, dict):
            raise BadRequest("load: 'parameters' must be an object")
        sent = sorted(k for k in params if k == "config" or k.startswith("file:"))
        if sent:
            raise BadRequest(
                f"load: parameters {sent} are not supported: a model is loaded only from the "
                "model store (put its .tsm archive there, then load it by name)"
            )
        name = request.path_params["model"]
        entries = self._register_all(name)
        for entry in entries:
            await self.start(entry, max(entry.min_workers, self.default_workers))
        await self._wait_ready(name, entries)
        return Response(status_code=200)

    async def unload(self, request: Request) -> Response:
        if (denied := self._token.refused(request.headers)) is not None:
            return denied
        await _json_body(request)  # tritonclient sends unload_dependents: nothing depends here
        name = request.path_params["model"]
        entries = [e for e in self.registry.entries() if e.manifest.name == name]
        if not entries:
            if any(s.name == name for s in self._stored()):
                return Response(status_code=200)  # in the store, not loaded: nothing to do
            raise NotFound(f"unknown model '{name}'")
        await self.retire(entries)
        return Response(status_code=200)

    # -- helpers --------------------------------------------------------------

    def _stored(self) -> list[_Stored]:
        """The archives at the top of the model store; one that cannot be read is left out."""
        found = []
        for path in sorted(self.registry.store.glob("*.tsm")):
            try:
                m = archive.read_header(path).manifest
            except (ArchiveError, OSError):
                continue
            found.append(_Stored(m.name, m.version, path.name))
        return found

    def _register_all(self, name: str) -> list[ModelEntry]:
        """Every version of ``name``: those registered, and those in the store registered now."""
        registered = {
            e.manifest.version for e in self.registry.entries() if e.manifest.name == name
        }
        for stored in self._stored():
            if stored.name == name and stored.version not in registered:
                self.registry.register(stored.file, self.default_workers)
                registered.add(stored.version)
        entries = [e for e in self.registry.entries() if e.manifest.name == name]
        if not entries:
            raise NotFound(f"no archive of model '{name}' in the model store")
        return entries

    async def _wait_ready(self, name: str, entries: list[ModelEntry]) -> None:
        """Like Triton, answer once the model serves, or say why it does not."""
        deadline = time.monotonic() + self.load_timeout_s
        while True:
            failed = [e.failed for e in entries if e.failed]
            if failed:
                raise Unavailable(f"model '{name}' did not load: {failed[0]}", retry_after=60)
            ready = [await self.broker.consumers(e.queue) for e in entries]
            if all(ready):
                return
            if time.monotonic() > deadline:
                raise Unavailable(f"model '{name}' is still loading: no worker ready yet")
            await asyncio.sleep(0.1)

    async def _state(self, entry: ModelEntry) -> dict[str, str]:
        m = entry.manifest
        if await self.broker.consumers(entry.queue):
            return {"name": m.name, "version": m.version, "state": "READY", "reason": ""}
        reason = entry.failed or "loading: no worker ready yet"
        return _row(m.name, m.version, reason)


def _row(name: str, version: str, reason: str) -> dict[str, str]:
    return {"name": name, "version": version, "state": "UNAVAILABLE", "reason": reason}


async def _json_body(request: Request) -> dict[str, Any]:
    """The request's JSON object; an empty body is an empty object."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise BadRequest(f"request body over {MAX_BODY} bytes")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        return {}
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BadRequest("request body is not JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    return body


def triton_config(m: archive.Manifest) -> dict[str, Any]:
    """The manifest as Triton's model configuration (dims without the batch dimension)."""

    def tensor(t: archive.TensorSpec) -> dict[str, Any]:
        return {"name": t.name, "data_type": f"TYPE_{t.datatype}", "dims": list(t.shape[1:])}

    config: dict[str, Any] = {
        "name": m.name,
        "platform": TRITON_PLATFORMS.get(m.platform, m.platform),
        "max_batch_size": m.max_batch_size,
        "input": [tensor(t) for t in m.inputs],
        "output": [tensor(t) for t in m.outputs],
        "dynamic_batching": {
            "max_queue_delay_microseconds": round(m.max_batch_delay_ms * 1000),
        },
        "parameters": {"version": {"string_value": m.version}},
    }
    if m.description:
        config["parameters"]["description"] = {"string_value": m.description}
    return config
