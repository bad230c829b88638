"""Open Inference Protocol v2 over gRPC: KServe's ``inference.GRPCInferenceService``.

Standard (unsealed) requests only; sealed inference stays on HTTP. A thin transport
over the data plane (``dataplane.py``) the REST API uses too: the same registry, the
same checks against the model's manifest before anything is queued, the same broker
(payloads encrypted under the broker key), the same metrics (``api="grpc"``). A
``ModelInferRequest`` is parsed here into tensors (each input's header checked against
the model before its typed contents are converted; raw contents read in place) and
handed to the data plane as it is: it is never encoded as a REST body. The worker's
answer comes back as ``raw_output_contents``.

Errors come from the one hierarchy (``trustserve.errors``): the HTTP status picks the
gRPC status code, the message is the details, and the machine ``code`` travels in the
trailing metadata ``trustserve-error-code``. A message over the body limit is refused
by gRPC itself (RESOURCE_EXHAUSTED) before it is read.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import numpy as np
from google.protobuf.message import DecodeError, Message

from trustserve import __version__
from trustserve.archive import DATATYPES
from trustserve.broker.base import Outcome
from trustserve.errors import InvalidInput, TrustserveError, error_class
from trustserve.frontend.dataplane import PARSE_INLINE_BYTES, DataPlane, Work
from trustserve.frontend.grpc_v2 import grpc_predict_v2_pb2 as pb
from trustserve.frontend.registry import ModelEntry
from trustserve.tensor_bytes import BYTES, bytes_elements
from trustserve.tensors import (
    Array,
    InferRequest,
    RequestedOutput,
    Tensor,
    array_from_values,
    check_input_header,
    parse_response,
)

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
    """The six calls of the service, answered by ``plane``: the stack hands over the one
    under the REST API, so both transports share one request path."""

    def __init__(self, plane: DataPlane) -> None:
        self.plane = plane

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
        ready, _ = await self.plane.readiness()
        return pb.ServerReadyResponse(ready=ready)

    async def server_metadata(self, request: pb.ServerMetadataRequest) -> pb.ServerMetadataResponse:
        # the REST extensions (binary data, repository, sealed) are not spoken here
        return pb.ServerMetadataResponse(name="trustserve", version=__version__, extensions=[])

    async def model_ready(self, request: pb.ModelReadyRequest) -> pb.ModelReadyResponse:
        entry = self.plane.model(request.name, request.version)
        return pb.ModelReadyResponse(ready=await self.plane.model_ready(entry))

    async def model_metadata(self, request: pb.ModelMetadataRequest) -> pb.ModelMetadataResponse:
        meta = self.plane.metadata(self.plane.model(request.name, request.version))
        tensor = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=meta["name"],
            versions=meta["versions"],
            platform=meta["platform"],
            inputs=[tensor(**t) for t in meta["inputs"]],
            outputs=[tensor(**t) for t in meta["outputs"]],
        )

    async def model_infer(self, request: pb.ModelInferRequest) -> pb.ModelInferResponse:
        async def prepare(entry: ModelEntry) -> Work:
            for t in request.inputs:  # name, datatype, rank, shape, batch: before any conversion
                check_input_header(t.name, t.datatype, tuple(t.shape), entry.manifest)
            if request.ByteSize() > PARSE_INLINE_BYTES:  # typed values: off the event loop
                return await asyncio.to_thread(self._work, entry, request)
            return self._work(entry, request)

        name, version = request.model_name, request.model_version
        return await self.plane.infer("grpc", name, version, prepare, infer_response)

    def _work(self, entry: ModelEntry, request: pb.ModelInferRequest) -> Work:
        return self.plane.v2_work(entry, infer_request(request))


def _parameter(value: pb.InferParameter) -> bool | int | str:
    choice = value.WhichOneof("parameter_choice")
    return getattr(value, choice) if choice is not None else ""


def _typed(tensor: pb.ModelInferRequest.InferInputTensor) -> Array:
    """The typed ``contents`` of one input as an array (checked as raw bytes are)."""
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
    return array_from_values(values, dtype, shape, where)


def _raw(tensor: pb.ModelInferRequest.InferInputTensor, raw: bytes, i: int) -> Array:
    """``raw_input_contents[i]``, the bytes of one input, read in place as an array."""
    shape = tuple(tensor.shape)
    if tensor.datatype not in DATATYPES and tensor.datatype != BYTES:
        raise InvalidInput(f"inputs '{tensor.name}': datatype {tensor.datatype!r} is not supported")
    if any(d < 0 for d in shape):
        raise InvalidInput(f"inputs '{tensor.name}': shape must be a list of non-negative integers")
    if tensor.datatype == BYTES:  # encoded images, as v2 binary data: the worker decodes them
        return bytes_elements(memoryview(raw), shape, f"input '{tensor.name}'")
    dtype = np.dtype(DATATYPES[tensor.datatype])
    need = math.prod(shape) * dtype.itemsize
    if len(raw) != need:
        raise InvalidInput(
            f"input '{tensor.name}': raw_input_contents[{i}] has {len(raw)} bytes, "
            f"shape {list(shape)} of {tensor.datatype} needs {need}"
        )
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


def infer_request(request: pb.ModelInferRequest) -> InferRequest:
    """The request as the data plane takes it: each input a tensor (raw contents read in
    place, typed contents converted), its id, parameters and requested outputs, every
    output asked for as binary data (gRPC answers with ``raw_output_contents``)."""
    raw = list(request.raw_input_contents)
    typed = not raw  # all inputs in typed contents, or all raw
    if raw and len(raw) != len(request.inputs):
        raise InvalidInput(
            f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs"
        )
    inputs: list[Tensor] = []
    for i, tensor in enumerate(request.inputs):
        if not typed and tensor.HasField("contents"):
            raise InvalidInput(
                f"input '{tensor.name}': contents and raw_input_contents are both given"
            )
        array = _typed(tensor) if typed else _raw(tensor, raw[i], i)
        inputs.append(Tensor(tensor.name, tensor.datatype, tuple(tensor.shape), array))
    if not inputs:
        raise InvalidInput("'inputs' must not be empty")
    parameters: dict[str, Any] = {k: _parameter(v) for k, v in request.parameters.items()}
    parameters["binary_data_output"] = True
    outputs = [RequestedOutput(o.name, True) for o in request.outputs] or None
    return InferRequest(inputs, outputs, request.id or None, True, parameters)


def infer_response(work: Work, outcome: Outcome) -> pb.ModelInferResponse:
    """The worker's answer (v2 binary encoding, ``verified``) as a ``ModelInferResponse``,
    or its error."""
    if outcome.status != 200:
        cls = error_class(outcome.meta.code)
        raise cls.from_message(outcome.payload.decode(errors="replace"))
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
