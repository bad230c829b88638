"""Open Inference Protocol v2 over gRPC: KServe's ``inference.GRPCInferenceService``.

Standard (unsealed) requests only; sealed inference stays on HTTP. Every call goes
the way the REST API's does: the same registry, the same checks against the model's
manifest before anything is queued, the same broker (payloads encrypted under the
broker key), the same metrics (``api="grpc"``). A ``ModelInferRequest`` is turned
into the v2 binary encoding the REST frontend submits (inputs as binary data, the
worker asked for binary outputs), and the worker's answer into ``raw_output_contents``.

Errors come from the one hierarchy (``trustserve.errors``): the HTTP status picks the
gRPC status code, the message is the details, and the machine ``code`` travels in the
trailing metadata ``trustserve-error-code``. A message over the body limit is refused
by gRPC itself (RESOURCE_EXHAUSTED) before it is read.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import numpy as np
import orjson
from google.protobuf.message import DecodeError, Message

from trustserve import __version__
from trustserve.archive import DATATYPES
from trustserve.broker.base import Outcome
from trustserve.errors import BrokerTampered, InvalidInput, TrustserveError, error_class
from trustserve.frontend.grpc_v2 import grpc_predict_v2_pb2 as pb
from trustserve.frontend.inference import PARSE_INLINE_BYTES, UNKNOWN_MODEL, InferenceApi
from trustserve.frontend.registry import ModelEntry
from trustserve.tensors import array_from_values, check_input_header, parse_response

log = logging.getLogger("trustserve")
SERVICE = "inference.GRPCInferenceService"
ERROR_CODE_KEY = "trustserve-error-code"
STATUS = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    405: grpc.StatusCode.UNIMPLEMENTED,
    409: grpc.StatusCode.ABORTED,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}  # anything else (500, 502) is INTERNAL
# the InferTensorContents field that carries each datatype's values (FP16 has none: raw only)
CONTENTS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
}
Unary = Callable[[Any], Awaitable[Message]]


class GrpcInference:
    """The six calls of the service, answered through the REST frontend's ``InferenceApi``."""

    def __init__(self, api: InferenceApi) -> None:
        self.api = api

    def handler(self) -> grpc.GenericRpcHandler:
        calls: dict[str, tuple[Unary, type[Message]]] = {
            "ServerLive": (self.server_live, pb.ServerLiveRequest),
            "ServerReady": (self.server_ready, pb.ServerReadyRequest),
            "ModelReady": (self.model_ready, pb.ModelReadyRequest),
            "ServerMetadata": (self.server_metadata, pb.ServerMetadataRequest),
            "ModelMetadata": (self.model_metadata, pb.ModelMetadataRequest),
            "ModelInfer": (self.model_infer, pb.ModelInferRequest),
        }
        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                name: grpc.unary_unary_rpc_method_handler(
                    _guarded(call, message), response_serializer=_serialize
                )
                for name, (call, message) in calls.items()
            },
        )

    async def server_live(self, request: pb.ServerLiveRequest) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def server_ready(self, request: pb.ServerReadyRequest) -> pb.ServerReadyResponse:
        ready, _ = await self.api.readiness()
        return pb.ServerReadyResponse(ready=ready)

    async def server_metadata(self, request: pb.ServerMetadataRequest) -> pb.ServerMetadataResponse:
        # the REST extensions (binary data, repository, sealed) are not spoken here
        return pb.ServerMetadataResponse(name="trustserve", version=__version__, extensions=[])

    def _entry(self, name: str, version: str) -> ModelEntry:
        return self.api.registry.resolve(name, version or None)

    async def model_ready(self, request: pb.ModelReadyRequest) -> pb.ModelReadyResponse:
        entry = self._entry(request.name, request.version)
        return pb.ModelReadyResponse(ready=bool(await self.api.broker.consumers(entry.queue)))

    async def model_metadata(self, request: pb.ModelMetadataRequest) -> pb.ModelMetadataResponse:
        meta = self.api.metadata(self._entry(request.name, request.version))
        tensor = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=meta["name"],
            versions=meta["versions"],
            platform=meta["platform"],
            inputs=[tensor(**t) for t in meta["inputs"]],
            outputs=[tensor(**t) for t in meta["outputs"]],
        )

    async def model_infer(self, request: pb.ModelInferRequest) -> pb.ModelInferResponse:
        started = time.perf_counter()
        status, label, version = 500, UNKNOWN_MODEL, ""  # no label from the request: kept forever
        outcome: Outcome | None = None
        code: str | None = None  # an error this frontend answered itself, for metrics
        try:
            entry = self._entry(request.model_name, request.model_version)
            label, version = entry.manifest.name, entry.manifest.version
            for t in request.inputs:  # name, datatype, rank, shape, batch: before any conversion
                check_input_header(t.name, t.datatype, tuple(t.shape), entry.manifest)
            if request.ByteSize() > PARSE_INLINE_BYTES:  # typed values: off the event loop
                body, head_len = await asyncio.to_thread(v2_body, request)
            else:
                body, head_len = v2_body(request)
            _, outcome = await self.api.submit_v2(entry, body, str(head_len))
            answer = infer_response(outcome)
            status = 200
            return answer
        except TrustserveError as exc:
            failed = outcome is not None and outcome.status != 200
            status = outcome.status if outcome is not None and failed else exc.status
            code = exc.code
            raise
        finally:
            meta = outcome.meta if outcome is not None else None
            seconds = time.perf_counter() - started
            self.api.metrics.observe(label, version, "grpc", status, seconds, meta, code)


def _parameter(value: pb.InferParameter) -> bool | int | str:
    choice = value.WhichOneof("parameter_choice")
    return getattr(value, choice) if choice is not None else ""


def _values(tensor: pb.ModelInferRequest.InferInputTensor) -> bytes:
    """The typed ``contents`` of one input as raw bytes (checked as raw bytes are)."""
    field = CONTENTS.get(tensor.datatype)
    where = f"input '{tensor.name}'"
    if field is None:
        raise InvalidInput(
            f"{where}: datatype {tensor.datatype!r} cannot come in typed contents "
            "(send it in raw_input_contents)"
        )
    values = getattr(tensor.contents, field)
    shape = tuple(tensor.shape)
    if any(d < 0 for d in shape):
        raise InvalidInput(f"{where}: shape must be a list of non-negative integers")
    if len(values) != math.prod(shape):
        raise InvalidInput(
            f"{where}: contents.{field} has {len(values)} values but shape {list(shape)} "
            f"needs {math.prod(shape)}"
        )
    dtype = np.dtype(DATATYPES[tensor.datatype])
    return array_from_values(values, dtype, shape, where).tobytes()


def v2_body(request: pb.ModelInferRequest) -> tuple[bytes, int]:
    """The request in the v2 binary encoding (JSON header, then every input's bytes) and its
    header length: what ``InferenceApi.submit_v2`` checks and submits."""
    raw = list(request.raw_input_contents)
    typed = not raw  # all inputs in typed contents, or all raw
    if raw and len(raw) != len(request.inputs):
        raise InvalidInput(
            f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs"
        )
    inputs: list[dict[str, Any]] = []
    for i, tensor in enumerate(request.inputs):
        if not typed and tensor.HasField("contents"):
            raise InvalidInput(
                f"input '{tensor.name}': contents and raw_input_contents are both given"
            )
        if typed:
            raw.append(_values(tensor))
        elif tensor.datatype in DATATYPES and all(d >= 0 for d in tensor.shape):
            need = math.prod(tensor.shape) * np.dtype(DATATYPES[tensor.datatype]).itemsize
            if len(raw[i]) != need:
                raise InvalidInput(
                    f"input '{tensor.name}': raw_input_contents[{i}] has {len(raw[i])} bytes, "
                    f"shape {list(tensor.shape)} of {tensor.datatype} needs {need}"
                )
        entry = {"name": tensor.name, "datatype": tensor.datatype, "shape": list(tensor.shape)}
        inputs.append({**entry, "parameters": {"binary_data_size": len(raw[i])}})
    parameters = {k: _parameter(v) for k, v in request.parameters.items()}
    parameters["binary_data_output"] = True  # gRPC answers with raw_output_contents
    header: dict[str, Any] = {"inputs": inputs, "parameters": parameters}
    if request.id:
        header["id"] = request.id
    if request.outputs:
        header["outputs"] = [
            {"name": o.name, "parameters": {"binary_data": True}} for o in request.outputs
        ]
    head = orjson.dumps(header)
    return b"".join([head, *raw]), len(head)


def infer_response(outcome: Outcome) -> pb.ModelInferResponse:
    """The worker's answer (v2 binary encoding) as a ``ModelInferResponse``, or its error."""
    if outcome.status != 200:
        cls = error_class(outcome.meta.code)
        raise cls.from_message(outcome.payload.decode(errors="replace"))
    if outcome.meta.sealed:
        raise BrokerTampered("an answer does not match the kind of its request")
    try:
        header, tensors = parse_response(outcome.payload, outcome.meta.header_length)
    except InvalidInput:
        raise TrustserveError("the worker's answer could not be read") from None
    response = pb.ModelInferResponse(
        model_name=str(header.get("model_name", "")),
        model_version=str(header.get("model_version", "")),
        id=str(header.get("id") or ""),
    )
    for t in tensors:
        response.outputs.add(name=t.name, datatype=t.datatype, shape=list(t.shape))
        response.raw_output_contents.append(np.ascontiguousarray(t.data).tobytes())
    return response


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()


def _guarded(call: Unary, message: type[Message]) -> Callable[[bytes, Any], Awaitable[Message]]:
    """``call`` on the parsed request; every failure becomes a gRPC status, never a crash."""

    async def run(raw: bytes, context: grpc.aio.ServicerContext) -> Message:
        try:
            try:
                request = message.FromString(raw)
            except DecodeError:
                raise InvalidInput(f"not a valid {message.DESCRIPTOR.name} message") from None
            return await call(request)
        except TrustserveError as exc:
            error = exc
        except Exception:
            log.exception("gRPC call failed")
            error = TrustserveError("internal error")
        await abort(context, error)
        raise AssertionError("unreachable: abort raises")

    return run


async def abort(context: grpc.aio.ServicerContext, error: TrustserveError) -> None:
    metadata: list[tuple[str, str]] = [(ERROR_CODE_KEY, error.code)]
    retry_after = getattr(error, "retry_after", None)
    if retry_after is not None:
        metadata.append(("retry-after", str(retry_after)))
    code = STATUS.get(error.status, grpc.StatusCode.INTERNAL)
    await context.abort(code, str(error), trailing_metadata=tuple(metadata))


def grpc_server(
    service: GrpcInference,
    host: str,
    port: int,
    tls: tuple[bytes, bytes] | None,
    max_message_bytes: int,
) -> grpc.aio.Server:
    """The gRPC server (not started): TLS with ``(key PEM, certificate chain PEM)``; a
    request message over ``max_message_bytes`` is refused before it is read."""
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", -1),
            ("grpc.so_reuseport", 0),  # a port in use is an error, as for the HTTP ports
        ]
    )
    server.add_generic_rpc_handlers((service.handler(),))
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if tls is None:
        server.add_insecure_port(address)
    else:
        server.add_secure_port(address, grpc.ssl_server_credentials([tls]))
    return server
