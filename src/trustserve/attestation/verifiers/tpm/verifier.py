"""TPM 2.0 quotes: the verifier (the provider is ``attestation.providers.tpm``).

Verifier: the AK must be trusted (``verifiers.tpm.ak``: a pinned Name or an AK certificate)
and have the attributes of an attestation key; the signature over the quote; the
quote's qualifying data is the report data; the PCR digest in the quote is the
hash of the reported PCR values. A TPM quote carries no wall-clock time:
freshness comes from the report data (a verifier's nonce).

The evidence's layout: ``attestation.formats.tpm``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cryptography.exceptions import InvalidSignature

from trustserve.attestation.base import Claims, Evidence, unb64
from trustserve.attestation.checks import check_report_data, require
from trustserve.attestation.formats.tpm import PCR_BANKS, pcr_digest_matches, quote_hash
from trustserve.attestation.verifiers.tpm.ak import AkTrust, ak_name
from trustserve.errors import AttestationRefused, BadRequest


class TpmVerifier:
    """Verifies TPM quotes by AKs that ``tpm_ak_names`` pins or ``tpm_ak_ca_certs`` certify."""

    def __init__(self, ak_names: Sequence[str] = (), ak_ca_certs: Sequence[str] = ()) -> None:
        self._trust = AkTrust(ak_names, ak_ca_certs)

    def verify(self, evidence: Evidence, expected_report_data: bytes | None, now: float) -> Claims:
        from tpm2_pytss import TPMS_ATTEST, TPMT_PUBLIC, TPMT_SIGNATURE, TSS2_Exception
        from tpm2_pytss.constants import TPM2_GENERATED, TPM2_ST

        if evidence.kind != "tpm":
            raise BadRequest(f"tpm verifier given {evidence.kind} evidence")
        data = evidence.data
        quote = unb64(data.get("quote"), "quote")
        bank = require(data, "pcr_bank", str, "tpm")
        if bank not in PCR_BANKS:
            raise BadRequest(f"tpm evidence pcr_bank must be one of {', '.join(PCR_BANKS)}")
        values = _parse_pcrs(require(data, "pcrs", dict, "tpm"), PCR_BANKS[bank]().digest_size)
        try:
            ak, _ = TPMT_PUBLIC.unmarshal(unb64(data.get("ak_public"), "ak_public"))
            signature, _ = TPMT_SIGNATURE.unmarshal(unb64(data.get("signature"), "signature"))
            attest, _ = TPMS_ATTEST.unmarshal(quote)
            ak_pem = ak.to_pem().decode()
        except (TSS2_Exception, ValueError, TypeError) as exc:
            raise BadRequest(f"tpm evidence is malformed: {exc}") from None

        ak_claims = self._trust.check(ak, data, now)
        try:
            signature.verify_signature(ak, quote)
        except InvalidSignature:
            raise AttestationRefused("signature", "TPM quote signature is invalid") from None
        except (TSS2_Exception, ValueError, TypeError) as exc:
            raise BadRequest(f"tpm signature is unusable: {exc}") from None
        if attest.magic != TPM2_GENERATED.VALUE or attest.type != TPM2_ST.ATTEST_QUOTE:
            raise AttestationRefused("quote", "the signed structure is not a TPM quote")

        report_data = bytes(attest.extraData)
        if len(report_data) != 64:
            raise AttestationRefused("report_data", "quote qualifying data is not 64 bytes")
        check_report_data(report_data, expected_report_data)
        _check_selection(attest.attested.quote.pcrSelect, bank, set(values))
        if not pcr_digest_matches(quote, quote_hash(signature), values):
            raise AttestationRefused("pcrs", "the PCR values do not match the quoted PCR digest")
        return Claims(
            tee="tpm",
            measurements={f"pcr{i}": v.hex() for i, v in sorted(values.items())},
            tcb_status="NotApplicable",
            advisories=(),
            debug=False,
            report_data=report_data,
            issued_at=None,
            extra={
                "pcr_bank": bank,
                "ak_public_key": ak_pem,
                **ak_claims,
                "firmware_version": int(attest.firmwareVersion),
                "reset_count": int(attest.clockInfo.resetCount),
            },
        )


def _parse_pcrs(raw: dict[str, Any], size: int) -> dict[int, bytes]:
    values: dict[int, bytes] = {}
    for key, digest in raw.items():
        if not key.isdigit() or not isinstance(digest, str):
            raise BadRequest("tpm evidence pcrs must map PCR indices to hex digests")
        try:
            value = bytes.fromhex(digest)
        except ValueError:
            raise BadRequest(f"tpm evidence pcr {key} is not hex") from None
        if len(value) != size:
            raise BadRequest(f"tpm evidence pcr {key} has the wrong size for its bank")
        values[int(key)] = value
    if not values:
        raise BadRequest("tpm evidence has no PCR values")
    return values


def _check_selection(selection: Any, bank: str, indices: set[int]) -> None:
    from tpm2_pytss.constants import TPM2_ALG

    quoted: set[int] = set()
    for i in range(selection.count):
        sel = selection.pcrSelections[i]
        if sel.hash != TPM2_ALG.parse(bank):
            raise AttestationRefused("pcrs", "the quote covers a different PCR bank")
        bitmap = bytes(sel.pcrSelect)[: sel.sizeofSelect]
        quoted |= {8 * n + b for n, byte in enumerate(bitmap) for b in range(8) if byte >> b & 1}
    if quoted != indices:
        raise AttestationRefused("pcrs", "the reported PCRs are not the quoted ones")


def ak_name_of(evidence: Evidence) -> str:
    """The Name (hex) of the AK that signed TPM ``evidence``: what ``tpm_ak_names`` pins."""
    from tpm2_pytss import TPMT_PUBLIC, TSS2_Exception

    try:
        ak, _ = TPMT_PUBLIC.unmarshal(unb64(evidence.data.get("ak_public"), "ak_public"))
    except (TSS2_Exception, ValueError, TypeError) as exc:
        raise BadRequest(f"tpm evidence ak_public is malformed: {exc}") from None
    return ak_name(ak)
