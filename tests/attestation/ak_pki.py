"""The cloud's side of AK certificates, played in tests: CAs, AK certificates, NV indices.

Every CA and key is generated afresh for each test; nothing here is a fixed key.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from tpm2_pytss import ESAPI, TPM2B_NV_PUBLIC, TPMS_NV_PUBLIC, TPMT_PUBLIC
from tpm2_pytss.constants import ESYS_TR, TPM2_ALG, TPMA_NV

from trustserve.attestation import make_provider
from trustserve.attestation.base import unb64

AZURE_AK_CERT_NV = 0x01C101D0
HOUR = dt.timedelta(hours=1)
DAY = dt.timedelta(days=1)
# A TPM as the TCG credential profile names it (tcg-at-tpmManufacturer, -Model, -Version).
TPM_DEVICE = x509.Name(
    [
        x509.NameAttribute(x509.ObjectIdentifier("2.23.133.2.1"), "id:4D534654"),
        x509.NameAttribute(x509.ObjectIdentifier("2.23.133.2.2"), "swtpm"),
        x509.NameAttribute(x509.ObjectIdentifier("2.23.133.2.3"), "id:00020000"),
    ]
)


@dataclass
class Ca:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @property
    def pem(self) -> str:
        return self.cert.public_bytes(serialization.Encoding.PEM).decode()


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_ca(common_name: str, parent: Ca | None = None, *, is_ca: bool = True) -> Ca:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    issuer = parent.cert.subject if parent else _name(common_name)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - 30 * DAY)
        .not_valid_after(now + 30 * DAY)
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
    )
    if is_ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    signer = parent.key if parent else key
    return Ca(key, builder.sign(signer, hashes.SHA256()))


def issue_ak_cert(
    ca: Ca, public_key: Any, *, not_before: dt.datetime | None = None, days: float = 365
) -> x509.Certificate:
    """What the cloud does: certify the VM's AK (TCG-style: digitalSignature, no CA)."""
    start = not_before or dt.datetime.now(dt.UTC) - HOUR
    return (
        x509.CertificateBuilder()
        .subject_name(_name("vTPM AK of test-vm"))
        .issuer_name(ca.cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca.key, hashes.SHA256())
    )


def write_nv(
    tcti: str, index: int, data: bytes, *, size: int | None = None, owner: bool = True
) -> None:
    """Define an NV index (``size`` bytes, default len(data)) and write ``data`` into it.

    Owner-readable and -writable by default (as Azure's); else with its own empty auth.
    """
    if owner:
        attributes = TPMA_NV.OWNERWRITE | TPMA_NV.OWNERREAD
    else:
        attributes = TPMA_NV.AUTHWRITE | TPMA_NV.AUTHREAD
    esapi = ESAPI(tcti)
    try:
        public = TPM2B_NV_PUBLIC(
            nvPublic=TPMS_NV_PUBLIC(
                nvIndex=index,
                nameAlg=TPM2_ALG.SHA256,
                attributes=attributes | TPMA_NV.NO_DA,
                dataSize=size or len(data),
            )
        )
        handle = esapi.nv_define_space(None, public, ESYS_TR.OWNER)
        auth = ESYS_TR.OWNER if owner else handle
        for offset in range(0, len(data), 512):
            esapi.nv_write(handle, data[offset : offset + 512], offset, auth_handle=auth)
    finally:
        esapi.close()


def ak_public_key(tcti: str, home: Path) -> Any:
    """The public key of the swtpm's default AK (from one quote)."""
    evidence = make_provider("tpm", home, tcti=tcti, pcrs=[0]).make(os.urandom(64))
    ak, _ = TPMT_PUBLIC.unmarshal(unb64(evidence.data["ak_public"], "ak_public"))
    return serialization.load_pem_public_key(ak.to_pem())


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)
