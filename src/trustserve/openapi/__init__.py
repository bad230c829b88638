"""The OpenAPI 3.1 documents of trustserve's HTTP APIs, kept here as YAML (package data).

``inference`` (v2 REST + TorchServe predictions), ``management`` and ``kms``;
each server answers ``GET /openapi.json`` with its own (``openapi_route``), and
a test checks that the document and the server's routes name the same paths.
"""

from __future__ import annotations

import functools
from importlib import resources
from typing import Any

import orjson
import yaml
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

DOCUMENTS = ("inference", "management", "kms")


@functools.cache
def document_bytes(name: str) -> bytes:
    """The document ``name`` as JSON bytes."""
    if name not in DOCUMENTS:
        raise KeyError(name)
    text = resources.files(__package__).joinpath(f"{name}.yaml").read_text()
    return orjson.dumps(yaml.safe_load(text))


def document(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = orjson.loads(document_bytes(name))
    return loaded


def openapi_route(name: str) -> Route:
    """``GET /openapi.json`` answering with the document ``name``."""
    body = document_bytes(name)

    async def serve(request: Request) -> Response:
        return Response(body, media_type="application/json")

    return Route("/openapi.json", serve, methods=["GET"])
