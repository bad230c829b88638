"""The genuine Intel quotes of tests/data/attestation and what the tests expect of them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from trustserve.attestation import VerifierSources
from trustserve.attestation.base import Evidence, b64
from trustserve.attestation.verifiers.dcap.collateral import FixedCollateral

DATA = Path(__file__).parent.parent / "data" / "attestation"
# Times from tests/data/attestation/README.md at which the collateral is valid.
TDX_TIME = 1750331763
SGX_TIME = 1750334171
TDX_MRTD = (
    "91eb2b44d141d4ece09f0c75c2c53d247a3c68edd7fafe8a3520c942a604a407"
    "de03ae6dc5f87f27428b2538873118b7"
)
# The TDX quote's RTMR1-3 (boot loader and kernel, command line and initrd, application).
TDX_RTMRS = {
    "rtmr1": "0084452c01668329d4bc06acdf58a7205c26743304509973949e5619bf81a6a7"
    "aea8c323c173019b3093d54e579e9378",
    "rtmr2": "d833feef2cd945148aa38ead2c53e9b7f138190aaaebfc551dccd829fc207aa3"
    "ba80b70870d7330733642e01d48c3132",
    "rtmr3": "00" * 48,
}
# A YAML flow mapping: the TDX measurement set that matches the genuine TDX quote.
TDX_SET = "{tee: tdx, mrtd: '%s', %s}" % (  # noqa: UP031
    TDX_MRTD,
    ", ".join(f"{k}: '{v}'" for k, v in TDX_RTMRS.items()),
)
SGX_MRSIGNER = "815f42f11cf64430c30bab7816ba596a1da0130c3b028b673133a66cf9a3e0e6"
SGX_MRENCLAVE = "33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb"
SGX_REPORT_DATA = b"Hello, world!"


def quote_bytes(name: str) -> bytes:
    return (DATA / name).read_bytes()


def collateral(name: str) -> dict[str, Any]:
    raw: dict[str, Any] = json.loads((DATA / f"{name}_collateral.json").read_text())
    return raw


def quote_evidence(kind: str, name: str, quote: bytes | None = None) -> Evidence:
    return Evidence(kind, {"quote": b64(quote_bytes(name) if quote is None else quote)})


def fixed(name: str) -> VerifierSources:
    """The verifier configured with the collateral file of quote ``name``."""
    return VerifierSources(FixedCollateral(collateral(name)))


# quote file -> its name in a collateral directory (<tee>-<fmspc>-<ca>.json)
DIRECTORY_NAMES = {
    "tdx_quote": "tdx-b0c06f000000-platform.json",
    "sgx_quote": "sgx-00a067110000-processor.json",
}


def collateral_dir(root: Path, names: tuple[str, ...] = ("tdx_quote", "sgx_quote")) -> Path:
    """A collateral directory, laid out as an operator would, holding the fixtures' collateral."""
    directory = root / "collateral"
    directory.mkdir(exist_ok=True)
    for name in names:
        (directory / DIRECTORY_NAMES[name]).write_text(json.dumps(collateral(name)))
    return directory
