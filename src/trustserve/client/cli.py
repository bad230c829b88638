"""``trustserve predict``: one request from the command line, sealed unless told otherwise."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from trustserve.attestation import Policy, VerifierSources
from trustserve.client.sdk import TrustserveClient
from trustserve.client.verify import DEFAULT_MAX_BUNDLE_AGE_S, ClientPolicy
from trustserve.errors import AttestationRefused, InvalidInput
from trustserve.files import default_home

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}


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


def cmd_predict(args: argparse.Namespace) -> int:
    path = Path(args.input)
    if not path.is_file():
        raise InvalidInput(f"input {path} is not a file")
    try:
        answer = _predict(args, path)
    except AttestationRefused as exc:
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
    print(json.dumps(answer, indent=2))
    return 0


def _predict(args: argparse.Namespace, path: Path) -> Any:
    ca = Path(args.ca) if args.ca else default_home() / "tls" / "ca.pem"
    policy = None if args.standard else client_policy(args)
    with TrustserveClient(
        args.url, policy=policy, ca=ca if ca.exists() else None, sealed=not args.standard
    ) as client:
        if policy is not None:
            target = client.verify()  # before anything else goes to the server
            version = target.resolve(args.model, args.version)
            digest = target.digest(args.model, version) or "no archive digest pinned"
            print(
                f"trustserve: sealing for {args.model} version {version} ({digest}), "
                f"KMS attested by {target.kms_claims.tee} evidence",
                file=sys.stderr,
            )
        if path.suffix.lower() == ".npy":
            array = np.load(path, allow_pickle=False)
            meta = client._http.get(f"/v2/models/{args.model}").json()
            name = meta["inputs"][0]["name"]
            return top_k(client.infer(args.model, {name: array}, args.version), args.top_k)
        if path.suffix.lower() in IMAGE_SUFFIXES or path.suffix.lower() == ".json":
            return client.predict(args.model, path.read_bytes(), args.version)
        raise InvalidInput("input must be an image (.jpg/.png), a .npy array or a .json file")


def register(sub: Any) -> None:
    p = sub.add_parser("predict", help="send one request (sealed by default) and print the answer")
    p.add_argument("url", help="e.g. https://localhost:8080")
    p.add_argument("model")
    p.add_argument("input", help="an image, a .npy array or a .json body")
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
    p.add_argument("--top-k", type=int, default=5)
    p.set_defaults(func=cmd_predict)
