"""Engines: the one place an engine name becomes an implementation."""

from __future__ import annotations

from trustserve.archive import Manifest
from trustserve.engines.base import Engine, EngineFactory
from trustserve.errors import ConfigError

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


__all__ = ["ENGINES", "Engine", "engine_factory", "load_engine"]
