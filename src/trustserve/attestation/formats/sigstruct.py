"""An SGX SIGSTRUCT (Gramine's ``.sig`` file): the enclave's identity as its signer fixed it.

SIGSTRUCT is a fixed 1808-byte structure (Intel SDM vol. 3D, 37.14): the enclave
measurement (MRENCLAVE, ``ENCLAVEHASH``), the attributes it may run with, the
product id and security version, and an RSA-3072 signature (exponent 3,
PKCS#1 v1.5 over SHA-256 of the header and body) whose modulus hashes to MRSIGNER.
Integers are little-endian, and so are the modulus and the signature.

``read_sigstruct`` checks the fixed headers, the exponent and the signature (so a
file with a flipped byte is refused, not turned into a policy) and returns what a
release policy pins.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from trustserve.errors import ConfigError

SIZE = 1808
HEADER = bytes.fromhex("06000000e10000000000010000000000")
HEADER2 = bytes.fromhex("01010000600000006000000001000000")
KEY_BYTES = 384
# (offset, length) of the fields read here
_MODULUS = (128, KEY_BYTES)
_EXPONENT = (512, 4)
_SIGNATURE = (516, KEY_BYTES)
_ATTRIBUTES = (928, 16)
_ENCLAVE_HASH = (960, 32)
_ISV_PROD_ID = 1024
_ISV_SVN = 1026
# the signed bytes: the header part and the body part
_SIGNED = ((0, 128), (900, 128))
DEBUG_FLAG = 0x02  # ATTRIBUTES.DEBUG, bit 1 of the first byte


@dataclass(frozen=True)
class Sigstruct:
    mrenclave: str
    mrsigner: str
    isv_prod_id: int
    isv_svn: int
    debug: bool


def _field(data: bytes, where: tuple[int, int]) -> bytes:
    offset, length = where
    return data[offset : offset + length]


def read_sigstruct(data: bytes, what: str = "sigstruct") -> Sigstruct:
    """Parse and check a SIGSTRUCT; ConfigError naming what is wrong with it."""
    if len(data) != SIZE:
        raise ConfigError(f"{what} is {len(data)} bytes; a SIGSTRUCT is {SIZE}")
    if data[:16] != HEADER or data[24:40] != HEADER2:
        raise ConfigError(f"{what} does not start with the SIGSTRUCT headers")
    (exponent,) = struct.unpack("<I", _field(data, _EXPONENT))
    if exponent != 3:
        raise ConfigError(f"{what} has RSA exponent {exponent}; SGX requires 3")
    modulus = _field(data, _MODULUS)
    public = rsa.RSAPublicNumbers(3, int.from_bytes(modulus, "little")).public_key()
    signature = _field(data, _SIGNATURE)[::-1]  # stored little-endian
    signed = b"".join(_field(data, part) for part in _SIGNED)
    try:
        public.verify(signature, signed, padding.PKCS1v15(), hashes.SHA256())
    except (InvalidSignature, ValueError):
        raise ConfigError(f"{what}: the signature does not verify (altered or corrupt)") from None
    (prod_id,) = struct.unpack_from("<H", data, _ISV_PROD_ID)
    (svn,) = struct.unpack_from("<H", data, _ISV_SVN)
    return Sigstruct(
        mrenclave=_field(data, _ENCLAVE_HASH).hex(),
        mrsigner=hashlib.sha256(modulus).hexdigest(),
        isv_prod_id=prod_id,
        isv_svn=svn,
        debug=bool(_field(data, _ATTRIBUTES)[0] & DEBUG_FLAG),
    )
