"""What cloud vTPMs keep in NV indices: AK certificates and AK templates.

Azure keeps the AK certificate in 0x01C101D0 (a 4096-byte index, the DER
certificate zero-padded); GCP keeps AK certificates in 0x01C10000 (RSA) and
0x01C10002 (ECC) and the templates of those AKs (TPMT_PUBLIC) in 0x01C10001 and
0x01C10003. Only the provider reads them; nothing here is trusted by a verifier.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from trustserve.attestation.base import b64
from trustserve.errors import ConfigError

_NV_READ_MIN = 512  # if the TPM does not say how much one TPM2_NV_Read may return


def read_nv(esapi: Any, index: int) -> bytes:
    """The whole data of NV ``index``, read with owner authorization (as Azure's
    AK certificate is) or the index's own (empty) authorization."""
    from tpm2_pytss import TSS2_Exception
    from tpm2_pytss.constants import ESYS_TR, TPM2_CAP, TPM2_PT_NV, TPMA_NV

    try:
        handle = esapi.tr_from_tpmpublic(index)
        public, _ = esapi.nv_read_public(handle)
    except TSS2_Exception as exc:
        raise ConfigError(f"cannot read TPM NV index {index:#x}: {exc}") from None
    attrs = public.nvPublic.attributes
    if not attrs & TPMA_NV.WRITTEN:
        raise ConfigError(f"TPM NV index {index:#x} has never been written")
    if attrs & TPMA_NV.OWNERREAD:
        auth = ESYS_TR.OWNER
    elif attrs & TPMA_NV.AUTHREAD:
        auth = handle
    else:
        raise ConfigError(f"TPM NV index {index:#x} is readable neither by owner nor by auth")
    _, caps = esapi.get_capability(TPM2_CAP.TPM_PROPERTIES, TPM2_PT_NV.BUFFER_MAX)
    props = caps.data.tpmProperties
    step = int(props.tpmProperty[0].value) if props.count else _NV_READ_MIN
    size = int(public.nvPublic.dataSize)
    chunks = [
        bytes(esapi.nv_read(handle, min(step, size - offset), offset, auth_handle=auth))
        for offset in range(0, size, step)
    ]
    return b"".join(chunks)


def ak_cert_der(data: bytes) -> bytes:
    """The DER certificate at the start of ``data`` (NV indices are often zero-padded)."""
    length = None
    if len(data) >= 2 and data[0] == 0x30:
        if data[1] < 0x80:
            length = 2 + data[1]
        elif 1 <= data[1] & 0x7F <= 4 and len(data) >= 2 + (data[1] & 0x7F):
            extra = data[1] & 0x7F
            length = 2 + extra + int.from_bytes(data[2 : 2 + extra], "big")
    if length is None or length > len(data):
        raise ConfigError("the TPM NV index does not hold a DER certificate")
    try:
        x509.load_der_x509_certificate(data[:length])
    except ValueError:
        raise ConfigError("the TPM NV index does not hold a valid X.509 certificate") from None
    return data[:length]


def nv_template(data: bytes) -> Any:
    """The TPM2B_PUBLIC to create an AK from, out of an NV index's TPMT_PUBLIC."""
    from tpm2_pytss import TPM2B_PUBLIC, TPMT_PUBLIC, TSS2_Exception

    try:
        area, _ = TPMT_PUBLIC.unmarshal(data)
    except (TSS2_Exception, ValueError) as exc:
        raise ConfigError(f"the AK template NV index is not a TPMT_PUBLIC: {exc}") from None
    return TPM2B_PUBLIC(area)


def load_intermediates(path: Path | str | None) -> list[str]:
    """The certificates of a PEM file, as the evidence carries them (base64 DER)."""
    if path is None:
        return []
    try:
        certs = x509.load_pem_x509_certificates(Path(path).read_bytes())
    except OSError as exc:
        raise ConfigError(f"cannot read ak_cert_intermediates {path}: {exc.strerror}") from None
    except ValueError:
        raise ConfigError(f"ak_cert_intermediates {path} holds no PEM certificate") from None
    return [b64(c.public_bytes(Encoding.DER)) for c in certs]
