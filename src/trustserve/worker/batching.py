"""Turning jobs into engine batches and engine outputs back into answers.

A job's payload is read according to its kind: ``v2`` (binary v2 tensors) or
``torchserve`` (a raw body: image bytes for an image model, else JSON). Jobs
that cannot be read are answered 400 at once; the rest are concatenated along
the batch axis, run, and split again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from trustserve.archive import DATATYPES, Manifest
from trustserve.broker.base import Job
from trustserve.crypto.sealing import CONTENT_TYPE, ResponseKey, Route, seal_response
from trustserve.engines.base import Tensors
from trustserve.errors import InvalidInput
from trustserve.tensors import Tensor, check_against, datatype_of, encode_binary, parse_request
from trustserve.worker.sealed import SealedReader

TOP_K = 5


@dataclass
class Decoded:
    """A job's input tensors; ``answer`` says how to answer it (``v2`` or ``torchserve``)."""

    job: Job
    inputs: Tensors
    rows: int
    answer: str
    reply: tuple[ResponseKey, Route] | None = None


def decode(
    job: Job,
    manifest: Manifest,
    preprocess: Callable[[bytes], Any] | None,
    sealed: SealedReader | None = None,
) -> Decoded:
    kind, body, header_length, reply = job.kind, job.payload, job.meta.get("header_length"), None
    if kind == "sealed":
        if sealed is None:
            raise InvalidInput("this worker holds no serving key for sealed requests")
        opened, route = sealed.open(job)
        kind = "v2" if opened.kind == "v2" else "torchserve"
        body, header_length, reply = opened.body, opened.header_length, (opened.reply, route)
    if kind == "v2":
        request = parse_request(body, None if header_length is None else str(header_length))
        check_against(request, manifest)
        inputs = {t.name: t.data for t in request.inputs}
    elif kind == "torchserve":
        inputs = _torchserve_inputs(body, manifest, preprocess)
    else:
        raise InvalidInput(f"this worker cannot read requests of kind {kind!r}")
    rows = next(iter(inputs.values())).shape[0]
    return Decoded(job, inputs, rows, kind, reply)


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
        raise InvalidInput(f"body is neither an image for this model nor JSON: {exc}") from None
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
        raise InvalidInput(f"input data must be numbers that fit {datatype}") from None
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


def encode_answer(d: Decoded, manifest: Manifest, outputs: Tensors) -> tuple[bytes, dict[str, Any]]:
    """Response bytes for one job and the clear facts the frontend needs to pass them on."""
    head_len: int | None = None
    if d.answer == "torchserve":
        body = orjson.dumps(_torchserve_answer(manifest, outputs))
        meta: dict[str, Any] = {"content_type": "application/json"}
    else:
        tensors = [Tensor(n, datatype_of(a), tuple(a.shape), a) for n, a in outputs.items()]
        header = {"model_name": manifest.name, "model_version": manifest.version}
        body, head_len = encode_binary(header, "outputs", tensors)
        meta = {"header_length": head_len}
    if d.reply is not None:
        reply, route = d.reply
        return seal_response(reply, route, body, head_len), {"content_type": CONTENT_TYPE}
    return body, meta


def _torchserve_answer(manifest: Manifest, outputs: Tensors) -> Any:
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
