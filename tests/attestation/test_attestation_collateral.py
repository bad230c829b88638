"""The verifier's collateral sources: a directory of files and a PCCS, each with its expiry.

The PCCS tests replace the network fetch with the genuine fixture collateral
(there is no network and no PCCS here); the unreachable-PCCS test in
test_attestation_dcap.py runs dcap-qvl's real fetch against a closed port.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from attestation_data import (
    TDX_SET,
    TDX_TIME,
    collateral,
    collateral_dir,
    quote_bytes,
    quote_evidence,
)

from tests.support import free_port
from trustserve.attestation import Policy, VerifierSources, verify_evidence
from trustserve.attestation.verifiers.dcap.collateral import (
    CollateralDirectory,
    CollateralKey,
    FirstOf,
    Pccs,
    expires_at,
)
from trustserve.errors import AttestationRefused, ConfigError

TDX_EXPIRES = 1752919235.0  # 2025-07-19T10:00:35Z: the PCK CRL's nextUpdate, the earliest


class CountingPccs:
    """Stands in for the network: serves the given collateral and counts the requests."""

    def __init__(self, raw: dict[str, Any]) -> None:
        self.raw = raw
        self.calls = 0

    def __call__(self, quote: bytes, url: str) -> dict[str, Any]:
        self.calls += 1
        return self.raw


def test_the_quote_names_the_file_that_covers_it() -> None:
    key = CollateralKey.of(quote_bytes("tdx_quote"))
    assert key.file_name == "tdx-b0c06f000000-platform.json"
    assert CollateralKey.of(quote_bytes("sgx_quote")).file_name == (
        "sgx-00a067110000-processor.json"
    )


def test_collateral_expires_at_its_earliest_next_update() -> None:
    key = CollateralKey.of(quote_bytes("tdx_quote"))
    assert expires_at(collateral("tdx_quote"), key, "fixture") == TDX_EXPIRES


def test_a_directory_file_is_used_until_it_expires(tmp_path: Path) -> None:
    source = CollateralDirectory(collateral_dir(tmp_path))
    quote = quote_bytes("tdx_quote")
    assert source.collateral(quote, TDX_EXPIRES - 1) == collateral("tdx_quote")
    with pytest.raises(AttestationRefused, match="expired at 2025-07-19T10:00:35Z"):
        source.collateral(quote, TDX_EXPIRES)


def test_a_damaged_collateral_file_is_refused_not_a_crash(tmp_path: Path) -> None:
    directory = collateral_dir(tmp_path)
    path = directory / "tdx-b0c06f000000-platform.json"
    for text in ("{not json", "[]", json.dumps({"tcb_info": "{}"})):
        path.write_text(text)
        with pytest.raises(AttestationRefused) as refused:
            CollateralDirectory(directory).collateral(quote_bytes("tdx_quote"), TDX_TIME)
        assert refused.value.claim == "collateral"


def test_pccs_collateral_is_cached_until_it_expires() -> None:
    fetch = CountingPccs(collateral("tdx_quote"))
    pccs = Pccs("https://pccs.invalid/sgx/certification/v4/", fetch)
    quote = quote_bytes("tdx_quote")
    for _ in range(3):
        pccs.collateral(quote, TDX_TIME)
    assert fetch.calls == 1
    # Past its expiry the PCCS is asked again; what it serves has expired too: refused.
    with pytest.raises(AttestationRefused, match="expired"):
        pccs.collateral(quote, TDX_EXPIRES + 1)
    assert fetch.calls == 2


def test_pccs_serving_another_platforms_collateral_is_refused() -> None:
    pccs = Pccs("https://pccs.invalid/", CountingPccs(collateral("sgx_quote")))
    with pytest.raises(AttestationRefused, match="holds sgx FMSPC 00a067110000"):
        pccs.collateral(quote_bytes("tdx_quote"), TDX_TIME)


def test_directory_first_then_pccs(tmp_path: Path) -> None:
    fetch = CountingPccs(collateral("tdx_quote"))
    empty = tmp_path / "empty"
    empty.mkdir()
    both = FirstOf([CollateralDirectory(empty), Pccs("https://pccs.invalid/", fetch)])
    policy = Policy.from_yaml(f"measurements: [{TDX_SET}]")
    claims = verify_evidence(
        quote_evidence("tdx", "tdx_quote"), None, policy, TDX_TIME, VerifierSources(both)
    )
    assert claims.tcb_status == "UpToDate"
    assert fetch.calls == 1
    filled = FirstOf([CollateralDirectory(collateral_dir(tmp_path)), Pccs("https://x/", fetch)])
    filled.collateral(quote_bytes("tdx_quote"), TDX_TIME)
    assert fetch.calls == 1  # the file sufficed


def test_both_sources_failing_names_both_reasons(tmp_path: Path) -> None:
    url = f"https://127.0.0.1:{free_port()}/"  # nothing listens there
    sources = VerifierSources.configured(collateral_dir=tmp_path, pccs_url=url)
    with pytest.raises(AttestationRefused) as refused:
        sources.collateral.collateral(quote_bytes("tdx_quote"), TDX_TIME)  # type: ignore[union-attr]
    assert refused.value.claim == "collateral"
    assert "does not exist" in refused.value.detail
    assert f"cannot fetch collateral from {url}" in refused.value.detail


def test_sources_that_cannot_work_are_configuration_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        VerifierSources.configured(collateral_dir=tmp_path / "absent")
    with pytest.raises(ConfigError, match="PCCS URL"):
        VerifierSources.configured(pccs_url="pccs.example:8081")


def test_kms_serve_refuses_to_start_with_a_missing_collateral_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from trustserve.cli import main

    absent = tmp_path / "absent"
    argv = ["kms", "serve", "--home", str(tmp_path), "--collateral-dir", str(absent)]
    assert main(argv) == 2
    assert f"collateral directory {absent} does not exist" in capsys.readouterr().err
