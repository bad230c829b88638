"""Turning jobs into engine batches and engine outputs back into answers.

A job's payload is read according to its kind (the table is in ``broker/base.py``):
a sealed or OHTTP job is opened first (``worker/sealed.py``, ``worker/ohttp.py``),
then its v2 or torchserve body is read as a standard one is. A job that cannot be
read gets its error answer at once (sealed to the client, by the request's
``AnswerSealer``, once the request is open); the rest are concatenated along the
batch axis, run, and split again. Each answer is encoded once, here, in the format
its request asked for; the frontend forwards it as it is.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from trustserve.archive import DATATYPES, Manifest
from trustserve.broker.base import Job, JobKind, Outcome, OutcomeMeta
from trustserve.engines.base import Tensors
from trustserve.errors import InvalidInput, TrustserveError, UnknownKeyId
from trustserve.tensor_bytes import BYTES
from trustserve.tensors import (
    RequestedOutput,
    Tensor,
    check_against,
    datatype_of,
    encode_response,
    parse_request,
)
from trustserve.worker.ohttp import OhttpTo, read_ohttp
from trustserve.worker.sealed import AnswerSealer, Inner, RefusedInside, SealedReader

log = logging.getLogger(__name__)
TOP_K = 5


@dataclass(frozen=True)
class Reply:
    """How to answer one request: its format and, for a sealed one, what to seal to.

    ``kind`` is V2 or TORCHSERVE. For v2: the request's id (echoed), the outputs it
    named, each as JSON or binary data (None: every output, ``binary_default``).
    """

    kind: JobKind
    request_id: str | None = None
    outputs: list[RequestedOutput] | None = None
    binary_default: bool = False
    sealed: AnswerSealer | None = None


@dataclass
class Decoded:
    """A job's input tensors, its number of rows, and how to answer it."""

    job: Job
    inputs: Tensors
    rows: int
    reply: Reply


def decode(
    job: Job,
    manifest: Manifest,
    preprocess: Callable[[bytes], Any] | None,
    sealed: SealedReader | None = None,
) -> Decoded | Outcome:
    """The job read and checked, or the error outcome to answer it with."""
    to: AnswerSealer | None = None
    try:
        kind, body, header_length = job.kind, job.payload, job.meta.header_length
        if kind.end_to_end:
            if sealed is None:
                raise UnknownKeyId("this worker holds no serving key for sealed requests")
            inner: Inner = read_ohttp(sealed, job) if kind is JobKind.OHTTP else sealed.read(job)
            kind, body, header_length, to = inner.kind, inner.body, inner.header_length, inner.to
        return _read(job, kind, body, header_length, to, manifest, preprocess)
    except RefusedInside as refused:
        exc = refused.error
        return error_outcome(job, exc.status, exc.code, str(exc), refused.to)
    except TrustserveError as exc:
        return error_outcome(job, exc.status, exc.code, str(exc), to)
    except Exception as exc:
        if job.kind.end_to_end:  # its message or traceback may hold plaintext: the type only
            log.error("reading a %s request failed: %s", job.kind, type(exc).__name__)
        else:
            log.exception("reading a %s request failed", job.kind)
        message = "the worker could not read this request"
        return error_outcome(job, 500, TrustserveError.code, message, to)


def _read(
    job: Job,
    kind: JobKind,
    body: bytes,
    header_length: int | None,
    to: AnswerSealer | None,
    manifest: Manifest,
    preprocess: Callable[[bytes], Any] | None,
) -> Decoded:
    if kind is JobKind.V2:
        # with the manifest: shapes and sizes checked from the header before any element is read
        request = parse_request(
            body, None if header_length is None else str(header_length), manifest
        )
        check_against(request, manifest)
        inputs = {
            t.name: _images(t.data, preprocess) if t.datatype == BYTES else t.data
            for t in request.inputs
        }
        outputs, binary = request.outputs, request.binary_output_default
        reply = Reply(JobKind.V2, request.id, outputs, binary, to)
    elif kind is JobKind.TORCHSERVE:
        inputs = _torchserve_inputs(body, manifest, preprocess)
        reply = Reply(JobKind.TORCHSERVE, sealed=to)
    else:
        raise InvalidInput(f"this worker cannot read requests of kind {kind.value!r}")
    rows = next(iter(inputs.values())).shape[0]
    if not 1 <= rows <= manifest.max_batch_size:  # v2 is checked already; TorchServe JSON here
        raise InvalidInput(f"batch size {rows} is outside 1..{manifest.max_batch_size}")
    return Decoded(job, inputs, rows, reply)


IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff")  # PNG, JPEG


def _images(encoded: Any, preprocess: Callable[[bytes], Any] | None) -> Any:
    """v2 BYTES, one encoded image per row (check_against allowed them: the model has image
    preprocessing), decoded and preprocessed here, inside the TEE, as a TorchServe body is."""
    from trustserve.imaging import check_request_pixels

    assert preprocess is not None
    images = [bytes(image) for image in encoded.reshape(-1)]
    check_request_pixels(images)  # all of them, before any is decoded
    return np.stack([preprocess(image) for image in images])


def _torchserve_inputs(
    body: bytes, manifest: Manifest, preprocess: Callable[[bytes], Any] | None
) -> Tensors:
    if not body:
        raise InvalidInput("request body is empty")
    spec = manifest.inputs[0]
    if preprocess is not None:
        return {spec.name: preprocess(body)[np.newaxis, ...]}
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        takes = f"model '{manifest.name}' takes no images (no image preprocessing)"
        if body.startswith(IMAGE_MAGIC):
            raise InvalidInput(
                f"{takes}: send its input '{spec.name}' as JSON or as a v2 tensor (.npy)"
            ) from None
        why = "not UTF-8 text" if "UTF-8" in str(exc) else str(exc)
        raise InvalidInput(f"body is not JSON ({why}); {takes}") from None
    if isinstance(data, dict) and len(manifest.inputs) > 1:
        return {s.name: _instances(data.get(s.name), s.shape, s.datatype) for s in manifest.inputs}
    if isinstance(data, dict):
        data = data.get("data", data.get("instances", data.get(spec.name)))
    if len(manifest.inputs) > 1:
        raise InvalidInput(f"model takes {len(manifest.inputs)} inputs: send an object by name")
    return {spec.name: _instances(data, spec.shape, spec.datatype)}


def _instances(data: Any, shape: tuple[int, ...], datatype: str) -> Any:
    if data is None:
        raise InvalidInput("JSON body has no input data")
    try:
        with np.errstate(over="raise", invalid="raise"):
            array = np.asarray(data, dtype=DATATYPES[datatype])
    except (TypeError, ValueError, ArithmeticError):
        raise InvalidInput(f"input data must be numbers for {datatype}, in its range") from None
    per_row = int(np.prod([d for d in shape[1:]])) if len(shape) > 1 else 1
    if array.size == 0 or array.size % max(per_row, 1):
        raise InvalidInput(f"input has {array.size} values; each instance needs {per_row}")
    return array.reshape((-1, *shape[1:]))


def plan(decoded: list[Decoded], max_rows: int) -> list[list[Decoded]]:
    """Group jobs in arrival order into engine runs of at most ``max_rows`` rows."""
    runs: list[list[Decoded]] = []
    rows = 0
    for d in decoded:
        if not runs or rows + d.rows > max_rows:
            runs.append([])
            rows = 0
        runs[-1].append(d)
        rows += d.rows
    return runs


def concat(run: list[Decoded]) -> Tensors:
    if len(run) == 1:
        return run[0].inputs
    names = run[0].inputs.keys()
    return {n: np.concatenate([d.inputs[n] for d in run], axis=0) for n in names}


def split(run: list[Decoded], outputs: Tensors) -> list[Tensors]:
    parts: list[Tensors] = []
    start = 0
    for d in run:
        parts.append({n: a[start : start + d.rows] for n, a in outputs.items()})
        start += d.rows
    return parts


def encode_answer(d: Decoded, manifest: Manifest, outputs: Tensors) -> tuple[bytes, OutcomeMeta]:
    """The response body for one job, encoded once, and the clear facts to forward it with."""
    head_len: int | None = None
    if d.reply.kind is JobKind.TORCHSERVE:
        body = orjson.dumps(torchserve_answer(manifest, outputs))
    else:
        body, head_len = v2_answer(manifest, d.reply, outputs)
    if d.reply.sealed is not None:
        return d.reply.sealed.seal(body, head_len, 200, None), OutcomeMeta(sealed=True)
    return body, OutcomeMeta(header_length=head_len)


def error_outcome(
    job: Job, status: int, code: str, message: str, sealed: AnswerSealer | None = None
) -> Outcome:
    """An error answer; once a sealed request is open, sealed to its client like any answer.

    An OHTTP answer leaves as status 200 with no code, as any RFC 9458 gateway answers:
    the status and code are inside, for the client only; in the clear, the broker and the
    frontend would learn per request that it was replayed, for another model, malformed...
    """
    if sealed is None:
        return Outcome(job.id, status, message.encode(), OutcomeMeta(code))
    payload = sealed.seal(message.encode(), None, status, code)
    if isinstance(sealed, OhttpTo):
        return Outcome(job.id, 200, payload, OutcomeMeta(sealed=True))
    return Outcome(job.id, status, payload, OutcomeMeta(code, sealed=True))


def v2_answer(manifest: Manifest, reply: Reply, outputs: Tensors) -> tuple[bytes, int | None]:
    """A v2 response with the outputs the request named (or all), each as JSON or binary."""
    tensors = {n: Tensor(n, datatype_of(a), tuple(a.shape), a) for n, a in outputs.items()}
    if reply.outputs:
        chosen = [tensors[o.name] for o in reply.outputs]
        binary = {o.name: o.binary for o in reply.outputs}
    else:
        chosen = list(tensors.values())
        binary = dict.fromkeys(tensors, reply.binary_default)
    header: dict[str, Any] = {"model_name": manifest.name, "model_version": manifest.version}
    if reply.request_id is not None:
        header["id"] = reply.request_id
    return encode_response(header, chosen, binary)


def torchserve_answer(manifest: Manifest, outputs: Tensors) -> Any:
    first = outputs[manifest.outputs[0].name]
    if manifest.labels is None or first.ndim != 2 or first.shape[1] != len(manifest.labels):
        rows = [{n: a[i].tolist() for n, a in outputs.items()} for i in range(first.shape[0])]
        return rows[0] if len(rows) == 1 else rows
    probs = first.astype(np.float64)
    if not manifest.extra.get("outputs_are_probabilities", False):
        probs = np.exp(probs - probs.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
    k = min(TOP_K, probs.shape[1])
    answers = []
    for row in probs:
        top = np.argsort(-row, kind="stable")[:k]
        answers.append({manifest.labels[i]: round(float(row[i]), 6) for i in top})
    return answers[0] if len(answers) == 1 else answers
