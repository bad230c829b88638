"""``trustserve kms``: run the key service, rotate the serving key, show its identity,
verify the audit log against an identity the caller names.

The root key is unlocked with ``TRUSTSERVE_KMS_PASSPHRASE`` or
``TRUSTSERVE_KMS_KEY_FILE`` (never a command-line argument).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from trustserve import home as layout
from trustserve.attestation import Policy, make_provider
from trustserve.attestation.flags import PROVIDER, add_verifier_arguments, verifier_sources
from trustserve.attestation.registry import parse_options
from trustserve.crypto.rootkey import Protector, create_key_file, protector_from_env
from trustserve.encoding import b64, unb64
from trustserve.errors import BadRequest, ConfigError
from trustserve.home import HOME_HELP, home_or_default
from trustserve.keyrelease.bundle import verify_bundle
from trustserve.keyrelease.client import KmsClient
from trustserve.keyrelease.protocol import DEFAULT_LEASE
from trustserve.keyrelease.trust import parse_identity
from trustserve.kms import audit, join
from trustserve.kms.budgets import FreshEvidenceOptions
from trustserve.kms.etcd_store import STATE_HELP, open_etcd_state
from trustserve.kms.peers import Peers
from trustserve.kms.service import KmsService
from trustserve.kms.state import KmsState, kms_dir
from trustserve.kms.tools import encrypt_model_file
from trustserve.kms.witnesses import Witnesses, add_witness_arguments, start_transparency
from trustserve.tls import server_tls_options
from trustserve.transparency.log import log_verifier

log = logging.getLogger("trustserve.kms")


def register(subparsers: Any) -> None:
    kms = subparsers.add_parser("kms", help="the key service (KMS)")
    sub = kms.add_subparsers(dest="kms_command", required=True, metavar="ACTION")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--home", type=Path, help=HOME_HELP)

    def with_state(p: argparse.ArgumentParser) -> None:
        common(p)
        p.add_argument("--state", metavar="URL", help=STATE_HELP)

    serve = sub.add_parser("serve", help="run the KMS over HTTPS")
    with_state(serve)
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8443)
    serve.add_argument("--cert", type=Path, help="TLS certificate (PEM)")
    serve.add_argument("--key", type=Path, help="TLS private key (PEM)")
    serve.add_argument("--insecure-http", action="store_true", help="plain HTTP (tests only)")
    serve.add_argument("--policy", type=Path, help="release policy YAML (default: strict)")
    serve.add_argument(
        "--allow-sim",
        action="store_true",
        help="development: release to sim evidence made under this KMS's own home",
    )
    serve.add_argument(
        "--sim-platform-key",
        action="append",
        default=[],
        metavar="HEX",
        help="development: also release to sim evidence of this platform key, repeatable "
        "(print a home's key with `trustserve attest --sim-key --home H`)",
    )
    serve.add_argument(
        "--allow-sim-any",
        action="store_true",
        help="development: release to sim evidence of any platform key",
    )
    serve.add_argument(
        "--key-lease",
        type=float,
        default=DEFAULT_LEASE,
        metavar="SECONDS",
        help="how long released serving keys may be used without renewal: the bound on a "
        f"rotated-out key at a worker that cannot reach the KMS (default {DEFAULT_LEASE:.0f})",
    )
    PROVIDER.add_to(serve, "provider")  # the KMS's own evidence
    add_verifier_arguments(serve)
    join.add_arguments(serve)
    fresh = FreshEvidenceOptions()
    serve.add_argument(
        "--fresh-bundle-rate",
        type=float,
        default=fresh.per_client_rate,
        metavar="N",
        help="bundles made for a nonce, per client per second (default %(default)s)",
    )
    serve.add_argument(
        "--fresh-bundle-burst",
        type=int,
        default=fresh.per_client_burst,
        metavar="N",
        help="... in a burst, per client (default %(default)s)",
    )
    serve.add_argument(
        "--fresh-bundle-total",
        type=float,
        default=fresh.total_rate,
        metavar="N",
        help="... per second for all anonymous clients together, and again for the "
        "reserved networks (bursts of twice that; default %(default)s)",
    )
    serve.add_argument(
        "--reserved-network",
        action="append",
        default=[],
        metavar="CIDR",
        help="your frontends' addresses: a fresh-bundle budget of their own, repeatable",
    )
    serve.add_argument(
        "--trusted-proxy",
        action="append",
        default=[],
        metavar="CIDR",
        help="a reverse proxy in front of the KMS whose --client-header is believed, repeatable",
    )
    serve.add_argument(
        "--client-header",
        metavar="NAME",
        help="the header a --trusted-proxy names the client in (e.g. X-Forwarded-For)",
    )
    serve.add_argument(
        "--attestation-option",
        action="append",
        metavar="KEY=VALUE",
        help="provider option, repeatable",
    )
    add_witness_arguments(serve)
    serve.set_defaults(func=_serve)

    log_key = sub.add_parser(
        "log-key", help="print the transparency log's verifier key (for `witness serve --log`)"
    )
    with_state(log_key)
    log_key.set_defaults(func=_log_key)

    rotate = sub.add_parser("rotate-serving-key", help="make a new current serving key")
    with_state(rotate)
    rotate.set_defaults(func=_rotate)

    key_file = sub.add_parser("init-key-file", help="write a new random KMS key file (0600)")
    key_file.add_argument("path", type=Path)
    key_file.set_defaults(func=_init_key_file)

    identity = sub.add_parser(
        "identity", help="print the KMS identity public key (base64) for --kms-identity"
    )
    with_state(identity)
    identity.set_defaults(func=_identity)

    from trustserve.kms import recovery_cli

    recovery_cli.register(sub, common, local_protector)

    audit_p = sub.add_parser("audit", help="the audit log")
    audit_sub = audit_p.add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    verify = audit_sub.add_parser("verify", help="check the hash chain and the signed head")
    common(verify)
    expected = verify.add_mutually_exclusive_group(required=True)
    expected.add_argument(
        "--identity", help="the KMS identity you expect (public key file or base64)"
    )
    expected.add_argument(
        "--bundle", type=Path, help="an attestation bundle (JSON file) naming the identity"
    )
    verify.add_argument(
        "--policy", type=Path, help="with --bundle: verify the bundle's evidence under this policy"
    )
    verify.set_defaults(func=_audit_verify)


def register_model_commands(model: Any) -> None:
    """``model encrypt``, added to the ``model`` group by ``trustserve.cli``."""
    p = model.add_parser(
        "encrypt", help="encrypt an archive under a model key the KMS makes and keeps"
    )
    p.add_argument("src", help="a plaintext archive (.tsm)")
    p.add_argument("-o", "--output", required=True, help="the encrypted archive to write")
    p.add_argument(
        "--kms",
        help="KMS URL, or replicas as URL,URL,... (default: the state under --home, in-process)",
    )
    p.add_argument("--ca", help="CA file for the KMS (default HOME/tls/ca.pem)")
    p.add_argument("--token-file", help="KMS management token (default HOME/kms/admin.token)")
    p.add_argument("--home", help=HOME_HELP)
    p.set_defaults(func=_encrypt)


# the subcommands this module adds to another area's group (``trustserve.cli`` composes)
EXTENDS = {"model": register_model_commands}


def _encrypt(args: argparse.Namespace) -> int:
    home = _home(args)
    if args.kms:
        token_file = Path(args.token_file) if args.token_file else layout.kms_admin_token(home)
        ca = layout.trusted_ca(home, args.ca)
        with KmsClient(args.kms, ca_file=ca, token=token_file.read_text().strip()) as client:
            key_id = encrypt_model_file(Path(args.src), Path(args.output), client, progress=True)
    else:
        service = _local_kms(home, Policy.default())
        key_id = encrypt_model_file(Path(args.src), Path(args.output), service, progress=True)
    print(f"{args.output}: encrypted under {key_id}")
    return 0


def _local_kms(home: Path, policy: Policy, **options: Any) -> KmsService:
    """The KMS state under ``home``, in-process, unlocked by ``local_protector``. Every
    ``kms`` command and ``model encrypt`` finds the root key this way."""
    return KmsService(home, local_protector(home), policy, **options)


def local_protector(home: Path) -> Protector:
    """The operator's secret, or, when none is set, the development key file ``trustserve
    up`` made under ``home`` (said loudly)."""
    from trustserve.crypto.rootkey import KEY_FILE_ENV, PASSPHRASE_ENV, KeyFileProtector

    dev_key = layout.dev_root_key(home)
    if os.environ.get(PASSPHRASE_ENV) or os.environ.get(KEY_FILE_ENV) or not dev_key.exists():
        return protector_from_env()
    _dev_warning(
        f"the KMS root key is unwrapped by the development key file {dev_key}",
        f"a key file beside the state it protects guards nothing against whoever reads this "
        f"disk; set {PASSPHRASE_ENV} or {KEY_FILE_ENV} for a deployment",
    )
    return KeyFileProtector(dev_key)


def _home(args: argparse.Namespace) -> Path:
    return home_or_default(args.home)


def _state_options(args: argparse.Namespace) -> dict[str, Any]:
    """``state_store=`` for ``--state URL`` (etcd); nothing for the files under --home."""
    if not args.state:
        return {}
    return {"state_store": open_etcd_state(args.state)}


def _policy(args: argparse.Namespace, home: Path) -> Policy:
    if args.policy is not None:
        return Policy.load(args.policy)
    if args.allow_sim_any:
        _dev_warning(
            "this KMS releases model keys to SIMULATED evidence of any sim platform key "
            "(--allow-sim-any): any process that reaches it obtains model keys"
        )
        return Policy.development(None)
    if args.sim_platform_key:
        named = tuple(_sim_key(k) for k in args.sim_platform_key)
        _dev_warning(
            "this KMS releases model keys to SIMULATED evidence of the named sim platform "
            "keys (--sim-platform-key): whoever can read those homes obtains model keys"
        )
        own = Policy.development(home)
        return replace(own, sim_platform_keys=own.sim_platform_keys + named)
    if args.allow_sim:
        return Policy.development(home)
    return Policy.default()


def _sim_key(text: str) -> str:
    key = text.strip().lower()
    if len(key) != 64 or any(c not in "0123456789abcdef" for c in key):
        raise ConfigError(f"--sim-platform-key expects 64 hex digits (32 bytes), got {text!r}")
    return key


SIM_PROVES_NOTHING = "sim evidence proves nothing: no hardware protects the key that signs it"


def _dev_warning(what: str, why: str = SIM_PROVES_NOTHING) -> None:
    """Loud, on stderr, before anything runs: an operator cannot miss it in a log."""
    bar = "!" * 78
    print(
        f"{bar}\n!!! DEVELOPMENT MODE: {what}.\n!!! {why[0].upper() + why[1:]}.\n"
        "!!! Never use this with a model or data that must stay confidential.\n"
        f"{bar}",
        file=sys.stderr,
        flush=True,
    )


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from trustserve.kms.app import create_app

    home = _home(args)
    sources = verifier_sources(args)
    fresh = FreshEvidenceOptions(
        per_client_rate=args.fresh_bundle_rate,
        per_client_burst=args.fresh_bundle_burst,
        total_rate=args.fresh_bundle_total,
    )
    peers = Peers.configured(args.trusted_proxy, args.client_header, args.reserved_network)
    policy = _policy(args, home)
    options = parse_options(args.attestation_option)
    provider = make_provider(args.provider, home, **options) if args.provider else None
    admits = join.peer_policy(args)  # read once: the one sent to the donor is the one enforced
    if admits is not None and admits.allow_simulated:
        listed = "its listed sim platform keys" if admits.sim_platform_keys else ""
        which = listed or "ANY sim platform key (--peer-allow-sim-any)"
        _dev_warning(
            f"the peer policy {args.peer_policy} hands the ROOT KEY to SIMULATED evidence of "
            f"{which}: whoever can make such evidence obtains the root key and every key "
            "under it"
        )
    joined = join.join_from_args(args, admits, policy, provider, sources)
    service = KmsService(
        home,
        None if joined else local_protector(home),
        policy,
        sources=sources,
        key_lease=args.key_lease,
        fresh_evidence=fresh,
        root=joined.root if joined else None,
        state_version=joined.state_version if joined else 0,
        witnesses=Witnesses.from_args(args),
        **_state_options(args),
    )
    if joined and service.state.identity_public_key() != joined.identity:
        raise ConfigError(
            f"the state in {service.state.where} belongs to another KMS identity than the "
            f"attested replica at {joined.donor}'s; refusing the key"
        )
    # a state older than what the witnesses cosigned refuses to start; then the policy
    start_transparency(service, args)
    ssl: dict[str, Any] = {}
    if not args.insecure_http:
        ssl = server_tls_options(args.cert, args.key, layout.tls_dir(home))
    log.info("KMS on %s:%d (state in %s)", args.host, args.port, service.state.where)
    log.info("KMS identity (for --kms-identity): %s", b64(service.state.identity_public_key()))
    joins = join.Joins(service, admits, allow_sim_any=args.peer_allow_sim_any)
    app = create_app(service, provider, peers=peers, joins=joins)
    # the client address is decided in one place (Peers), not by uvicorn's own header rules
    uvicorn.run(app, host=args.host, port=args.port, proxy_headers=False, **ssl)
    return 0


def _rotate(args: argparse.Namespace) -> int:
    service = _local_kms(_home(args), Policy.default(), **_state_options(args))
    print(json.dumps(service.rotate_serving_key(), indent=2))
    return 0


def _log_key(args: argparse.Namespace) -> int:
    service = _local_kms(_home(args), Policy.default(), **_state_options(args))
    print(log_verifier(service.state.identity_public_key()).vkey())
    return 0


def _init_key_file(args: argparse.Namespace) -> int:
    create_key_file(args.path)
    print(f"wrote {args.path}; set TRUSTSERVE_KMS_KEY_FILE={args.path.resolve()}")
    return 0


def _identity(args: argparse.Namespace) -> int:
    """The public half of the unlocked identity key (not the copy stored beside it)."""
    service = _local_kms(_home(args), Policy.default(), **_state_options(args))
    print(b64(service.state.identity_key().public_key().public_bytes_raw()))
    return 0


def _expected_identity(args: argparse.Namespace) -> bytes:
    if args.identity is not None:
        return parse_identity(args.identity)
    try:
        bundle = json.loads(args.bundle.read_bytes())
        identity = unb64(bundle["identity_public_key"], "identity_public_key")
    except (OSError, ValueError, KeyError, TypeError, BadRequest) as exc:
        raise ConfigError(f"attestation bundle {args.bundle} is unusable: {exc}") from None
    if args.policy is not None:
        verify_bundle(bundle, Policy.load(args.policy), time.time())
    return identity


def _audit_verify(args: argparse.Namespace) -> int:
    """Needs no secret; the head is checked with the identity the caller expects, never
    with the public key stored beside the log (whoever rewrites the log can replace it)."""
    directory = kms_dir(_home(args))
    expected = _expected_identity(args)
    state = directory / "state.json"
    if state.exists() and KmsState.public_identity(state) != expected:
        print(f"warning: {state} names another identity than the one expected")
    report = audit.verify(directory, expected)
    print(report)
    return 0 if report.ok else 1
