"""What ``predict`` and ``batch`` share: their flags, the server's CA, the verified
client those flags open, and what the user reads when the attestation is refused."""

from __future__ import annotations

import argparse
import ssl
import sys
from dataclasses import replace
from pathlib import Path

import yaml

from trustserve.attestation import Policy
from trustserve.attestation.flags import add_verifier_arguments, verifier_sources
from trustserve.cli_errors import LOCAL_CA
from trustserve.client.policy_file import read_policy_file
from trustserve.client.sdk import TrustserveClient
from trustserve.client.verify import DEFAULT_MAX_BUNDLE_AGE_S, ClientPolicy
from trustserve.errors import AttestationRefused, BadRequest, InvalidInput
from trustserve.home import ca_file, default_home


def add_client_args(p: argparse.ArgumentParser, what: str, what_help: str) -> None:
    """What ``predict`` and ``batch`` share: the server, the model, how it is trusted."""
    p.add_argument("url", help="e.g. https://localhost:8080")
    p.add_argument("model")
    p.add_argument(what, help=what_help)
    p.add_argument("--version", default=None)
    p.add_argument("--standard", action="store_true", help="an ordinary (not sealed) request")
    p.add_argument(
        "--ohttp",
        action="store_true",
        help="seal as Oblivious HTTP (RFC 9458) to the attested key config, via the gateway URL",
    )
    p.add_argument("--ca", help="CA to verify the server (default $TRUSTSERVE_HOME/tls/ca.pem)")
    p.add_argument(
        "--policy",
        help="YAML policy the KMS evidence must satisfy (with an optional transparency: "
        "section: the witnesses that must cosign the KMS's log)",
    )
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
    add_verifier_arguments(p)  # for the KMS's evidence
    p.add_argument(
        "--top-k",
        type=positive,
        default=5,
        help="classes shown per instance (default 5; the server sends at most 5 labels)",
    )


def positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return int(text)


def client_policy(args: argparse.Namespace) -> ClientPolicy:
    """The KMS evidence policy and the worker rules the KMS release policy must fit in."""
    if args.allow_simulated:
        print(
            "trustserve: WARNING: accepting SIMULATED attestation: the server is not "
            "proven to run in a TEE",
            file=sys.stderr,
        )
    witnesses = None
    if args.policy:
        kms, witnesses = read_policy_file(args.policy)
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
    sources = verifier_sources(args)
    return ClientPolicy(
        kms,
        workers,
        max_bundle_age_s=args.max_bundle_age,
        sources=sources,
        transparency=witnesses,
    )


def server_ca(args: argparse.Namespace) -> Path | None:
    """The CA file the server's certificate is checked against: ``--ca`` (which must be a
    CA certificate), else the local stack's if there is one, else None (the system's CAs)."""
    if not args.ca:
        local = ca_file(default_home())
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
    if args.standard and args.ohttp:
        raise BadRequest("--ohttp seals the request: it cannot be combined with --standard")
    policy = None if args.standard else client_policy(args)
    client = TrustserveClient(
        args.url, policy=policy, ca=ca, sealed=not args.standard, ohttp=args.ohttp
    )
    if policy is not None:
        try:
            target = client.verify()  # before anything else goes to the server
            how = ""
            if args.ohttp:  # refused here, before anything is sent, if the bundle has none
                how = f" as OHTTP to key config {target.attested_ohttp_config(None).key_id}"
        except BaseException:
            client.close()
            raise
        version = target.resolve(args.model, args.version)
        digest = target.digest(args.model, version) or "no archive digest pinned"
        logged = f", its log checked at size {target.checkpoint.size}" if target.checkpoint else ""
        print(
            f"trustserve: sealing for {args.model} version {version} ({digest}){how}, "
            f"KMS attested by {target.kms_claims.tee} evidence{logged}",
            file=sys.stderr,
        )
    return client


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
