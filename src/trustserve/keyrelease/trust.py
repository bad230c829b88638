"""Which KMS a requester (worker, frontend) trusts, decided by its own configuration.

Either a pinned identity (``--kms-identity``: the KMS's Ed25519 public key, as
base64 or a file holding base64 or PEM), or an attestation bundle fetched from
the KMS and verified under the requester's own policy (``--kms-policy``), whose
evidence binds the identity key. With both, the bundle must name the pinned key.
Nothing on the host (its TLS CA file included) decides whom a requester trusts.
"""

from __future__ import annotations

import base64
import binascii
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from trustserve.attestation import Policy, VerifierSources
from trustserve.errors import BadRequest, ConfigError, Forbidden

log = logging.getLogger(__name__)
IDENTITY_SIZE = 32
NO_TRUST = (
    "no trusted KMS identity: pin it with --kms-identity (public key file or base64) "
    "or verify the KMS attestation bundle with --kms-policy FILE"
)


def parse_identity(value: str) -> bytes:
    """A raw Ed25519 public key from base64 text, or from a file of base64 or PEM."""
    text = value.strip()
    path = Path(text)
    if len(text) < 4096 and path.is_file():
        try:
            text = path.read_text().strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"KMS identity file {path} is unreadable: {exc}") from None
    if text.startswith("-----BEGIN"):
        try:
            key = load_pem_public_key(text.encode())
        except ValueError:
            raise ConfigError("KMS identity: not a PEM public key") from None
        if not isinstance(key, Ed25519PublicKey):
            raise ConfigError("KMS identity must be an Ed25519 public key")
        return key.public_bytes_raw()
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError("KMS identity is neither a readable file nor base64") from None
    if len(raw) != IDENTITY_SIZE:
        raise ConfigError(f"KMS identity must be {IDENTITY_SIZE} raw Ed25519 bytes")
    return raw


@dataclass(frozen=True)
class KmsTrust:
    """The requester's own idea of the KMS: a pinned identity and/or a bundle policy."""

    identity: bytes | None = None
    policy: Policy | None = None
    sources: VerifierSources | None = None  # DCAP collateral for a TDX/SGX KMS's bundle

    @classmethod
    def from_options(
        cls,
        identity: str | None,
        policy: str | Path | None,
        sources: VerifierSources | None = None,
    ) -> KmsTrust | None:
        """From ``--kms-identity`` / ``--kms-policy`` (and the verifier-side ``sources`` for a
        hardware KMS's evidence); None when neither is given."""
        if not identity and not policy:
            return None
        loaded = Policy.load(policy) if policy else None
        if loaded is not None and loaded.allow_simulated and not identity:
            log.warning(
                "INSECURE, DEVELOPMENT ONLY: the KMS trust policy %s accepts SIMULATED "
                "evidence, which proves nothing: any holder of a KMS TLS certificate can "
                "pose as the KMS",
                policy,
            )
        return cls(parse_identity(identity) if identity else None, loaded, sources)

    def resolve(self, fetch_bundle: Callable[[], Any]) -> bytes:
        """The identity key to check release answers with (fetching the bundle if needed)."""
        if self.policy is None:
            assert self.identity is not None
            return self.identity
        from trustserve.keyrelease.bundle import verify_bundle

        bundle = fetch_bundle()
        try:
            verify_bundle(bundle, self.policy, time.time(), self.sources)
            identity = base64.b64decode(bundle["identity_public_key"], validate=True)
        except BadRequest as exc:
            raise Forbidden(f"KMS attestation bundle refused: {exc}") from None
        except (KeyError, TypeError, ValueError):
            raise Forbidden("KMS attestation bundle refused: identity malformed") from None
        if self.identity is not None and identity != self.identity:
            raise Forbidden("KMS attestation bundle names another identity than the pinned one")
        return identity
