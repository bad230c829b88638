"""Issue 11 item 4: measurement sets that pin too little accept code nobody reviewed.

Before: a TDX set could name only ``mrtd`` (the firmware: any kernel and any
application on it matched), an SGX set only ``mrsigner`` (any enclave of that
signer), a TPM set any single PCR, and ``pcrs: {"0": ""}`` matched a quote that
did not report PCR 0 at all. Now such sets are configuration errors, and a
claim the evidence lacks never matches.
"""

from __future__ import annotations

import dataclasses

import pytest

from tests.attestation.attestation_data import (
    SGX_MRSIGNER,
    TDX_MRTD,
    TDX_RTMRS,
    TDX_SET,
    TDX_TIME,
    fixed,
    quote_evidence,
)
from trustserve.attestation import Claims, Policy, verify_evidence
from trustserve.attestation.policy.measurements import RULES
from trustserve.errors import AttestationRefused, ConfigError


def genuine_tdx_claims() -> Claims:
    """The claims of the genuine TDX quote (tests/data/attestation), verified at its time."""
    policy = Policy.from_yaml(f"measurements: [{TDX_SET}]")
    return verify_evidence(
        quote_evidence("tdx", "tdx_quote"), None, policy, TDX_TIME, fixed("tdx_quote")
    )


def test_a_tdx_set_naming_only_mrtd_is_refused_as_configuration() -> None:
    with pytest.raises(ConfigError, match="mrtd, rtmr1, rtmr2 and rtmr3"):
        Policy.from_yaml(f"measurements: [{{tee: tdx, mrtd: '{TDX_MRTD}'}}]")
    partial = {"tee": "tdx", "mrtd": TDX_MRTD, "rtmr1": TDX_RTMRS["rtmr1"]}
    with pytest.raises(ConfigError, match="rtmr2 and rtmr3"):
        Policy.from_mapping({"measurements": [partial]})


def test_same_firmware_with_another_kernel_is_refused() -> None:
    """The attack: the genuine TD firmware booting a kernel of the attacker's choice."""
    claims = genuine_tdx_claims()
    other_kernel = dataclasses.replace(
        claims, measurements={**claims.measurements, "rtmr1": "ee" * 48}
    )
    policy = Policy.from_yaml(f"measurements: [{TDX_SET}]")
    with pytest.raises(AttestationRefused) as refused:
        policy.check(other_kernel, TDX_TIME)
    assert refused.value.claim == "rtmr1"


def test_an_sgx_set_naming_only_the_signer_is_refused_as_configuration() -> None:
    with pytest.raises(ConfigError, match="mrenclave; or mrsigner, isv_prod_id and isv_svn_min"):
        Policy.from_mapping({"measurements": [{"tee": "sgx", "mrsigner": SGX_MRSIGNER}]})
    signer_and_product = {"tee": "sgx", "mrsigner": SGX_MRSIGNER, "isv_prod_id": 1}
    with pytest.raises(ConfigError, match="isv_svn_min"):
        Policy.from_mapping({"measurements": [signer_and_product]})


def test_another_enclave_of_the_same_signer_is_refused() -> None:
    policy = Policy.from_mapping(
        {
            "accepted_tcb_statuses": ["UpToDate"],
            "measurements": [
                {"tee": "sgx", "mrsigner": SGX_MRSIGNER, "isv_prod_id": 1, "isv_svn_min": 2}
            ],
        }
    )
    other_product = Claims(
        tee="sgx",
        measurements={
            "mrenclave": "ab" * 32,
            "mrsigner": SGX_MRSIGNER,
            "isv_prod_id": "7",
            "isv_svn": "9",
        },
        tcb_status="UpToDate",
        advisories=(),
        debug=False,
        report_data=bytes(64),
    )
    with pytest.raises(AttestationRefused) as refused:
        policy.check(other_product, 0)
    assert refused.value.claim == "isv_prod_id"


def test_an_empty_pcr_value_no_longer_matches_a_quote_without_that_pcr() -> None:
    boot_chain = {str(i): "00" * 32 for i in range(1, 8)}
    with pytest.raises(ConfigError, match=r"pcrs\.0 must be 32 bytes"):
        Policy.from_mapping({"measurements": [{"tee": "tpm", "pcrs": {**boot_chain, "0": ""}}]})
    # And a claim the evidence lacks never equals a wanted value, whatever built the set.
    quote_without_pcr0 = Claims(
        tee="tpm",
        measurements={f"pcr{i}": "00" * 32 for i in range(1, 8)},
        tcb_status="NotApplicable",
        advisories=(),
        debug=False,
        report_data=bytes(64),
        extra={"pcr_bank": "sha256"},
    )
    want = {"pcr_bank": "sha256", "pcrs": {**boot_chain, "0": ""}}
    assert RULES["tpm"].first_mismatch(want, quote_without_pcr0) == "pcr0"
    claims = genuine_tdx_claims()
    no_rtmr3 = dataclasses.replace(
        claims, measurements={k: v for k, v in claims.measurements.items() if k != "rtmr3"}
    )
    assert RULES["tdx"].first_mismatch({"rtmr3": ""}, no_rtmr3) == "rtmr3"
    assert RULES["sim"].first_mismatch({"sim_measurement": ""}, quote_without_pcr0) == (
        "sim_measurement"
    )


def test_a_tpm_set_must_pin_the_boot_chain() -> None:
    with pytest.raises(ConfigError, match=r"PCRs 0-7.*missing 0, 1, 2, 3, 4, 5, 6"):
        Policy.from_mapping({"measurements": [{"tee": "tpm", "pcrs": {"7": "ab" * 32}}]})


def test_a_tpm_quote_from_another_pcr_bank_is_refused() -> None:
    pcrs = {str(i): "11" * 32 for i in range(8)}
    policy = Policy.from_mapping({"measurements": [{"tee": "tpm", "pcrs": pcrs}]})
    sha1_quote = Claims(
        tee="tpm",
        measurements={f"pcr{i}": "11" * 20 for i in range(8)},
        tcb_status="NotApplicable",
        advisories=(),
        debug=False,
        report_data=bytes(64),
        extra={"pcr_bank": "sha1"},
    )
    with pytest.raises(AttestationRefused) as refused:
        policy.check(sha1_quote, 0)
    assert refused.value.claim == "pcr_bank"


@pytest.mark.parametrize(
    "bad",
    [
        {"mrtd": TDX_MRTD[:-2]},  # one byte short
        {"rtmr2": ""},
        {"rtmr3": TDX_MRTD + "00"},
        {"mr_seam": "xyz"},
    ],
)
def test_wrong_length_or_empty_hex_is_a_configuration_error(bad: dict[str, str]) -> None:
    full = {"tee": "tdx", "mrtd": TDX_MRTD, **TDX_RTMRS}
    with pytest.raises(ConfigError, match=next(iter(bad))):
        Policy.from_mapping({"measurements": [{**full, **bad}]})
