"""Base64 for binary fields in JSON: the one encoder and the one checking decoder."""

from __future__ import annotations

import base64
from typing import Any

from trustserve.errors import BadRequest


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(text: Any, what: str) -> bytes:
    """``text`` decoded; BadRequest naming ``what`` if it is not a base64 string."""
    if not isinstance(text, str):
        raise BadRequest(f"{what} must be a base64 string")
    try:
        return base64.b64decode(text, validate=True)
    except ValueError:
        raise BadRequest(f"{what} is not valid base64") from None
