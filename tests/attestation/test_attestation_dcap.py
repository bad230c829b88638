"""SGX and TDX verification on genuine Intel quotes (tests/data/attestation), through dcap-qvl."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from attestation_data import (
    SGX_MRENCLAVE,
    SGX_REPORT_DATA,
    SGX_TIME,
    TDX_MRTD,
    TDX_RTMRS,
    TDX_SET,
    TDX_TIME,
    collateral,
    collateral_dir,
    fixed,
    quote_bytes,
    quote_evidence,
)

from trustserve.attestation import Policy, VerifierSources, verify_evidence
from trustserve.errors import AttestationRefused, BadRequest

TDX_POLICY = Policy.from_yaml(f"measurements: [{TDX_SET}]")
SGX_LISTED = f'measurements: [{{tee: sgx, mrenclave: "{SGX_MRENCLAVE}"}}]\n'
SGX_ACCEPTING = Policy.from_yaml(
    SGX_LISTED
    + "accepted_tcb_statuses: [UpToDate, ConfigurationAndSWHardeningNeeded]\n"
    + "accepted_advisories: [INTEL-SA-00289, INTEL-SA-00615]\n"
)


def refusal(evidence, policy, now, **kwargs):  # type: ignore[no-untyped-def]
    with pytest.raises(AttestationRefused) as info:
        verify_evidence(evidence, None, policy, now, **kwargs)
    return info.value


def test_tdx_quote_accepted_under_a_policy_listing_its_mrtd_and_rtmrs() -> None:
    claims = verify_evidence(
        quote_evidence("tdx", "tdx_quote"),
        None,
        TDX_POLICY,
        TDX_TIME,
        sources=fixed("tdx_quote"),
    )
    assert claims.tee == "tdx"
    assert claims.measurements["mrtd"] == TDX_MRTD
    assert claims.tcb_status == "UpToDate"
    assert claims.advisories == ()
    assert claims.debug is False
    assert set(claims.measurements) >= {"rtmr0", "rtmr1", "rtmr2", "rtmr3"}


def test_tdx_quote_refused_under_a_policy_listing_another_mrtd() -> None:
    other = ("00" if TDX_MRTD[:2] != "00" else "11") + TDX_MRTD[2:]
    policy = Policy.from_yaml(f"measurements: [{TDX_SET.replace(TDX_MRTD, other)}]")
    error = refusal(
        quote_evidence("tdx", "tdx_quote"), policy, TDX_TIME, sources=fixed("tdx_quote")
    )
    assert error.claim == "mrtd"


def test_tdx_quote_refused_when_rtmr_differs_from_the_policy() -> None:
    policy = Policy.from_yaml(f"measurements: [{TDX_SET.replace(TDX_RTMRS['rtmr3'], 'ab' * 48)}]")
    error = refusal(
        quote_evidence("tdx", "tdx_quote"), policy, TDX_TIME, sources=fixed("tdx_quote")
    )
    assert error.claim == "rtmr3"


@pytest.mark.parametrize("offset", [184, 600, 1000])  # MRTD, report data, signature area
def test_tdx_quote_with_one_byte_flipped_is_refused(offset: int) -> None:
    quote = bytearray(quote_bytes("tdx_quote"))
    quote[offset] ^= 0x01
    evidence = quote_evidence("tdx", "tdx_quote", bytes(quote))
    with pytest.raises((AttestationRefused, BadRequest)):
        verify_evidence(evidence, None, TDX_POLICY, TDX_TIME, sources=fixed("tdx_quote"))


def test_flipped_mrtd_byte_breaks_the_signature() -> None:
    quote = bytearray(quote_bytes("tdx_quote"))
    quote[184] ^= 0x01
    error = refusal(
        quote_evidence("tdx", "tdx_quote", bytes(quote)),
        TDX_POLICY,
        TDX_TIME,
        sources=fixed("tdx_quote"),
    )
    assert error.claim == "signature"


def test_sgx_quote_refused_under_the_default_tcb_policy() -> None:
    error = refusal(
        quote_evidence("sgx", "sgx_quote"),
        Policy.from_yaml(SGX_LISTED),
        SGX_TIME,
        sources=fixed("sgx_quote"),
    )
    assert error.claim == "tcb_status"
    assert "ConfigurationAndSWHardeningNeeded" in error.detail


def test_sgx_quote_refused_under_the_default_policy() -> None:
    error = refusal(
        quote_evidence("sgx", "sgx_quote"),
        Policy.default(),
        SGX_TIME,
        sources=fixed("sgx_quote"),
    )
    assert error.claim == "tcb_status"


def test_sgx_quote_accepted_when_the_policy_lists_its_status_and_advisories() -> None:
    claims = verify_evidence(
        quote_evidence("sgx", "sgx_quote"),
        SGX_REPORT_DATA,
        SGX_ACCEPTING,
        SGX_TIME,
        sources=fixed("sgx_quote"),
    )
    assert claims.tee == "sgx"
    assert claims.tcb_status == "ConfigurationAndSWHardeningNeeded"
    assert claims.advisories == ("INTEL-SA-00289", "INTEL-SA-00615")
    assert claims.measurements["mrenclave"] == SGX_MRENCLAVE
    assert claims.report_data.rstrip(b"\0") == SGX_REPORT_DATA


def test_sgx_quote_refused_when_one_advisory_is_not_accepted() -> None:
    policy = Policy.from_yaml(
        SGX_LISTED
        + "accepted_tcb_statuses: [ConfigurationAndSWHardeningNeeded]\n"
        + "accepted_advisories: [INTEL-SA-00289]\n"
    )
    error = refusal(
        quote_evidence("sgx", "sgx_quote"), policy, SGX_TIME, sources=fixed("sgx_quote")
    )
    assert error.claim == "advisories"
    assert "INTEL-SA-00615" in error.detail


def test_sgx_quote_refused_when_bound_to_other_report_data() -> None:
    with pytest.raises(AttestationRefused) as info:
        verify_evidence(
            quote_evidence("sgx", "sgx_quote"),
            b"another nonce",
            SGX_ACCEPTING,
            SGX_TIME,
            sources=fixed("sgx_quote"),
        )
    assert info.value.claim == "report_data"


def test_sgx_quote_refused_by_svn_and_product_id_rules() -> None:
    base = (
        "accepted_tcb_statuses: [ConfigurationAndSWHardeningNeeded]\n"
        "accepted_advisories: [INTEL-SA-00289, INTEL-SA-00615]\n"
    )
    policy = Policy.from_yaml(
        base + f'measurements: [{{tee: sgx, mrenclave: "{SGX_MRENCLAVE}", isv_svn_min: 1}}]'
    )
    error = refusal(
        quote_evidence("sgx", "sgx_quote"), policy, SGX_TIME, sources=fixed("sgx_quote")
    )
    assert error.claim == "isv_svn"


@pytest.mark.parametrize(
    ("kind", "name", "policy"),
    [("tdx", "tdx_quote", TDX_POLICY), ("sgx", "sgx_quote", SGX_ACCEPTING)],
)
def test_quotes_refused_at_the_current_time_because_collateral_expired(
    kind: str, name: str, policy: Policy, tmp_path: Path
) -> None:
    error = refusal(quote_evidence(kind, name), policy, time.time(), sources=fixed(name))
    assert error.claim == "collateral"
    assert "Expired" in error.detail  # dcap-qvl's own check
    directory = VerifierSources.configured(collateral_dir=collateral_dir(tmp_path))
    error = refusal(quote_evidence(kind, name), policy, time.time(), sources=directory)
    assert error.claim == "collateral"
    assert "expired at 2025-07-19" in error.detail  # the directory's expiry check


def test_outdated_tdx_quote_is_refused() -> None:
    with pytest.raises(AttestationRefused):
        verify_evidence(
            quote_evidence("tdx", "tdx_quote_outdated"),
            None,
            TDX_POLICY,
            TDX_TIME,
            sources=fixed("tdx_quote_outdated"),
        )


def test_collateral_carried_in_the_evidence_is_not_used() -> None:
    evidence = quote_evidence("tdx", "tdx_quote")
    evidence.data["collateral"] = collateral("tdx_quote")
    error = refusal(evidence, TDX_POLICY, TDX_TIME)
    assert error.claim == "collateral"
    assert "no collateral source configured" in error.detail


def test_quotes_verify_with_collateral_from_a_directory(tmp_path: Path) -> None:
    sources = VerifierSources.configured(collateral_dir=collateral_dir(tmp_path))
    tdx = verify_evidence(quote_evidence("tdx", "tdx_quote"), None, TDX_POLICY, TDX_TIME, sources)
    assert tdx.measurements["mrtd"] == TDX_MRTD
    sgx = verify_evidence(
        quote_evidence("sgx", "sgx_quote"), SGX_REPORT_DATA, SGX_ACCEPTING, SGX_TIME, sources
    )
    assert sgx.measurements["mrenclave"] == SGX_MRENCLAVE


def test_a_directory_without_the_quotes_collateral_refuses_naming_the_file(
    tmp_path: Path,
) -> None:
    sources = VerifierSources.configured(collateral_dir=collateral_dir(tmp_path, ("sgx_quote",)))
    error = refusal(quote_evidence("tdx", "tdx_quote"), TDX_POLICY, TDX_TIME, sources=sources)
    assert error.claim == "collateral"
    assert "tdx-b0c06f000000-platform.json does not exist" in error.detail


def test_collateral_filed_under_another_fmspc_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "collateral"
    directory.mkdir()
    other = json.dumps(collateral("tdx_quote_outdated"))  # another platform's FMSPC
    (directory / "tdx-b0c06f000000-platform.json").write_text(other)
    sources = VerifierSources.configured(collateral_dir=directory)
    error = refusal(quote_evidence("tdx", "tdx_quote"), TDX_POLICY, TDX_TIME, sources=sources)
    assert error.claim == "collateral"
    assert "holds tdx FMSPC 90c06f000000, not tdx FMSPC b0c06f000000" in error.detail


def test_sgx_quote_labelled_as_tdx_is_refused() -> None:
    error = refusal(
        quote_evidence("tdx", "sgx_quote"), TDX_POLICY, SGX_TIME, sources=fixed("sgx_quote")
    )
    assert error.claim == "tee"


def test_garbage_instead_of_a_quote_is_unusable_input() -> None:
    evidence = quote_evidence("tdx", "tdx_quote", b"not a quote at all")
    with pytest.raises(BadRequest):
        verify_evidence(evidence, None, TDX_POLICY, TDX_TIME, sources=fixed("tdx_quote"))


def test_an_unreachable_pccs_refuses_rather_than_accepts() -> None:
    """No network here: a PCCS URL on a closed local port shows the fetch path fails closed."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    error = refusal(
        quote_evidence("tdx", "tdx_quote"),
        TDX_POLICY,
        TDX_TIME,
        sources=VerifierSources.configured(pccs_url=f"https://127.0.0.1:{port}/"),
    )
    assert error.claim == "collateral"
    assert str(port) in error.detail
