"""The ``sim`` verifier: checks the statements the ``sim`` provider signs.

Trust: the verifier accepts signatures by the public keys it is given (a
policy's ``sim_platform_keys``); given none, it accepts any key, the signature
then only proving integrity (pin ``sim_measurement`` or the key to do better).
Sim evidence is never hardware-protected (``attestation.sim_platform``).
"""

from __future__ import annotations

import hmac
import json
import math
from collections.abc import Sequence
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from trustserve.attestation.base import Claims, Evidence, unb64
from trustserve.attestation.checks import check_report_data, require
from trustserve.attestation.sim_platform import sim_measurement
from trustserve.errors import AttestationRefused, BadRequest


class SimVerifier:
    def __init__(self, trusted_keys: Sequence[str] = ()) -> None:
        self._trusted = [bytes.fromhex(k) for k in trusted_keys]

    def verify(self, evidence: Evidence, expected_report_data: bytes | None, now: float) -> Claims:
        if evidence.kind != "sim":
            raise BadRequest(f"sim verifier given {evidence.kind} evidence")
        body = unb64(evidence.data.get("statement"), "statement")
        signature = unb64(evidence.data.get("signature"), "signature")
        public = _parse_public(evidence.data.get("public_key"))
        if self._trusted and not any(hmac.compare_digest(public, k) for k in self._trusted):
            raise AttestationRefused("platform_key", "sim platform key is not a trusted one")
        try:
            Ed25519PublicKey.from_public_bytes(public).verify(signature, body)
        except InvalidSignature:
            raise AttestationRefused("signature", "sim evidence signature is invalid") from None
        statement = _parse_statement(body)
        report_data = bytes.fromhex(statement["report_data"])
        check_report_data(report_data, expected_report_data)
        if statement["sim_measurement"] != sim_measurement(public, statement["trustserve_version"]):
            raise AttestationRefused("sim_measurement", "does not belong to the signing key")
        return Claims(
            tee="sim",
            measurements={"sim_measurement": statement["sim_measurement"]},
            tcb_status="Simulated",
            advisories=(),
            debug=False,
            report_data=report_data,
            issued_at=float(statement["issued_at"]),
            extra={
                "platform_key": public.hex(),
                "trustserve_version": statement["trustserve_version"],
            },
        )


def _parse_public(raw: Any) -> bytes:
    if not isinstance(raw, str):
        raise BadRequest("sim evidence field public_key must be a hex string")
    try:
        public = bytes.fromhex(raw)
    except ValueError:
        raise BadRequest("sim evidence field public_key is not hex") from None
    if len(public) != 32:
        raise BadRequest("sim evidence field public_key must be 32 bytes")
    return public


def _finite(value: float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer too large for a float
        return False


def _parse_statement(body: bytes) -> dict[str, Any]:
    try:
        statement = json.loads(body)
    except ValueError:
        raise BadRequest("sim statement is not JSON") from None
    if not isinstance(statement, dict) or statement.get("tee") != "sim":
        raise BadRequest("sim statement must be an object with tee 'sim'")
    require(statement, "report_data", str, "sim")
    require(statement, "trustserve_version", str, "sim")
    require(statement, "sim_measurement", str, "sim")
    issued_at = statement.get("issued_at")
    if isinstance(issued_at, bool) or not isinstance(issued_at, int | float):
        raise BadRequest("sim statement field issued_at must be a number")
    if not _finite(issued_at):
        # NaN compares false with everything: it would never be too old nor in the future
        raise AttestationRefused("issued_at", "sim evidence issued_at is not a finite time")
    try:
        if len(bytes.fromhex(statement["report_data"])) != 64:
            raise BadRequest("sim statement report_data must be 64 bytes")
    except ValueError:
        raise BadRequest("sim statement report_data is not hex") from None
    return statement
