"""The genuine Intel quotes of tests/data/attestation and what the tests expect of them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from trustserve.attestation.base import Evidence, b64

DATA = Path(__file__).parent.parent / "data" / "attestation"
# Times from tests/data/attestation/README.md at which the collateral is valid.
TDX_TIME = 1750331763
SGX_TIME = 1750334171
TDX_MRTD = (
    "91eb2b44d141d4ece09f0c75c2c53d247a3c68edd7fafe8a3520c942a604a407"
    "de03ae6dc5f87f27428b2538873118b7"
)
SGX_MRENCLAVE = "33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb"
SGX_REPORT_DATA = b"Hello, world!"


def quote_bytes(name: str) -> bytes:
    return (DATA / name).read_bytes()


def collateral(name: str) -> dict[str, Any]:
    raw: dict[str, Any] = json.loads((DATA / f"{name}_collateral.json").read_text())
    return raw


def quote_evidence(kind: str, name: str, quote: bytes | None = None) -> Evidence:
    return Evidence(kind, {"quote": b64(quote_bytes(name) if quote is None else quote)})
