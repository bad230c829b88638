"""The genuine SEV-SNP report of tests/data/attestation/snp, and a self-made AMD-like hierarchy.

The genuine report, its VCEK and AMD's roots are real (see the README there). The
self-made hierarchy (``FakeAmd``: an "ARK", an "ASK", VCEKs with AMD's extensions,
reports signed by those VCEKs) is a test double: nobody here can sign as AMD, so
tests that need a VCEK or a report the genuine fixture does not have (another TCB,
the debug bit, a Turin layout) make their own, and either substitute it for AMD's
pinned roots (saying so) or check that it is refused because it is not AMD's.
"""

from __future__ import annotations

import base64
import datetime
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from trustserve.attestation import Evidence, Policy

SNP = Path(__file__).parent.parent / "data" / "attestation" / "snp"
# Values from tests/data/attestation/snp/README.md.
MEASUREMENT = (
    "7a1e5c266c0108dbc9bb94fa926951320940915d0aafb42464bd88b579ea158d"
    "3e1a0dc39b2c60bd95b9c480cd81841f"
)
REPORT_DATA = bytes.fromhex(
    "d447b55d197491bfe15cf298f9de9986b7a7c4be2468b4f6e2d53b71d7c64581"
    "0b0f2cdfca0040433be063fc1a8293f0f3f8dae7b79fecb3d1cd82bd6a93ebfd"
)
TCB = {"bootloader": 3, "tee": 0, "snp": 8, "microcode": 115}
# The VCEK is valid from 2023-04-03 to 2030-04-03.
NOW = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC).timestamp()
PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)

# Offsets in the report (AMD SEV-SNP ABI, ATTESTATION_REPORT).
OFFSETS = {
    "version": 0x000,
    "guest_svn": 0x004,
    "policy": 0x008,
    "vmpl": 0x030,
    "flags": 0x048,
    "report_data": 0x050,
    "measurement": 0x090,
    "host_data": 0x0C0,
    "id_key_digest": 0x0E0,
    "author_key_digest": 0x110,
    "reported_tcb": 0x180,
    "cpuid": 0x188,
    "chip_id": 0x1A0,
    "signature": 0x2A0,
}


def report_bytes() -> bytes:
    return (SNP / "report_milan.bin").read_bytes()


def vcek_der() -> bytes:
    return (SNP / "vcek_milan.der").read_bytes()


def chip_id() -> bytes:
    return report_bytes()[0x1A0:0x1E0]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def snp_evidence(report: bytes | None = None, vcek: bytes | None = None) -> Evidence:
    """Evidence for ``report`` (default: the genuine one) with ``vcek`` (default: genuine)."""
    data = {"report": b64(report_bytes() if report is None else report)}
    data["vcek"] = b64(vcek_der() if vcek is None else vcek)
    return Evidence("sev-snp", data)


def snp_set(**keys: object) -> str:
    """A YAML flow mapping for an SNP measurement set: the genuine measurement, plus ``keys``."""
    items = {"tee": "sev-snp", "measurement": f'"{MEASUREMENT}"', **keys}
    return "{" + ", ".join(f"{k}: {v}" for k, v in items.items()) + "}"


def snp_policy(extra: str = "", **keys: object) -> Policy:
    return Policy.from_yaml(f"{extra}measurements: [{snp_set(**keys)}]\n")


def patch(report: bytes, field: str, value: bytes, at: int = 0) -> bytes:
    offset = OFFSETS[field] + at
    return report[:offset] + value + report[offset + len(value) :]


def flip(report: bytes, offset: int) -> bytes:
    return report[:offset] + bytes([report[offset] ^ 0x01]) + report[offset + 1 :]


def sign_report(report: bytes, key: ec.EllipticCurvePrivateKey) -> bytes:
    """``report`` with its signature replaced by ``key``'s over bytes 0..0x2A0."""
    body = report[:0x2A0]
    r, s = decode_dss_signature(key.sign(body, ec.ECDSA(hashes.SHA384())))
    signature = r.to_bytes(72, "little") + s.to_bytes(72, "little")
    return body + signature + report[0x2A0 + len(signature) :]


def tcb_bytes(
    product: str, bootloader: int, tee: int, snp: int, microcode: int, fmc: int = 0
) -> bytes:
    if product == "turin":
        return bytes([fmc, bootloader, tee, snp, 0, 0, 0, microcode])
    return bytes([bootloader, tee, 0, 0, 0, 0, snp, microcode])


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Advanced Micro Devices"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _der_int(number: int) -> bytes:
    content = number.to_bytes(1, "big") if number < 0x80 else b"\0" + number.to_bytes(1, "big")
    return b"\x02" + bytes([len(content)]) + content


@dataclass
class FakeAmd:
    """A self-made ARK → ASK hierarchy with AMD's algorithms (RSA-PSS SHA-384, salt 48)."""

    ark_key: rsa.RSAPrivateKey
    ark: x509.Certificate
    ask_key: rsa.RSAPrivateKey
    ask: x509.Certificate

    @classmethod
    def make(cls, product: str = "Milan") -> FakeAmd:
        ark_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        ask_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        ark = _cert(_name(f"ARK-{product}"), ark_key.public_key(), _name(f"ARK-{product}"), ark_key)
        ask = _cert(_name(f"SEV-{product}"), ask_key.public_key(), ark.subject, ark_key)
        return cls(ark_key, ark, ask_key, ask)

    def vcek(
        self,
        hwid: bytes,
        tcb: dict[str, int],
        key: ec.EllipticCurvePrivateKey | None = None,
    ) -> tuple[bytes, ec.EllipticCurvePrivateKey]:
        """A "VCEK" (DER) for ``hwid`` at ``tcb``, signed by this ASK, and its private key."""
        key = key or ec.generate_private_key(ec.SECP384R1())
        oids = {"bootloader": 1, "tee": 2, "snp": 3, "microcode": 8, "fmc": 9}
        extensions = [
            (f"1.3.6.1.4.1.3704.1.3.{oids[name]}", _der_int(number)) for name, number in tcb.items()
        ]
        extensions.append(("1.3.6.1.4.1.3704.1.4", hwid))
        cert = _cert(
            _name("SEV-VCEK"), key.public_key(), self.ask.subject, self.ask_key, extensions
        )
        return cert.public_bytes(serialization.Encoding.DER), key


def _cert(
    subject: x509.Name,
    public_key: CertificatePublicKeyTypes,
    issuer: x509.Name,
    signer: rsa.RSAPrivateKey,
    extensions: Sequence[tuple[str, bytes]] = (),
) -> x509.Certificate:
    start = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=365 * 20))
    )
    for oid, value in extensions:
        builder = builder.add_extension(
            x509.UnrecognizedExtension(x509.ObjectIdentifier(oid), value), critical=False
        )
    return builder.sign(signer, hashes.SHA384(), rsa_padding=PSS)


def u32(number: int) -> bytes:
    return struct.pack("<I", number)
