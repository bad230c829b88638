"""AMD's SEV-SNP key hierarchy: ARK (root) → ASK (SEV signing key) → VCEK (one chip at one TCB).

The ARK and ASK of each product line (Milan, Genoa, Turin) are pinned in the package
(``attestation/amd/*.pem``; see the README there for where they come from). Every
signature in the chain is RSA-PSS with SHA-384, MGF1-SHA-384 and a 48-byte salt;
those parameters are fixed here, never read from the certificate being checked.

A VCEK names what it vouches for in extensions (AMD document 57230): the TCB it was
issued for (``1.3.6.1.4.1.3704.1.3.x``: 1 bootloader, 2 TEE, 3 SNP, 8 microcode,
9 FMC on Turin; each a DER INTEGER) and the chip (``1.3.6.1.4.1.3704.1.4``, hwID:
the raw CHIP_ID bytes, 64 on Milan/Genoa and 8 on Turin).
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.utils import CryptographyDeprecationWarning

from trustserve.attestation.formats.snp_report import PRODUCTS
from trustserve.errors import AttestationRefused, BadRequest, ConfigError

PSS_SHA384 = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)
TCB_OIDS = {
    "bootloader": "1.3.6.1.4.1.3704.1.3.1",
    "tee": "1.3.6.1.4.1.3704.1.3.2",
    "snp": "1.3.6.1.4.1.3704.1.3.3",
    "microcode": "1.3.6.1.4.1.3704.1.3.8",
    "fmc": "1.3.6.1.4.1.3704.1.3.9",
}
HWID_OID = "1.3.6.1.4.1.3704.1.4"
PRODUCT_NAME_OID = "1.3.6.1.4.1.3704.1.2"


@dataclass(frozen=True)
class AmdRoots:
    product: str
    ark: x509.Certificate
    ask: x509.Certificate


def signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """Whether ``issuer`` names and RSA-PSS-SHA-384-signs ``cert``."""
    key = issuer.public_key()
    if cert.issuer != issuer.subject or not isinstance(key, rsa.RSAPublicKey):
        return False
    try:
        key.verify(cert.signature, cert.tbs_certificate_bytes, PSS_SHA384, hashes.SHA384())
    except InvalidSignature:
        return False
    return True


@functools.cache
def pinned_roots(product: str) -> AmdRoots:
    """The pinned ARK and ASK of ``product``, after checking ARK → ARK and ARK → ASK."""
    if product not in PRODUCTS:
        raise ConfigError(f"unknown AMD product {product!r}; one of {', '.join(PRODUCTS)}")
    folder = resources.files("trustserve.attestation.verifiers.snp") / "amd"
    ark = x509.load_pem_x509_certificate((folder / f"ark_{product}.pem").read_bytes())
    ask = x509.load_pem_x509_certificate((folder / f"ask_{product}.pem").read_bytes())
    if not signed_by(ark, ark) or not signed_by(ask, ark):
        raise ConfigError(f"the pinned AMD {product} certificates do not verify")
    return AmdRoots(product, ark, ask)


def load_vcek(der: bytes) -> x509.Certificate:
    """Parse a VCEK (DER); BadRequest if it is not a certificate with a P-384 key."""
    # AMD issues VCEKs with serial number 0, which RFC 5280 forbids and cryptography
    # warns about; that one warning is expected of every genuine VCEK. (The filter is
    # process-wide while it lasts; it only hides this one message.)
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=".*serial number.*", category=CryptographyDeprecationWarning
        )
        try:
            cert = x509.load_der_x509_certificate(der)
        except ValueError:
            raise BadRequest("the VCEK is not a DER X.509 certificate") from None
    key = cert.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp384r1":
        raise AttestationRefused("vcek", "the VCEK's key is not ECDSA P-384")
    return cert


def chain_to_amd(vcek: x509.Certificate, products: tuple[str, ...], now: float) -> str:
    """The product whose pinned ASK signed ``vcek``; refuses (claim ``chain``) otherwise.

    Every certificate of the chain must be valid at ``now``.
    """
    for product in products:
        roots = pinned_roots(product)
        if signed_by(vcek, roots.ask):
            for cert, what in ((roots.ark, "ARK"), (roots.ask, "ASK"), (vcek, "VCEK")):
                _check_validity(cert, now, f"{product} {what}")
            return product
    raise AttestationRefused(
        "chain", f"the VCEK is not signed by AMD's {'/'.join(products)} signing key"
    )


def _check_validity(cert: x509.Certificate, now: float, what: str) -> None:
    moment = datetime.fromtimestamp(now, tz=UTC)
    if not cert.not_valid_before_utc <= moment <= cert.not_valid_after_utc:
        raise AttestationRefused(
            "chain",
            f"the {what} certificate is valid from {cert.not_valid_before_utc:%Y-%m-%d} "
            f"to {cert.not_valid_after_utc:%Y-%m-%d}",
        )


@dataclass(frozen=True)
class VcekFacts:
    """What a VCEK's extensions say: the TCB it was issued for and the chip."""

    tcb: dict[str, int]
    hwid: bytes
    product_name: str


def vcek_facts(vcek: x509.Certificate) -> VcekFacts:
    """The VCEK's TCB and hwID extensions; refuses (claim ``vcek``) if they are unreadable."""
    raw = {ext.oid.dotted_string: ext.value for ext in vcek.extensions}

    def value(oid: str) -> bytes | None:
        ext = raw.get(oid)
        return ext.value if isinstance(ext, x509.UnrecognizedExtension) else None

    tcb: dict[str, int] = {}
    for name, oid in TCB_OIDS.items():
        der = value(oid)
        if der is not None:
            tcb[name] = _der_uint8(der, name)
        elif name != "fmc":
            raise AttestationRefused("vcek", f"the VCEK has no {name} TCB extension")
    hwid = value(HWID_OID)
    if not hwid:
        raise AttestationRefused("vcek", "the VCEK has no hwID extension")
    name_der = value(PRODUCT_NAME_OID) or b""
    # an IA5String (tag 0x16) of short length
    product_name = name_der[2:].decode("ascii", "replace") if name_der[:1] == b"\x16" else ""
    return VcekFacts(tcb, hwid, product_name)


def _der_uint8(der: bytes, name: str) -> int:
    """A DER INTEGER holding a security version number (0..255)."""
    if len(der) < 3 or der[0] != 0x02 or der[1] != len(der) - 2 or der[2] & 0x80:
        raise AttestationRefused("vcek", f"the VCEK's {name} extension is not an INTEGER")
    number = int.from_bytes(der[2:], "big")
    if number > 0xFF:
        raise AttestationRefused("vcek", f"the VCEK's {name} extension is out of range")
    return number
