"""The root key split k-of-n among owners (SLIP-39), each share sealed to one owner.

Splitting and combining are SLIP-39 (``shamir-mnemonic``, Trezor's reference
implementation): one group, ``threshold`` of ``count`` member shares, each a
mnemonic of words an owner can also write down. Fewer than ``threshold`` shares
say nothing about the key (Shamir over GF(256)); a share that was mistyped or
altered fails the mnemonic's RS1024 checksum, and a set that does not belong
together fails SLIP-39's digest share when combined.

Nothing here trusts a share's holder: a rebuilt key is compared (in constant
time) with the ``check_value`` made at the split, an HMAC-SHA256 of a fixed
label under the key, which says whether a key is the one but not what it is.

HPKE (``trustserve.crypto.hpke``) carries a share twice, each step with its own
``info`` label: ``OWNER_INFO`` seals it to an owner's key in the recovery file
(``aad``: the KMS identity, the check value and the share's index), and
``TRANSFER_INFO`` re-seals it from an owner to a recovering KMS's attested
recovery key (``aad``: the identity and that recovery key).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

import shamir_mnemonic
from shamir_mnemonic.share import Share

from trustserve.crypto import hpke
from trustserve.errors import BadRequest, ConfigError

OWNER_INFO = b"trustserve-kms-recovery-share-to-owner-v1"
TRANSFER_INFO = b"trustserve-kms-recovery-share-to-kms-v1"
_CHECK_LABEL = b"trustserve-kms-root-key-check-v1"
_AAD_DOMAIN = b"trustserve-kms-recovery-v1\0"
MAX_OWNERS = 16  # SLIP-39's member count limit


def check_value(root_key: bytes) -> bytes:
    """A value that says whether a key is this root key, not what it is."""
    return hmac.new(root_key, _CHECK_LABEL, hashlib.sha256).digest()


def matches(root_key: bytes, check: bytes) -> bool:
    return hmac.compare_digest(check_value(root_key), check)


def split(root_key: bytes, threshold: int, count: int) -> list[str]:
    """``count`` SLIP-39 mnemonics, any ``threshold`` of which rebuild ``root_key``."""
    if not 2 <= threshold <= count <= MAX_OWNERS:
        raise ConfigError(
            f"owner recovery needs 2 <= threshold <= owners <= {MAX_OWNERS}; got a "
            f"threshold of {threshold} for {count} owners (a threshold of 1 would hand "
            "every owner the whole root key)"
        )
    groups = shamir_mnemonic.generate_mnemonics(1, [(threshold, count)], root_key)
    return list(groups[0])


@dataclass(frozen=True)
class ShareInfo:
    """What a mnemonic says about itself: its split (``identifier``), index and threshold."""

    identifier: int
    index: int
    threshold: int


def describe(mnemonic: str) -> ShareInfo:
    """The share's public parameters; BadRequest if it is not a valid SLIP-39 share."""
    try:
        share = Share.from_mnemonic(mnemonic)
    except (shamir_mnemonic.MnemonicError, ValueError, KeyError, IndexError):
        raise BadRequest("the share is not a valid SLIP-39 mnemonic (altered or damaged)") from None
    return ShareInfo(share.identifier, share.index, share.member_threshold)


def combine(mnemonics: list[str], check: bytes) -> bytes:
    """The root key from ``threshold`` shares, verified against ``check``; BadRequest if not."""
    try:
        root_key: bytes = shamir_mnemonic.combine_mnemonics(mnemonics)
    except (shamir_mnemonic.MnemonicError, ValueError) as exc:
        raise BadRequest(f"the shares do not combine: {exc}") from None
    if not matches(root_key, check):
        raise BadRequest("the shares combine to another key than the one split (check value)")
    return root_key


def owner_aad(identity: bytes, check: bytes, index: int) -> bytes:
    return _AAD_DOMAIN + b"owner\0" + identity + check + index.to_bytes(2, "big")


def transfer_aad(identity: bytes, recovery_public_key: bytes) -> bytes:
    return _AAD_DOMAIN + b"transfer\0" + identity + recovery_public_key


def seal_to_owner(owner_public_key: bytes, mnemonic: str, identity: bytes, check: bytes) -> bytes:
    index = describe(mnemonic).index
    aad = owner_aad(identity, check, index)
    return hpke.seal(owner_public_key, mnemonic.encode(), aad=aad, info=OWNER_INFO)


def open_as_owner(
    owner_private_key: bytes, sealed: bytes, identity: bytes, check: bytes, index: int
) -> str:
    """The owner's mnemonic; CannotOpenSealed if not this owner's share for this KMS and index."""
    aad = owner_aad(identity, check, index)
    return hpke.open(owner_private_key, sealed, aad=aad, info=OWNER_INFO).decode()


def seal_to_kms(recovery_public_key: bytes, mnemonic: str, identity: bytes) -> bytes:
    aad = transfer_aad(identity, recovery_public_key)
    return hpke.seal(recovery_public_key, mnemonic.encode(), aad=aad, info=TRANSFER_INFO)


def open_at_kms(recovery_private_key: bytes, sealed: bytes, identity: bytes) -> str:
    aad = transfer_aad(identity, hpke.public_key_of(recovery_private_key))
    plain = hpke.open(recovery_private_key, sealed, aad=aad, info=TRANSFER_INFO)
    try:
        return plain.decode("ascii")
    except UnicodeDecodeError:
        raise BadRequest("the share is not a SLIP-39 mnemonic") from None
