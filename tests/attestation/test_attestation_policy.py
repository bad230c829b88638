"""Loading release policies from YAML and the refusals they give."""

from __future__ import annotations

from pathlib import Path

import pytest

from trustserve.attestation import Claims, Policy
from trustserve.errors import AttestationRefused, ConfigError

MRTD = "aa" * 48
RTMRS = {"rtmr1": "b1" * 48, "rtmr2": "b2" * 48, "rtmr3": "b3" * 48}
RTMR_KEYS = ", ".join(f"{k}: '{v}'" for k, v in RTMRS.items())
TDX_SET = f"{{tee: tdx, mrtd: '{MRTD}', {RTMR_KEYS}}}"


def tdx_claims(**changes: object) -> Claims:
    fields: dict[str, object] = {
        "tee": "tdx",
        "measurements": {"mrtd": MRTD, "rtmr0": "bb" * 48, **RTMRS},
        "tcb_status": "UpToDate",
        "advisories": (),
        "debug": False,
        "report_data": bytes(64),
    }
    fields.update(changes)
    return Claims(**fields)  # type: ignore[arg-type]


def refused_claim(policy: Policy, claims: Claims) -> str:
    with pytest.raises(AttestationRefused) as info:
        policy.check(claims, now=0)
    return info.value.claim


def test_the_default_policy_refuses_everything() -> None:
    assert refused_claim(Policy.default(), tdx_claims()) == "measurements"
    assert refused_claim(Policy.from_yaml(""), tdx_claims()) == "measurements"


def test_a_listed_measurement_is_accepted_and_case_does_not_matter() -> None:
    policy = Policy.from_yaml(f"measurements: [{TDX_SET.replace(MRTD, MRTD.upper())}]")
    policy.check(tdx_claims(), now=0)


def test_debug_tees_are_refused_unless_allowed() -> None:
    yaml_text = f"measurements: [{TDX_SET}]\n"
    assert refused_claim(Policy.from_yaml(yaml_text), tdx_claims(debug=True)) == "debug"
    Policy.from_yaml(yaml_text + "allow_debug: true").check(tdx_claims(debug=True), now=0)


def test_out_of_date_tcb_is_refused_by_default() -> None:
    policy = Policy.from_yaml(f"measurements: [{TDX_SET}]")
    assert refused_claim(policy, tdx_claims(tcb_status="OutOfDate")) == "tcb_status"


def test_refusal_names_the_field_that_differs_from_every_set() -> None:
    policy = Policy.from_yaml(f"measurements: [{TDX_SET[:-1]}, rtmr0: '{'cc' * 48}'}}]")
    assert refused_claim(policy, tdx_claims()) == "rtmr0"


def test_unknown_keys_are_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="allow_simulation"):
        Policy.from_yaml("allow_simulation: true")
    with pytest.raises(ConfigError, match="mrenclave"):
        Policy.from_yaml(f"measurements: [{TDX_SET[:-1]}, mrenclave: '00'}}]")


def test_unquoted_hex_is_refused_rather_than_read_as_a_number() -> None:
    with pytest.raises(ConfigError, match="quoted hex"):
        Policy.from_yaml("measurements: [{tee: tdx, mrtd: 1234}]")


def test_a_set_that_pins_nothing_is_refused() -> None:
    with pytest.raises(ConfigError, match="mrtd, rtmr1, rtmr2 and rtmr3"):
        Policy.from_yaml(f"measurements: [{{tee: tdx, rtmr0: '{'00' * 48}'}}]")
    with pytest.raises(ConfigError, match="mrenclave; or mrsigner, isv_prod_id and isv_svn_min"):
        Policy.from_yaml("measurements: [{tee: sgx, isv_prod_id: 1}]")


def test_policy_survives_a_json_round_trip() -> None:
    policy = Policy.from_yaml(
        "allow_debug: true\n"
        "accepted_tcb_statuses: [UpToDate, SWHardeningNeeded]\n"
        "accepted_advisories: [INTEL-SA-00615]\n"
        "max_evidence_age_s: 60\n"
        f"measurements:\n  - {TDX_SET}\n"
        f"  - {{tee: sgx, mrsigner: '{'ab' * 32}', isv_prod_id: 2, isv_svn_min: 3}}\n"
        f"  - {{tee: tpm, pcrs: {{{', '.join(f'{i}: {str(i) * 64!r}' for i in range(8))}}}}}\n"
    )
    assert Policy.from_json(policy.to_json()) == policy


def test_policy_loads_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(f"measurements: [{TDX_SET}]\n")
    Policy.load(path).check(tdx_claims(), now=0)
    with pytest.raises(ConfigError, match="cannot read"):
        Policy.load(path.with_name("missing.yaml"))
