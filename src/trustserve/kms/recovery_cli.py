"""``trustserve kms owner-keygen | recovery-init | recover | recover-share``: owner recovery.

The protocol and the recovery file are in ``trustserve.kms.recovery``; the
procedure for operators and owners in docs/kms.md, "Owner recovery".
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from trustserve import files
from trustserve import home as layout
from trustserve.attestation import Policy, make_provider
from trustserve.attestation.flags import PROVIDER, add_verifier_arguments, verifier_sources
from trustserve.attestation.registry import parse_options
from trustserve.crypto import hpke
from trustserve.crypto.rootkey import (
    FileKeyStore,
    Protector,
    protector_from_env,
    store_root_key,
    unlock_raw,
)
from trustserve.encoding import b64, unb64
from trustserve.errors import BadRequest, ConfigError
from trustserve.home import home_or_default
from trustserve.keyrelease.client import KmsClient
from trustserve.kms import audit
from trustserve.kms.recovery import RecoveryFile, RecoverySession, send_share
from trustserve.kms.state import KmsState, kms_dir
from trustserve.tls import server_tls_options

log = logging.getLogger("trustserve.kms")
OWNER_KEY = "owner.key"
OWNER_PUB = "owner.pub"


def register(
    sub: Any,
    common: Callable[[argparse.ArgumentParser], None],
    local_protector: Callable[[Path], Protector],
) -> None:
    """Adds the commands to ``kms``; ``local_protector`` finds the operator secret of a home."""
    keygen = sub.add_parser(
        "owner-keygen", help="make an owner's recovery key pair (DIR/owner.key 0600, owner.pub)"
    )
    keygen.add_argument("dir", type=Path)
    keygen.set_defaults(func=_owner_keygen)

    init = sub.add_parser(
        "recovery-init", help="split the root key k-of-n among owners into a recovery file"
    )
    common(init)
    init.add_argument(
        "--owner", action="append", required=True, metavar="PUB",
        help="an owner's public key (owner.pub, or its base64), repeatable: one share each",
    )  # fmt: skip
    init.add_argument("--threshold", type=int, required=True, metavar="K")
    init.add_argument("-o", "--output", type=Path, required=True, help="the recovery file")
    init.set_defaults(func=_recovery_init, local_protector=local_protector)

    recover = sub.add_parser(
        "recover", help="rebuild the root key from owners' shares (a fresh KMS, attested)"
    )
    common(recover)
    recover.add_argument("--recovery-file", type=Path, required=True)
    recover.add_argument("--host", default="127.0.0.1")
    recover.add_argument("--port", type=int, default=8443)
    recover.add_argument("--cert", type=Path, help="TLS certificate (PEM)")
    recover.add_argument("--key", type=Path, help="TLS private key (PEM)")
    recover.add_argument("--insecure-http", action="store_true", help="plain HTTP (tests only)")
    PROVIDER.add_to(recover, "provider")
    recover.add_argument("--attestation-option", action="append", metavar="KEY=VALUE")
    recover.set_defaults(func=_recover)

    share = sub.add_parser(
        "recover-share", help="as an owner: verify a recovering KMS, then send it your share"
    )
    share.add_argument("url", help="the recovering KMS")
    share.add_argument("--owner-key", type=Path, required=True, help="your owner.key")
    share.add_argument("--recovery-file", type=Path, required=True)
    share.add_argument(
        "--trust-policy", type=Path, required=True,
        help="the KMS trust policy (YAML) the recovering KMS's evidence must satisfy",
    )  # fmt: skip
    share.add_argument("--ca", type=Path, help="CA file for the KMS's TLS certificate")
    add_verifier_arguments(share)
    share.set_defaults(func=_recover_share)


def _owner_keygen(args: argparse.Namespace) -> int:
    private_path, public_path = args.dir / OWNER_KEY, args.dir / OWNER_PUB
    for path in (private_path, public_path):
        if path.exists():
            raise ConfigError(f"{path} exists; refusing to overwrite an owner key")
    private, public = hpke.generate_keypair()
    files.write_secret(private_path, b64(private).encode() + b"\n")
    files.write_atomic(public_path, b64(public).encode() + b"\n")
    print(f"wrote {private_path} (keep it offline) and {public_path} (give it to the operator)")
    return 0


def _key_text(value: str | Path, what: str) -> bytes:
    """A raw 32-byte key from a file of base64, or from base64 text."""
    path = Path(value)
    text = str(value)
    if len(text) < 4096 and path.is_file():
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{what} {path} is unreadable: {exc}") from None
    try:
        key = unb64(text.strip(), what)
    except BadRequest:
        raise ConfigError(f"{what} is neither a readable file nor base64") from None
    if len(key) != hpke.KEY_SIZE:
        raise ConfigError(f"{what} must be {hpke.KEY_SIZE} raw X25519 bytes")
    return key


def _recovery_init(args: argparse.Namespace) -> int:
    home = home_or_default(args.home)
    protector = args.local_protector(home)
    state = KmsState(home, protector)  # made now if this KMS is new; checks the secret
    root_key = unlock_raw(FileKeyStore(state.dir / "root-key.json"), protector)
    owners = [_key_text(o, "owner public key") for o in args.owner]
    recovery = RecoveryFile.make(root_key, state.identity_public_key(), owners, args.threshold)
    recovery.write(args.output)
    print(
        f"wrote {args.output}: the root key split {args.threshold}-of-{len(owners)} among "
        "the owners, each share sealed to one owner; give every owner a copy, and keep a "
        f"backup of {state.path} (both hold ciphertext only)"
    )
    return 0


def _recover(args: argparse.Namespace) -> int:
    import uvicorn

    from trustserve.kms.recovery_app import create_recovery_app

    home = home_or_default(args.home)
    directory = kms_dir(home)
    protector = protector_from_env()  # the new operator secret the rebuilt key is wrapped by
    recovery = RecoveryFile.load(args.recovery_file)
    state_path, store = directory / "state.json", FileKeyStore(directory / "root-key.json")
    if not state_path.exists():
        raise ConfigError(
            f"no KMS state at {state_path}: restore the encrypted state.json from a backup first"
        )
    if store.load() is not None:
        raise ConfigError(f"{store.path} exists: this KMS has a root key; run `kms serve`")
    if KmsState.public_identity(state_path) != recovery.identity:
        raise ConfigError(f"{state_path} belongs to another KMS than {args.recovery_file}")
    if args.provider is None:
        raise ConfigError("owners verify this KMS's evidence before they send a share: --provider")
    provider = make_provider(args.provider, home, **parse_options(args.attestation_option))
    server: uvicorn.Server | None = None

    def recovered(root_key: bytes) -> None:
        store_root_key(store, protector, root_key)
        state = KmsState(home, protector)  # the state opens under the rebuilt key
        audit.AuditLog(state.dir, state.identity_key()).append(
            "root-key-recovered", threshold=recovery.threshold, split=recovery.identifier
        )
        state.log_recovery(recovery.threshold, recovery.threshold)  # the transparency log
        log.warning("root key recovered and wrapped under the new operator secret")
        if server is not None:
            server.should_exit = True

    session = RecoverySession(recovery, provider, recovered)
    ssl: dict[str, Any] = {}
    if not args.insecure_http:
        ssl = server_tls_options(args.cert, args.key, layout.tls_dir(home))
    log.warning(
        "KMS recovery on %s:%d: waiting for %d owners' shares",
        args.host,
        args.port,
        recovery.threshold,
    )
    config = uvicorn.Config(
        create_recovery_app(session), host=args.host, port=args.port, proxy_headers=False, **ssl
    )
    server = uvicorn.Server(config)
    server.run()
    if not session.status()["recovered"]:
        print("stopped before the root key was recovered; nothing was written")
        return 1
    print(f"root key recovered into {store.path}; start the KMS with `trustserve kms serve`")
    return 0


def _recover_share(args: argparse.Namespace) -> int:
    owner_key = _key_text(args.owner_key, "owner key")
    recovery = RecoveryFile.load(args.recovery_file)
    policy = Policy.load(args.trust_policy)
    with KmsClient(args.url, ca_file=args.ca) as client:
        status = send_share(client, owner_key, recovery, policy, verifier_sources(args))
    if status.get("recovered"):
        print("share accepted: the KMS has recovered its root key")
    else:
        print(
            f"share accepted: {status.get('received')} of {status.get('threshold')} received; "
            f"{status.get('needed')} more needed"
        )
    print(json.dumps(status))
    return 0
