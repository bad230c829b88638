"""Small helpers shared by the providers, the verifiers and the policy."""

from __future__ import annotations

import hmac
from typing import Any

from trustserve.attestation.base import REPORT_DATA_SIZE
from trustserve.errors import AttestationRefused, BadRequest, ConfigError


def normalize_report_data(report_data: bytes) -> bytes:
    """Report data is 64 bytes; shorter values (a 32-byte hash, say) are zero-padded."""
    if not isinstance(report_data, bytes | bytearray):
        raise BadRequest("report data must be bytes")
    if len(report_data) > REPORT_DATA_SIZE:
        raise BadRequest(f"report data is {len(report_data)} bytes; at most 64 allowed")
    return bytes(report_data).ljust(REPORT_DATA_SIZE, b"\0")


def check_report_data(actual: bytes, expected: bytes | None) -> None:
    """Refuse (claim ``report_data``) unless ``actual`` is the expected report data."""
    if expected is None:
        return
    if not hmac.compare_digest(actual, normalize_report_data(expected)):
        raise AttestationRefused("report_data", "evidence is bound to other report data")


def require(data: dict[str, Any], key: str, kind: type, what: str) -> Any:
    """``data[key]``, which must be a ``kind``; BadRequest otherwise."""
    value = data.get(key)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise BadRequest(f"{what} evidence field {key!r} is missing or not a {kind.__name__}")
    return value


def parse_hex(text: Any, what: str) -> bytes:
    if not isinstance(text, str):
        raise BadRequest(f"{what} must be a hex string")
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise BadRequest(f"{what} is not valid hex") from None


def config_hex(value: Any, size: int, what: str) -> str:
    """A policy value: lower-case hex of exactly ``size`` bytes; ConfigError otherwise."""
    if not isinstance(value, str):
        raise ConfigError(f"{what} must be a quoted hex string")
    try:
        data = bytes.fromhex(value)
    except ValueError:
        raise ConfigError(f"{what} is not valid hex") from None
    if len(data) != size:
        raise ConfigError(f"{what} must be {size} bytes ({2 * size} hex digits), got {len(data)}")
    return data.hex()
