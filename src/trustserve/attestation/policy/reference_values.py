"""Measurement sets for a release policy, read from what an operator has at hand.

Each function returns one set in the policy's own form (``{"tee": ..., ...}``), made
to satisfy the policy's minimum for its TEE: TDX ``mrtd`` + ``rtmr1``-``rtmr3``; SGX
``mrenclave`` (or ``mrsigner`` + ``isv_prod_id`` + ``isv_svn_min``); SEV-SNP the
96-hex-digit launch ``measurement``; TPM ``pcrs`` with the boot chain, 0-7.

Sources: a Gramine SIGSTRUCT (checked: headers and signature), an SGX or TDX quote
(parsed with dcap-qvl; its signature chain is *not* checked here: it is the
operator's own evidence, and ``trustserve verify`` checks it), an SNP report (likewise
parsed, not verified), a TPM evidence file
(its quote signature and PCR digest are checked against its own AK), and for SNP
either a measurement or the firmware/kernel/initrd/command line, from which the
optional ``sev-snp-measure`` package computes it.

A debug enclave or TD is refused unless ``allow_debug``: its memory is open to the
host, so pinning it would release keys into the open.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from pathlib import Path
from typing import Any

from trustserve.attestation.base import Evidence
from trustserve.attestation.checks import config_hex
from trustserve.attestation.formats.sigstruct import read_sigstruct
from trustserve.errors import BadRequest, ConfigError

Set = dict[str, Any]
TDX_MINIMUM = ("mrtd", "rtmr1", "rtmr2", "rtmr3")
# fields a TDX set may pin besides the minimum (policy name -> dcap-qvl report attribute)
TDX_OPTIONAL = {
    "rtmr0": "rt_mr0",  # firmware configuration: changes with vCPUs and memory size
    "mr_config_id": "mr_config_id",  # CoCo: the initdata digest (agent policy, KBS)
    "mr_owner": "mr_owner",
    "mr_owner_config": "mr_owner_config",
    "mr_seam": "mr_seam",
}
_TDX_REPORT = {"mrtd": "mr_td", "rtmr1": "rt_mr1", "rtmr2": "rt_mr2", "rtmr3": "rt_mr3"}
_SGX_BODY = 48  # the enclave report follows the 48-byte quote header
_SGX_ISV_PROD_ID, _SGX_ISV_SVN = _SGX_BODY + 256, _SGX_BODY + 258
_SGX_DEBUG, _TD_DEBUG = 0x02, 0x01


def _debug_refused(what: str, allow_debug: bool) -> None:
    if not allow_debug:
        raise ConfigError(
            f"{what} runs in debug mode (the host can read its memory); "
            "a policy for it needs --allow-debug, and then serves no real data"
        )


def sgx_from_sigstruct(path: Path, by_signer: bool = False, allow_debug: bool = False) -> Set:
    sig = read_sigstruct(_read(path), str(path))
    if sig.debug:
        _debug_refused(f"the enclave signed in {path}", allow_debug)
    if by_signer:
        return {
            "tee": "sgx",
            "mrsigner": sig.mrsigner,
            "isv_prod_id": sig.isv_prod_id,
            "isv_svn_min": sig.isv_svn,
        }
    return {"tee": "sgx", "mrenclave": sig.mrenclave, "mrsigner": sig.mrsigner}


def _quote(path: Path) -> bytes:
    """A raw quote, or the quote inside evidence JSON from ``trustserve attest``."""
    raw = _read(path)
    if raw[:1] != b"{":
        return raw
    evidence = _evidence(raw, path)
    try:
        return base64.b64decode(evidence.data["quote"], validate=True)
    except (KeyError, TypeError, binascii.Error):
        raise BadRequest(f"{path}: evidence has no base64 quote") from None


def _parsed(quote: bytes, path: Path, tdx: bool) -> Any:
    import dcap_qvl

    try:
        parsed = dcap_qvl.parse_quote(quote)
    except ValueError as exc:
        raise BadRequest(f"{path} is not a DCAP quote: {exc}") from None
    if parsed.is_tdx() != tdx:
        raise BadRequest(f"{path} is not a{' TDX' if tdx else 'n SGX'} quote")
    return parsed


def sgx_from_quote(path: Path, by_signer: bool = False, allow_debug: bool = False) -> Set:
    quote = _quote(path)
    report = _parsed(quote, path, tdx=False).report
    if bytes(report.attributes)[0] & _SGX_DEBUG:
        _debug_refused(f"the enclave that made {path}", allow_debug)
    if by_signer:
        return {
            "tee": "sgx",
            "mrsigner": bytes(report.mr_signer).hex(),
            "isv_prod_id": int.from_bytes(quote[_SGX_ISV_PROD_ID : _SGX_ISV_PROD_ID + 2], "little"),
            "isv_svn_min": int.from_bytes(quote[_SGX_ISV_SVN : _SGX_ISV_SVN + 2], "little"),
        }
    return {
        "tee": "sgx",
        "mrenclave": bytes(report.mr_enclave).hex(),
        "mrsigner": bytes(report.mr_signer).hex(),
    }


def tdx_from_quote(path: Path, also: tuple[str, ...] = (), allow_debug: bool = False) -> Set:
    """mrtd and rtmr1-3 of the quote, plus the ``also`` fields (names of TDX_OPTIONAL)."""
    report = _parsed(_quote(path), path, tdx=True).report
    if bytes(report.td_attributes)[0] & _TD_DEBUG:
        _debug_refused(f"the TD that made {path}", allow_debug)
    fields = _TDX_REPORT | {name: TDX_OPTIONAL[name] for name in also}
    return {"tee": "tdx", **{name: bytes(getattr(report, a)).hex() for name, a in fields.items()}}


def tdx_from_values(values: dict[str, str | None]) -> Set:
    missing = [f for f in TDX_MINIMUM if not values.get(f)]
    if missing:
        raise ConfigError(f"a TDX set needs {', '.join('--tdx-' + m for m in missing)}")
    return {"tee": "tdx", **{k: config_hex(v, 48, f"--tdx-{k}") for k, v in values.items() if v}}


def snp_from_measurement(measurement: str, host_data: str | None = None) -> Set:
    snp: Set = {"tee": "sev-snp", "measurement": config_hex(measurement, 48, "measurement")}
    if host_data:  # CoCo: the initdata digest the host hands the guest at launch
        snp["host_data"] = config_hex(host_data, 32, "host_data")
    return snp


def snp_from_report(path: Path, allow_debug: bool = False) -> Set:
    """The launch measurement (and HOST_DATA, when set) of an SNP report or its evidence JSON.

    The report's signature is not checked here; ``trustserve verify`` checks it.
    """
    from trustserve.attestation.formats.snp_report import SnpReport

    raw = _read(path)
    if raw[:1] == b"{":
        try:
            raw = base64.b64decode(_evidence(raw, path).data["report"], validate=True)
        except (KeyError, TypeError, binascii.Error):
            raise BadRequest(f"{path}: evidence has no base64 report") from None
    try:
        report = SnpReport.parse(raw)
    except ValueError as exc:
        raise BadRequest(f"{path} is not an SNP report: {exc}") from None
    if report.debug:
        _debug_refused(f"the guest that made {path}", allow_debug)
    host_data = report.host_data.hex() if any(report.host_data) else None
    return snp_from_measurement(report.measurement.hex(), host_data)


def snp_launch_measurement(
    ovmf: Path,
    vcpus: int,
    vcpu_type: str,
    kernel: Path | None = None,
    initrd: Path | None = None,
    append: str | None = None,
    guest_features: int = 0x1,
) -> str:
    """The SNP launch digest of that firmware (+ direct-boot kernel, initrd, command line)."""
    try:
        from sevsnpmeasure import guest, vcpu_types
        from sevsnpmeasure.sev_mode import SevMode
    except ImportError:
        raise ConfigError(
            "computing an SNP measurement needs the sev-snp-measure package: "
            "pip install 'trustserve[snp-measure]' (or give --snp-measurement HEX)"
        ) from None
    if vcpu_type not in vcpu_types.CPU_SIGS:
        raise ConfigError(
            f"unknown vCPU type {vcpu_type!r}; one of {', '.join(vcpu_types.CPU_SIGS)}"
        )
    for file in (ovmf, kernel, initrd):
        if file is not None and not file.is_file():
            raise ConfigError(f"{file} is not a readable file")
    try:
        digest: bytes = guest.calc_launch_digest(
            SevMode.SEV_SNP,
            vcpus,
            vcpu_types.CPU_SIGS[vcpu_type],
            str(ovmf),
            str(kernel) if kernel else None,
            str(initrd) if initrd else None,
            append,
            guest_features,
        )
    except (ValueError, RuntimeError, OSError) as exc:
        raise ConfigError(f"cannot compute the SNP measurement from {ovmf}: {exc}") from None
    return digest.hex()


def tpm_from_evidence(path: Path, now: float | None = None) -> tuple[Set, str]:
    """The PCR set of TPM evidence and its AK's Name; the quote is checked against that AK."""
    from trustserve.attestation.verifiers.tpm.verifier import TpmVerifier, ak_name_of

    evidence = _evidence(_read(path), path)
    if evidence.kind != "tpm":
        raise BadRequest(f"{path} holds {evidence.kind} evidence, not tpm")
    ak = ak_name_of(evidence)
    claims = TpmVerifier([ak]).verify(evidence, None, time.time() if now is None else now)
    pcrs = {
        name.removeprefix("pcr"): value
        for name, value in claims.measurements.items()
        if name.startswith("pcr")
    }
    tpm_set: Set = {"tee": "tpm", "pcrs": dict(sorted(pcrs.items(), key=lambda kv: int(kv[0])))}
    bank = claims.extra.get("pcr_bank", "sha256")
    if bank != "sha256":
        tpm_set["pcr_bank"] = bank
    return tpm_set, ak


def _evidence(raw: bytes, path: Path) -> Evidence:
    try:
        return Evidence.from_json(json.loads(raw))
    except ValueError:
        raise BadRequest(f"{path} is not evidence JSON") from None


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
