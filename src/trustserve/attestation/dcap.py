"""SGX and TDX quote verification through Intel DCAP (the ``dcap-qvl`` package).

Evidence: ``Evidence(kind="tdx"|"sgx", data={"quote": b64, "collateral": {...}?})``.
The collateral (PCK CRL, TCB info, QE identity and their chains, the JSON that
``dcap-qvl`` and PCCS produce) comes from, in order: the ``collateral`` the
verifier was given (an operator's file), the evidence, or a PCCS at ``pccs_url``.

``dcap-qvl`` checks the quote's signature chain to Intel's root, the collateral's
validity at ``now``, and evaluates the TCB status and advisories; accepting that
status is the policy's job.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
from typing import Any

import dcap_qvl

from trustserve.attestation._common import check_report_data, require
from trustserve.attestation.base import Claims, Evidence, unb64
from trustserve.errors import AttestationRefused, BadRequest

_FETCH_TIMEOUT_S = 30.0
# report key in dcap-qvl's verified report -> our tee name
_REPORT_TEE = {"SgxEnclave": "sgx", "TD10": "tdx", "TD15": "tdx"}
_TDX_FIELDS = {
    "mr_td": "mrtd",
    "rt_mr0": "rtmr0",
    "rt_mr1": "rtmr1",
    "rt_mr2": "rtmr2",
    "rt_mr3": "rtmr3",
    "mr_seam": "mr_seam",
    "mr_signer_seam": "mr_signer_seam",
    "mr_config_id": "mr_config_id",
    "mr_owner": "mr_owner",
    "mr_owner_config": "mr_owner_config",
}
_SGX_DEBUG_FLAG = 0x02  # ATTRIBUTES.DEBUG, bit 1 of the first byte
_TD_DEBUG_FLAG = 0x01  # TDATTRIBUTES.DEBUG, bit 0 of the first byte


def fetch_collateral(quote: bytes, pccs_url: str) -> dict[str, Any]:
    """Collateral for ``quote`` from the PCCS (or Intel PCS) at ``pccs_url``."""

    def run() -> Any:
        return asyncio.run(_fetch(quote, pccs_url))

    # dcap-qvl's fetch is a coroutine; run it on its own loop so callers inside
    # an event loop (the KMS) can call this synchronous verifier too.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        try:
            collateral = pool.submit(run).result(timeout=_FETCH_TIMEOUT_S)
        except (RuntimeError, ValueError, OSError, TimeoutError) as exc:
            raise AttestationRefused("collateral", f"cannot fetch from {pccs_url}: {exc}") from None
    raw: dict[str, Any] = json.loads(collateral.to_json())
    return raw


async def _fetch(quote: bytes, pccs_url: str) -> Any:
    return await dcap_qvl.get_collateral(pccs_url, quote)


def _refusal(message: str) -> AttestationRefused:
    """Map a dcap-qvl verification error to the claim it is about."""
    lowered = message.lower()
    if "expired" in lowered or "future" in lowered or "crl" in lowered:
        claim = "collateral"
    elif "signature" in lowered:
        claim = "signature"
    elif "tcb" in lowered:
        claim = "tcb_status"
    else:
        claim = "quote"
    return AttestationRefused(claim, message)


class DcapVerifier:
    def __init__(
        self, *, collateral: dict[str, Any] | None = None, pccs_url: str | None = None
    ) -> None:
        self._collateral = collateral
        self._pccs_url = pccs_url

    def verify(self, evidence: Evidence, expected_report_data: bytes | None, now: float) -> Claims:
        if evidence.kind not in ("sgx", "tdx"):
            raise BadRequest(f"dcap verifier given {evidence.kind} evidence")
        quote = unb64(evidence.data.get("quote"), "quote")
        try:
            parsed = dcap_qvl.parse_quote(quote)
        except ValueError as exc:
            raise BadRequest(f"{evidence.kind} evidence is not a DCAP quote: {exc}") from None
        if parsed.is_tdx() != (evidence.kind == "tdx"):
            raise AttestationRefused("tee", f"evidence says {evidence.kind}, the quote does not")
        collateral = self._collateral_for(evidence, quote)
        try:
            report = dcap_qvl.verify(quote, collateral, int(now))
        except ValueError as exc:
            raise _refusal(str(exc)) from None
        claims = _claims(evidence.kind, json.loads(report.to_json()))
        check_report_data(claims.report_data, expected_report_data)
        return claims

    def _collateral_for(self, evidence: Evidence, quote: bytes) -> Any:
        raw = self._collateral
        if raw is None and "collateral" in evidence.data:
            raw = require(evidence.data, "collateral", dict, evidence.kind)
        if raw is None and self._pccs_url:
            raw = fetch_collateral(quote, self._pccs_url)
        if raw is None:
            raise BadRequest("no collateral for the quote: give a collateral file or a PCCS URL")
        try:
            return dcap_qvl.QuoteCollateralV3.from_json(json.dumps(raw))
        except (ValueError, TypeError) as exc:
            raise BadRequest(f"collateral is unusable: {exc}") from None


def _claims(kind: str, verified: dict[str, Any]) -> Claims:
    reports = verified.get("report", {})
    (name, body), *_ = reports.items()
    if _REPORT_TEE.get(name) != kind:
        raise AttestationRefused("tee", f"evidence says {kind}, the quote holds a {name} report")
    if kind == "tdx":
        measurements = {ours: body[theirs] for theirs, ours in _TDX_FIELDS.items()}
        debug = bool(bytes.fromhex(body["td_attributes"])[0] & _TD_DEBUG_FLAG)
    else:
        measurements = {
            "mrenclave": body["mr_enclave"],
            "mrsigner": body["mr_signer"],
            "isv_prod_id": str(body["isv_prod_id"]),
            "isv_svn": str(body["isv_svn"]),
        }
        debug = bool(bytes.fromhex(body["attributes"])[0] & _SGX_DEBUG_FLAG)
    return Claims(
        tee=kind,
        measurements=measurements,
        tcb_status=str(verified["status"]),
        advisories=tuple(verified.get("advisory_ids", ())),
        debug=debug,
        report_data=bytes.fromhex(body["report_data"]),
        extra={"report_type": name, "ppid": verified.get("ppid")},
    )
