"""TPM 2.0 quote layout both sides use: PCR banks, the quote's hash, its PCR digest.

Evidence data: ``ak_public`` (b64 TPMT_PUBLIC), ``quote`` (b64 TPMS_ATTEST),
``signature`` (b64 TPMT_SIGNATURE), ``pcr_bank``, ``pcrs`` ({index: hex}) and,
optionally, ``ak_cert`` (b64 DER) and ``ak_cert_intermediates`` (list of b64 DER).
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from trustserve.errors import AttestationRefused

PCR_BANKS = {"sha1": hashlib.sha1, "sha256": hashlib.sha256, "sha384": hashlib.sha384}
# TPM2_Quote hashes the PCR values with the signing scheme's hash (TPM2_ALG ids).
QUOTE_HASHES = {0x000B: hashlib.sha256, 0x000C: hashlib.sha384, 0x000D: hashlib.sha512}


def quote_hash(signature: Any) -> Any:
    """The hash the quote's PCR digest uses: that of the signature's scheme."""
    alg = int(signature.signature.any.hashAlg)
    if alg not in QUOTE_HASHES:
        raise AttestationRefused("signature", f"the quote is signed with hash {alg:#06x}")
    return QUOTE_HASHES[alg]


def pcr_digest_matches(quote: bytes, digest: Any, values: dict[int, bytes]) -> bool:
    from tpm2_pytss import TPMS_ATTEST

    attest, _ = TPMS_ATTEST.unmarshal(quote)
    expected = digest(b"".join(values[i] for i in sorted(values))).digest()
    return hmac.compare_digest(bytes(attest.attested.quote.pcrDigest), expected)
