"""The log's entries: a JSON object per leaf (``kind``, ``time`` and the kind's fields).

The leaf bytes of an entry are its canonical JSON (sorted keys, no spaces, ASCII only), the
one encoding the KMS, the witnesses' submitters, clients and monitors all hash.
"""

from __future__ import annotations

import json
from typing import Any


def encode(entry: dict[str, Any]) -> bytes:
    """The leaf bytes of ``entry``."""
    return json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
