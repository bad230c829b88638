"""The attestation seams: evidence, the claims a verifier extracts, and the two Protocols.

An ``EvidenceProvider`` turns 64 bytes of report data into ``Evidence`` (made by a
TEE, a TPM, or the development ``sim`` provider). A ``Verifier`` checks evidence
cryptographically and returns ``Claims``; whether those claims are acceptable is
the job of a ``Policy`` (``trustserve.attestation.policy``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from trustserve import encoding
from trustserve.errors import BadRequest

REPORT_DATA_SIZE = 64


@dataclass(frozen=True)
class Evidence:
    """What a provider made: its kind (``sim``, ``tpm``, ``tdx``, ``sgx``, ``sev-snp``) and data.

    ``data`` is JSON-serialisable; binary fields are base64 strings.
    """

    kind: str
    data: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "data": self.data}

    @classmethod
    def from_json(cls, raw: Any) -> Evidence:
        if (
            not isinstance(raw, dict)
            or not isinstance(raw.get("kind"), str)
            or not isinstance(raw.get("data"), dict)
        ):
            raise BadRequest("evidence must be an object with 'kind' (string) and 'data' (object)")
        return cls(raw["kind"], raw["data"])


@dataclass(frozen=True)
class Claims:
    """What verified evidence says about the code on the other side."""

    tee: str
    measurements: dict[str, str]
    tcb_status: str
    advisories: tuple[str, ...]
    debug: bool
    report_data: bytes
    issued_at: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "tee": self.tee,
            "measurements": self.measurements,
            "tcb_status": self.tcb_status,
            "advisories": list(self.advisories),
            "debug": self.debug,
            "report_data": self.report_data.hex(),
            "issued_at": self.issued_at,
            **({"extra": self.extra} if self.extra else {}),
        }


class EvidenceProvider(Protocol):
    name: str

    def make(self, report_data: bytes) -> Evidence: ...


class Verifier(Protocol):
    def verify(
        self, evidence: Evidence, expected_report_data: bytes | None, now: float
    ) -> Claims: ...


def unb64(text: Any, what: str) -> bytes:
    return encoding.unb64(text, f"evidence field {what}")


b64 = encoding.b64
