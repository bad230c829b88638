"""``trustserve predict``: one request from the command line, sealed unless told otherwise."""

from __future__ import annotations

import argparse
import json
import ssl
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from trustserve.attestation import Policy, VerifierSources
from trustserve.cli_errors import LOCAL_CA
from trustserve.client.sdk import TrustserveClient
from trustserve.client.verify import DEFAULT_MAX_BUNDLE_AGE_S, ClientPolicy
from trustserve.errors import AttestationRefused, BadRequest, InvalidInput
from trustserve.files import default_home

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}
NOT_AN_INPUT = "input must be an image (.jpg/.png), a .npy array or a .json file"


def client_policy(args: argparse.Namespace) -> ClientPolicy:
    """The KMS evidence policy and the worker rules the KMS release policy must fit in."""
    if args.allow_simulated:
        print(
            "trustserve: WARNING: accepting SIMULATED attestation: the server is not "
            "proven to run in a TEE",
            file=sys.stderr,
        )
    if args.policy:
        kms = Policy.load(Path(args.policy))
    elif args.allow_simulated:
        kms = Policy.development()
    else:
        kms = Policy.default()
    workers = Policy.load(Path(args.worker_policy)) if args.worker_policy else Policy.default()
    if args.allow_simulated:
        workers = replace(workers, allow_simulated=True)
    if args.require_workers:
        sets = yaml.safe_load(Path(args.require_workers).read_text())
        if not isinstance(sets, list):
            raise InvalidInput("--require-workers must be a YAML list of measurement sets")
        pinned = Policy.from_mapping({"measurements": sets}).measurements
        workers = replace(workers, measurements=pinned)
    sources = VerifierSources.configured(
        collateral_dir=Path(args.collateral_dir) if args.collateral_dir else None,
        pccs_url=args.pccs_url,
    )
    return ClientPolicy(kms, workers, max_bundle_age_s=args.max_bundle_age, sources=sources)


def top_k(outputs: dict[str, Any], k: int) -> dict[str, Any]:
    shown: dict[str, Any] = {}
    for name, array in outputs.items():
        a = np.asarray(array)
        if a.ndim == 2 and a.shape[1] > k:
            shown[name] = [
                {str(int(i)): round(float(row[i]), 6) for i in np.argsort(-row)[:k]} for row in a
            ]
        else:
            shown[name] = a.tolist()
    return shown


def top_labels(answer: Any, k: int) -> Any:
    """``--top-k`` on a TorchServe-style answer: label -> probability objects (one per
    instance, or one object) keep their ``k`` best; raw outputs by name go through
    ``top_k``. The server sends at most its top 5 labels: a larger ``k`` shows those."""
    if isinstance(answer, list):
        return [top_labels(a, k) for a in answer]
    if not isinstance(answer, dict):
        return answer
    values = list(answer.values())
    if values and all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        best = sorted(answer.items(), key=lambda item: -float(item[1]))[:k]
        return dict(best)
    if values and all(isinstance(v, list) for v in values):
        return {name: _best(np.asarray(v), k) for name, v in answer.items()}
    return answer


def _best(a: np.ndarray, k: int) -> Any:
    """One instance's output: its ``k`` largest entries by index when it has more."""
    if a.ndim == 1 and a.size > k and np.issubdtype(a.dtype, np.number):
        return {str(int(i)): round(float(a[i]), 6) for i in np.argsort(-a)[:k]}
    if a.ndim == 2 and np.issubdtype(a.dtype, np.number):
        return top_k({"_": a}, k)["_"]
    return a.tolist()


def refused(args: argparse.Namespace, exc: AttestationRefused) -> int:
    """What the user reads when the server's attestation is refused: nothing was sent."""
    hint = ""
    if "simulated" in exc.detail and not args.allow_simulated:
        hint = (
            "trustserve: this server's attestation is simulated (a development stack such "
            "as 'trustserve up'): add --allow-simulated to accept it, knowing nothing is "
            "hardware-protected\n"
        )
    print(
        f"trustserve: refused by rule {exc.claim}: {exc.detail}\n{hint}"
        "trustserve: nothing was sent to the server",
        file=sys.stderr,
    )
    return 2


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


def server_ca(args: argparse.Namespace) -> Path | None:
    """The CA file the server's certificate is checked against: ``--ca`` (which must be a
    CA certificate), else the local stack's if there is one, else None (the system's CAs)."""
    if not args.ca:
        local = default_home() / "tls" / "ca.pem"
        return local if local.exists() else None
    ca = Path(args.ca)
    if not ca.is_file():
        raise BadRequest(
            f"--ca {ca}: no such file; give the CA certificate that signed the server's "
            f"({LOCAL_CA})"
        )
    try:
        ssl.create_default_context(cafile=str(ca))
    except (ssl.SSLError, ValueError) as exc:
        raise BadRequest(
            f"--ca {ca} is not a PEM CA certificate ({getattr(exc, 'reason', None) or exc}); "
            f"give the CA certificate that signed the server's ({LOCAL_CA})"
        ) from None
    return ca


def open_client(args: argparse.Namespace) -> TrustserveClient:
    """A client as the flags say; sealed: the server is verified before anything is sent."""
    ca = server_ca(args)
    policy = None if args.standard else client_policy(args)
    client = TrustserveClient(args.url, policy=policy, ca=ca, sealed=not args.standard)
    if policy is not None:
        try:
            target = client.verify()  # before anything else goes to the server
        except BaseException:
            client.close()
            raise
        version = target.resolve(args.model, args.version)
        digest = target.digest(args.model, version) or "no archive digest pinned"
        print(
            f"trustserve: sealing for {args.model} version {version} ({digest}), "
            f"KMS attested by {target.kms_claims.tee} evidence",
            file=sys.stderr,
        )
    return client


def input_name(client: TrustserveClient, model: str) -> str:
    """The model's first input, which a .npy array is sent as."""
    meta = client._http.get(f"/v2/models/{model}").json()
    return str(meta["inputs"][0]["name"])


def _predict(args: argparse.Namespace, client: TrustserveClient, path: Path) -> Any:
    suffix = path.suffix.lower()
    if suffix == ".npy":
        array = np.load(path, allow_pickle=False)
        name = input_name(client, args.model)
        return top_k(client.infer(args.model, {name: array}, args.version), args.top_k)
    if suffix in IMAGE_SUFFIXES or suffix == ".json":
        return top_labels(client.predict(args.model, path.read_bytes(), args.version), args.top_k)
    raise InvalidInput(NOT_AN_INPUT)


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return int(text)


def register(sub: Any) -> None:
    p = sub.add_parser("predict", help="send one request (sealed by default) and print the answer")
    add_client_args(p, "input", "an image, a .npy array or a .json body")
    p.set_defaults(func=cmd_predict)
    from trustserve.client.batch import register_batch

    register_batch(sub)


def add_client_args(p: argparse.ArgumentParser, what: str, what_help: str) -> None:
    """What ``predict`` and ``batch`` share: the server, the model, how it is trusted."""
    p.add_argument("url", help="e.g. https://localhost:8080")
    p.add_argument("model")
    p.add_argument(what, help=what_help)
    p.add_argument("--version", default=None)
    p.add_argument("--standard", action="store_true", help="an ordinary (not sealed) request")
    p.add_argument("--ca", help="CA to verify the server (default $TRUSTSERVE_HOME/tls/ca.pem)")
    p.add_argument("--policy", help="YAML policy the KMS evidence must satisfy")
    p.add_argument(
        "--allow-simulated",
        action="store_true",
        help="accept simulated attestation (development only: proves nothing)",
    )
    p.add_argument(
        "--worker-policy",
        help="YAML policy: the most the KMS release policy may admit (default: strict)",
    )
    p.add_argument(
        "--require-workers", help="YAML list: the only worker measurements the KMS may admit"
    )
    p.add_argument(
        "--max-bundle-age",
        type=float,
        default=DEFAULT_MAX_BUNDLE_AGE_S,
        metavar="SECONDS",
        help="refuse a serving-key list signed longer ago than this (default %(default)g)",
    )
    p.add_argument(
        "--collateral-dir", help="sgx/tdx KMS evidence: collateral files <tee>-<fmspc>-<ca>.json"
    )
    p.add_argument("--pccs-url", help="sgx/tdx KMS evidence: fetch collateral from this PCCS")
    p.add_argument(
        "--top-k",
        type=_positive,
        default=5,
        help="classes shown per instance (default 5; the server sends at most 5 labels)",
    )
