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

The evidence's layout: ``attestation.formats.tpm``; its verifier: ``verifiers.tpm``.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from trustserve.attestation.base import Evidence, b64
from trustserve.attestation.checks import normalize_report_data
from trustserve.attestation.formats.tpm import PCR_BANKS, pcr_digest_matches, quote_hash
from trustserve.attestation.providers.tpm_nv import (
    ak_cert_der,
    load_intermediates,
    nv_template,
    read_nv,
)
from trustserve.errors import ConfigError

DEFAULT_TCTI = "device:/dev/tpmrm0"
DEFAULT_PCRS = (0, 1, 2, 3, 4, 5, 6, 7)
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
        if bank not in PCR_BANKS:
            raise ConfigError(f"tpm PCR bank must be one of {', '.join(PCR_BANKS)}")
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
                    if pcr_digest_matches(quote, quote_hash(signature), values):
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
