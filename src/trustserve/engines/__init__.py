"""Engines: the one place an engine name becomes an implementation.

Importing this package imports no engine library and not numpy (the server reads
``ENGINES`` for its options while its workers start): those come with ``load_engine``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from trustserve.errors import ConfigError

if TYPE_CHECKING:
    from trustserve.archive import Manifest
    from trustserve.engines.base import Engine, EngineFactory

ENGINES = ("onnxruntime", "openvino")


def engine_factory(name: str) -> EngineFactory:
    if name == "onnxruntime":
        from trustserve.engines.onnx import OnnxRuntimeEngine

        return OnnxRuntimeEngine
    if name == "openvino":
        from trustserve.engines.openvino import OpenVinoEngine

        return OpenVinoEngine
    raise ConfigError(f"unknown engine {name!r}; choose one of {ENGINES}")


def load_engine(name: str, model_bytes: bytes, manifest: Manifest, threads: int) -> Engine:
    return engine_factory(name)(model_bytes, manifest, threads)


def __getattr__(name: str) -> object:
    if name in ("Engine", "EngineFactory"):
        from trustserve.engines import base

        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["ENGINES", "Engine", "engine_factory", "load_engine"]
