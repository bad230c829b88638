"""``trustserve predict``: one request from the command line, sealed unless told otherwise."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from trustserve.client.answers import IMAGE_SUFFIXES, input_name, top_k, top_labels
from trustserve.client.flags import add_client_args, open_client, refused
from trustserve.client.sdk import TrustserveClient
from trustserve.errors import AttestationRefused, InvalidInput

NOT_AN_INPUT = "input must be an image (.jpg/.png), a .npy array or a .json file"


def cmd_predict(args: argparse.Namespace) -> int:
    path = Path(args.input)
    if not path.is_file():
        raise InvalidInput(f"input {path} is not a file")
    if path.suffix.lower() not in {*IMAGE_SUFFIXES, ".npy", ".json"}:
        raise InvalidInput(NOT_AN_INPUT)
    try:
        with open_client(args) as client:
            answer = _predict(args, client, path)
    except AttestationRefused as exc:
        return refused(args, exc)
    print(json.dumps(answer, indent=2))
    return 0


def _predict(args: argparse.Namespace, client: TrustserveClient, path: Path) -> Any:
    suffix = path.suffix.lower()
    if suffix == ".npy":
        array = np.load(path, allow_pickle=False)
        name = input_name(client, args.model)
        return top_k(client.infer(args.model, {name: array}, args.version), args.top_k)
    if suffix in IMAGE_SUFFIXES or suffix == ".json":
        return top_labels(client.predict(args.model, path.read_bytes(), args.version), args.top_k)
    raise InvalidInput(NOT_AN_INPUT)


def register(sub: Any) -> None:
    p = sub.add_parser("predict", help="send one request (sealed by default) and print the answer")
    add_client_args(p, "input", "an image, a .npy array or a .json body")
    p.set_defaults(func=cmd_predict)
    from trustserve.client.batch import register_batch  # batch imports nothing from here

    register_batch(sub)
