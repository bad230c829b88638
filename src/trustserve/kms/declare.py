"""``POST /v1/log/declare``: the operator declares a release (an image digest and/or the
measurement set its TEE reports) in the KMS's transparency log (``docs/transparency.md``).

The body, at most ``MAX_BODY`` bytes (refused before it is parsed)::

    {"digest": "sha256:<64 lower-case hex>",              # and/or
     "measurement": {"tee": "tdx", "mrtd": "...", ...},    # a set as a release policy lists it
     "note": "v1.4.2 worker image"}                        # optional, at most 200 characters

The measurement set is checked by the release policy's own rules (``trustserve policy``
writes such sets) and logged in their canonical form; every refusal names the field.

``trustserve policy ... --declare-to KMS_URL`` sends one declaration per measurement set it
built (``EXTENDS``: ``add_declare_arguments``, ``declarations``, ``send_declarations``).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from trustserve import home as layout
from trustserve.attestation.policy.release import measurement_set
from trustserve.errors import BadRequest, ConfigError
from trustserve.home import HOME_HELP, home_or_default

MAX_BODY = 16 * 1024
MAX_NOTE = 200
FIELDS = ("digest", "measurement", "note")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


def parse_declaration(body: Any) -> dict[str, Any]:
    """The ``release_declared`` fields of a declaration body; BadRequest naming the field."""
    if not isinstance(body, dict):
        raise BadRequest("body must be a JSON object with digest and/or measurement")
    unknown = sorted(str(k) for k in body if k not in FIELDS)
    if unknown:
        raise BadRequest(f"unknown field(s) {', '.join(unknown)}; known: {', '.join(FIELDS)}")
    if body.get("digest") is None and body.get("measurement") is None:
        raise BadRequest("digest or measurement is required (a release names one or both)")
    fields: dict[str, Any] = {}
    digest = body.get("digest")
    if digest is not None:
        if not isinstance(digest, str) or _DIGEST.fullmatch(digest) is None:
            raise BadRequest("digest must be sha256: followed by 64 lower-case hex digits")
        fields["digest"] = digest
    measurement = body.get("measurement")
    if measurement is not None:
        try:
            parsed = measurement_set(measurement, "measurement")
        except ConfigError as exc:
            raise BadRequest(str(exc)) from None
        if not parsed.values:
            raise BadRequest("measurement names no value (it would declare any code)")
        fields["measurement"] = parsed.to_json()
    note = body.get("note")
    if note is not None:
        if not isinstance(note, str) or not 0 < len(note) <= MAX_NOTE or not note.isprintable():
            raise BadRequest(f"note must be 1..{MAX_NOTE} printable characters")
        fields["note"] = note
    return fields


# ---- ``trustserve policy ... --declare-to KMS_URL`` (the operator's side) ----


def register(subparsers: Any) -> None:
    """No command of its own: it extends ``trustserve policy`` (``EXTENDS``)."""


def add_declare_arguments(parser: argparse.ArgumentParser) -> None:
    """``--declare-to`` and its options, on ``trustserve policy``."""
    group = parser.add_argument_group("Declaring the release in a KMS's transparency log")
    group.add_argument(
        "--declare-to",
        metavar="KMS_URL",
        help="append each measurement set built here to this KMS's transparency log "
        "(a release-declared entry each)",
    )
    group.add_argument(
        "--declare-digest", metavar="sha256:HEX", help="the image digest declared with them"
    )
    group.add_argument("--declare-note", metavar="TEXT", help="a short note, e.g. the version")
    group.add_argument(
        "--token-file", type=Path, help="KMS management token (default HOME/kms/admin.token)"
    )
    group.add_argument("--ca", type=Path, help="CA file for the KMS (default HOME/tls/ca.pem)")
    group.add_argument("--home", type=Path, help=f"{HOME_HELP}: its KMS token and CA")
    parser.set_defaults(policy_built=declare_built)


def declare_built(args: argparse.Namespace, sets: list[dict[str, Any]]) -> Callable[[], None]:
    """Check the declarations of ``sets`` now; send them when called (after the write)."""
    bodies = declarations(args, sets)
    return lambda: send_declarations(args, bodies)


def declarations(args: argparse.Namespace, sets: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The bodies ``--declare-to`` sends (one per set), checked as the KMS checks them;
    none without ``--declare-to``."""
    if args.declare_to is None:
        extra = [f for f in ("declare_digest", "declare_note") if getattr(args, f) is not None]
        if extra:
            raise ConfigError(f"--{extra[0].replace('_', '-')} needs --declare-to KMS_URL")
        return []
    bodies = []
    for tee_set in sets:
        body = {"digest": args.declare_digest, "measurement": tee_set, "note": args.declare_note}
        body = {k: v for k, v in body.items() if v is not None}
        try:
            parse_declaration(body)
        except BadRequest as exc:
            raise ConfigError(f"cannot declare: {exc}") from None
        bodies.append(body)
    return bodies


def send_declarations(args: argparse.Namespace, bodies: list[dict[str, Any]]) -> None:
    """POST each body to ``--declare-to``, saying each entry's index on stderr."""
    if not bodies:
        return
    home = home_or_default(args.home)
    token_file = args.token_file or layout.kms_admin_token(home)
    try:
        token = token_file.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"--token-file {token_file}: {exc.strerror}") from None
    ca = layout.trusted_ca(home, args.ca)
    from trustserve.keyrelease.client import KmsClient  # only for --declare-to

    with KmsClient(args.declare_to, ca_file=ca, token=token) as client:
        for body in bodies:
            answer = client.declare_release(body)
            print(
                f"declared {body['measurement']['tee']} release in {args.declare_to}'s "
                f"transparency log: entry {answer['index']} (log size {answer['size']})",
                file=sys.stderr,
            )


# the command this module extends (``trustserve.cli`` composes)
EXTENDS = {"policy": add_declare_arguments}
