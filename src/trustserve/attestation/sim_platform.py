"""The simulated platform: a software stand-in for TEE hardware, for development and CI.

Nothing here is hardware-protected. The platform has an Ed25519 *platform key*
made once per installation (``<home>/attestation/sim_platform_key``, mode 0600);
the ``sim`` provider (``providers.sim``) signs with it, the ``sim`` verifier
(``verifiers.sim``) checks it, and a development policy pins its public half.

``sim_measurement`` = SHA-256 over ``"trustserve-sim\\0" || trustserve version ||
"\\0" || platform public key``: stable for one installation and one release, so a
policy that lists it pins both.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from trustserve import __version__, files
from trustserve.errors import BadRequest

KEY_FILE = Path("attestation") / "sim_platform_key"
_DOMAIN = b"trustserve-sim\0"


def load_or_create_key(home: Path) -> Ed25519PrivateKey:
    path = home / KEY_FILE
    if path.exists():
        raw = path.read_bytes()
        if len(raw) == 32:
            return Ed25519PrivateKey.from_private_bytes(raw)
        raise BadRequest(f"sim platform key {path} is corrupt (expected 32 bytes)")
    key = Ed25519PrivateKey.generate()
    files.write_secret(path, key.private_bytes_raw())
    return key


def raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def platform_public_key(home: Path) -> bytes:
    """The raw (32-byte) public platform key of the installation at ``home``."""
    return raw_public(load_or_create_key(home).public_key())


def sim_measurement(public_key: bytes, version: str = __version__) -> str:
    return hashlib.sha256(_DOMAIN + version.encode() + b"\0" + public_key).hexdigest()
