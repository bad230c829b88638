"""TPM 2.0 quotes (the way confidential VMs on Azure and GCP expose attestation).

Provider: an attestation key (AK), then TPM2_Quote over the configured PCRs with
the 64 bytes of report data as qualifying data, then the PCR values themselves.
Which AK:

- by default a primary ECC P-256 restricted signing key in the endorsement
  hierarchy: the TPM derives it from its endorsement seed, so it is the same key
  every time and needs no storage;
- ``ak_handle``: the persistent key there (Azure: 0x81000003);
- ``ak_template_nv``: a primary key made from the TPMT_PUBLIC template stored in
  that NV index (GCP: 0x01C10001 RSA, 0x01C10003 ECC).

With ``ak_cert_nv`` (Azure: 0x01C101D0; GCP: 0x01C10000 / 0x01C10002) the AK
certificate stored there goes into the evidence, with the PEM intermediates of
the file ``ak_cert_intermediates`` if given.

Evidence data: ``ak_public`` (b64 TPMT_PUBLIC), ``quote`` (b64 TPMS_ATTEST),
``signature`` (b64 TPMT_SIGNATURE), ``pcr_bank``, ``pcrs`` ({index: hex}) and,
optionally, ``ak_cert`` (b64 DER) and ``ak_cert_intermediates`` (list of b64 DER).

Verifier: the AK must be trusted (``tpm_ak``: a pinned Name or an AK certificate)
and have the attributes of an attestation key; the signature over the quote; the
quote's qualifying data is the report data; the PCR digest in the quote is the
hash of the reported PCR values. A TPM quote carries no wall-clock time:
freshness comes from the report data (a verifier's nonce).
"""

from __future__ import annotations

import hashlib
import hmac
import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature

from trustserve.attestation._common import check_report_data, normalize_report_data, require
from trustserve.attestation.base import Claims, Evidence, b64, unb64
from trustserve.attestation.tpm_ak import AkTrust, ak_name
from trustserve.attestation.tpm_nv import ak_cert_der, load_intermediates, nv_template, read_nv
from trustserve.errors import AttestationRefused, BadRequest, ConfigError

DEFAULT_TCTI = "device:/dev/tpmrm0"
DEFAULT_PCRS = (0, 1, 2, 3, 4, 5, 6, 7)
_BANKS = {"sha1": hashlib.sha1, "sha256": hashlib.sha256, "sha384": hashlib.sha384}
# TPM2_Quote hashes the PCR values with the signing scheme's hash (TPM2_ALG ids).
_QUOTE_HASHES = {0x000B: hashlib.sha256, 0x000C: hashlib.sha384, 0x000D: hashlib.sha512}
_PCR_READ_MAX = 8  # TPM2_PCR_Read returns at most 8 digests per call
_ATTEMPTS = 3


def _ak_template() -> Any:
    from tpm2_pytss import TPM2B_PUBLIC, TPMT_PUBLIC
    from tpm2_pytss.constants import TPM2_ALG

    area = TPMT_PUBLIC.parse(
        "ecc256:ecdsa-sha256:null",
        "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|restricted|sign",
    )
    area.parameters.eccDetail.symmetric.algorithm = TPM2_ALG.NULL
    return TPM2B_PUBLIC(area)


class TpmProvider:
    name = "tpm"

    def __init__(
        self,
        home: Path,
        *,
        tcti: str = DEFAULT_TCTI,
        pcrs: Sequence[int] = DEFAULT_PCRS,
        bank: str = "sha256",
        ak_handle: int | None = None,
        ak_template_nv: int | None = None,
        ak_cert_nv: int | None = None,
        ak_cert_intermediates: Path | str | None = None,
    ) -> None:
        if ak_handle is not None and ak_template_nv is not None:
            raise ConfigError("tpm: give ak_handle or ak_template_nv, not both")
        if bank not in _BANKS:
            raise ConfigError(f"tpm PCR bank must be one of {', '.join(_BANKS)}")
        if importlib.util.find_spec("tpm2_pytss") is None:
            raise ConfigError("the tpm provider needs tpm2-pytss: pip install 'trustserve[tpm]'")
        if not pcrs or any(not 0 <= p <= 23 for p in pcrs):
            raise ConfigError("tpm pcrs must be a non-empty list of indices 0..23")
        self._tcti = tcti
        self._pcrs = sorted(set(pcrs))
        self._bank = bank
        self._ak_handle = ak_handle
        self._ak_template_nv = ak_template_nv
        self._ak_cert_nv = ak_cert_nv
        self._intermediates = load_intermediates(ak_cert_intermediates)

    def make(self, report_data: bytes) -> Evidence:
        from tpm2_pytss import ESAPI, TSS2_Exception
        from tpm2_pytss.constants import ESYS_TR

        nonce = normalize_report_data(report_data)
        selection = f"{self._bank}:{','.join(map(str, self._pcrs))}"
        try:
            esapi = ESAPI(self._tcti)
        except TSS2_Exception as exc:
            raise ConfigError(f"cannot open TPM at {self._tcti}: {exc}") from None
        try:
            certs: dict[str, Any] = {}
            if self._ak_cert_nv is not None:
                certs["ak_cert"] = b64(ak_cert_der(read_nv(esapi, self._ak_cert_nv)))
                certs["ak_cert_intermediates"] = self._intermediates
            if self._ak_handle is None:
                template = _ak_template()
                if self._ak_template_nv is not None:
                    template = nv_template(read_nv(esapi, self._ak_template_nv))
                ak, public, *_ = esapi.create_primary(None, template, ESYS_TR.ENDORSEMENT)
                transient = True
            else:
                ak = esapi.tr_from_tpmpublic(self._ak_handle)
                public, *_ = esapi.read_public(ak)
                transient = False
            try:
                for _ in range(_ATTEMPTS):
                    attest, signature = esapi.quote(ak, selection, nonce)
                    quote = bytes(attest)
                    values = self._read_pcrs(esapi)
                    if _pcr_digest_matches(quote, _quote_hash(signature), values):
                        break
                else:
                    raise ConfigError("PCRs kept changing while quoting; try again")
            finally:
                if transient:
                    esapi.flush_context(ak)
        except TSS2_Exception as exc:
            raise ConfigError(f"TPM quote failed: {exc}") from None
        finally:
            esapi.close()
        return Evidence(
            "tpm",
            {
                "ak_public": b64(public.publicArea.marshal()),
                "quote": b64(quote),
                "signature": b64(signature.marshal()),
                "pcr_bank": self._bank,
                "pcrs": {str(i): v.hex() for i, v in values.items()},
                **certs,
            },
        )

    def _read_pcrs(self, esapi: Any) -> dict[int, bytes]:
        values: dict[int, bytes] = {}
        for start in range(0, len(self._pcrs), _PCR_READ_MAX):
            chunk = self._pcrs[start : start + _PCR_READ_MAX]
            _, _, digests = esapi.pcr_read(f"{self._bank}:{','.join(map(str, chunk))}")
            if len(digests) != len(chunk):
                raise ConfigError(f"TPM has no {self._bank} bank for PCRs {chunk}")
            values.update(zip(chunk, (bytes(d) for d in digests), strict=True))
        return values


_OPTIONS = {"tcti", "pcrs", "bank", "ak_handle", "ak_template_nv", "ak_cert_nv"}
_OPTIONS |= {"ak_cert_intermediates"}
_HANDLES = ("ak_handle", "ak_template_nv", "ak_cert_nv")


def provider(home: Path, **options: Any) -> TpmProvider:
    """The TPM provider; string option values (from a command line) are converted.

    ``pcrs`` may be ``"0,7"``; handles and NV indices may be ``"0x81000003"``.
    """
    unknown = sorted(set(options) - _OPTIONS)
    if unknown:
        raise ConfigError(f"unknown tpm option(s) {', '.join(unknown)}; known: {sorted(_OPTIONS)}")
    if isinstance(options.get("pcrs"), str):
        try:
            options["pcrs"] = [int(p) for p in options["pcrs"].split(",")]
        except ValueError:
            raise ConfigError("tpm option pcrs must be comma-separated integers") from None
    for key in _HANDLES:
        if isinstance(options.get(key), str):
            try:
                options[key] = int(options[key], 0)
            except ValueError:
                raise ConfigError(f"tpm option {key} must be an integer (0x...)") from None
    return TpmProvider(home, **options)


def _quote_hash(signature: Any) -> Any:
    """The hash the quote's PCR digest uses: that of the signature's scheme."""
    alg = int(signature.signature.any.hashAlg)
    if alg not in _QUOTE_HASHES:
        raise AttestationRefused("signature", f"the quote is signed with hash {alg:#06x}")
    return _QUOTE_HASHES[alg]


def _pcr_digest_matches(quote: bytes, digest: Any, values: dict[int, bytes]) -> bool:
    from tpm2_pytss import TPMS_ATTEST

    attest, _ = TPMS_ATTEST.unmarshal(quote)
    expected = digest(b"".join(values[i] for i in sorted(values))).digest()
    return hmac.compare_digest(bytes(attest.attested.quote.pcrDigest), expected)


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
        if bank not in _BANKS:
            raise BadRequest(f"tpm evidence pcr_bank must be one of {', '.join(_BANKS)}")
        values = _parse_pcrs(require(data, "pcrs", dict, "tpm"), _BANKS[bank]().digest_size)
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
        if not _pcr_digest_matches(quote, _quote_hash(signature), values):
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
