"""SGX and TDX quote verification through Intel DCAP (the ``dcap-qvl`` package).

Evidence: ``Evidence(kind="tdx"|"sgx", data={"quote": b64})``. The collateral
(PCK CRL, TCB info, QE identity and their chains) comes from the verifier's own
``CollateralSource`` (a collateral directory and/or a PCCS, see
``trustserve.attestation.verifiers.dcap.collateral``); a ``collateral`` field in the evidence is
ignored, since the requester would choose it. No source: refused (``collateral``).

``dcap-qvl`` checks the quote's signature chain to Intel's root, the collateral's
validity at ``now``, and evaluates the TCB status and advisories; accepting that
status is the policy's job.
"""

from __future__ import annotations

import json
from typing import Any

import dcap_qvl

from trustserve.attestation.base import Claims, Evidence, unb64
from trustserve.attestation.checks import check_report_data
from trustserve.attestation.verifiers.dcap.collateral import CollateralSource
from trustserve.errors import AttestationRefused, BadRequest

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
    def __init__(self, collateral: CollateralSource | None = None) -> None:
        self._collateral = collateral

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
        collateral = self._collateral_for(quote, now)
        try:
            report = dcap_qvl.verify(quote, collateral, int(now))
        except ValueError as exc:
            raise _refusal(str(exc)) from None
        claims = _claims(evidence.kind, json.loads(report.to_json()))
        check_report_data(claims.report_data, expected_report_data)
        return claims

    def _collateral_for(self, quote: bytes, now: float) -> Any:
        if self._collateral is None:
            raise AttestationRefused(
                "collateral",
                "no collateral source configured: give a collateral directory or a PCCS URL",
            )
        raw = self._collateral.collateral(quote, now)
        try:
            return dcap_qvl.QuoteCollateralV3.from_json(json.dumps(raw))
        except (ValueError, TypeError) as exc:
            raise AttestationRefused("collateral", f"collateral is unusable: {exc}") from None


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
