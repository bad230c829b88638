"""The client's judgement of a KMS release policy: at most as permissive, rule by rule."""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any

import pytest

from trustserve.attestation import Policy
from trustserve.attestation.policy.rules import _check_key, check_release_policy
from trustserve.errors import AttestationRefused


def tdx(**pins: Any) -> dict[str, Any]:
    base = {k: os.urandom(48).hex() for k in ("mrtd", "rtmr1", "rtmr2", "rtmr3")}
    return {"tee": "tdx", **base, **pins}


def ak_name() -> str:
    """A TPM Name (SHA-256 nameAlg) of no real key."""
    return "000b" + os.urandom(32).hex()


def release(**keys: Any) -> dict[str, Any]:
    """A release policy as a KMS publishes it (its ``Policy.to_json``)."""
    return Policy.from_mapping({"measurements": [tdx()], **keys}).to_json()


def refused_rule(rel: dict[str, Any], mine: Policy) -> str:
    with pytest.raises(AttestationRefused) as exc:
        check_release_policy(rel, mine)
    return exc.value.claim


def test_the_default_client_accepts_the_default_release_policy() -> None:
    check_release_policy(release(), Policy.default())


def test_an_unknown_key_is_refused_even_if_it_looks_harmless() -> None:
    rel = {**release(), "allow_everything": False}
    assert refused_rule(rel, Policy.default()) == "release_policy.allow_everything"


def test_a_malformed_release_policy_is_refused() -> None:
    rel = {**release(), "accepted_advisories": "INTEL-SA-00615"}
    assert refused_rule(rel, Policy.default()) == "release_policy.format"


def test_sim_needs_allow_simulated_on_the_client_even_as_a_bare_measurement_set() -> None:
    rel = release(measurements=[{"tee": "sim"}])
    assert refused_rule(rel, Policy.default()) == "release_policy.measurements"
    check_release_policy(rel, Policy(allow_simulated=True))


def test_longer_evidence_age_than_the_clients_is_refused() -> None:
    rel = release(max_evidence_age_s=3600)
    assert refused_rule(rel, Policy.default()) == "release_policy.max_evidence_age_s"
    check_release_policy(release(max_evidence_age_s=60), Policy.default())


def test_statuses_and_advisories_within_the_clients_pass() -> None:
    mine = Policy.from_mapping(
        {
            "accepted_tcb_statuses": ["UpToDate", "SWHardeningNeeded"],
            "accepted_advisories": ["INTEL-SA-00615", "INTEL-SA-00657"],
        }
    )
    check_release_policy(release(accepted_advisories=["INTEL-SA-00657"]), mine)
    rel = release(accepted_tcb_statuses=["OutOfDate"])
    assert refused_rule(rel, mine) == "release_policy.accepted_tcb_statuses"


def test_measurements_must_be_the_clients_or_narrower_when_it_names_any() -> None:
    mine_set = tdx()
    mine = Policy.from_mapping({"measurements": [mine_set]})
    check_release_policy(release(measurements=[mine_set]), mine)
    narrower = {**mine_set, "mr_seam": os.urandom(48).hex()}
    check_release_policy(release(measurements=[narrower]), mine)
    other = {**mine_set, "rtmr3": os.urandom(48).hex()}
    assert refused_rule(release(measurements=[mine_set, other]), mine).endswith("measurements")
    upper = {k: v.upper() if k != "tee" else v for k, v in mine_set.items()}
    check_release_policy(release(measurements=[upper]), mine)


def test_snp_minimum_tcb_may_only_be_raised() -> None:
    base = {"tee": "sev-snp", "measurement": os.urandom(48).hex()}
    mine = Policy.from_mapping({"measurements": [{**base, "min_tcb": {"snp": 8}}]})
    check_release_policy(release(measurements=[{**base, "min_tcb": {"snp": 9}}]), mine)
    rel = release(measurements=[{**base, "min_tcb": {"snp": 7}}])
    assert refused_rule(rel, mine) == "release_policy.measurements"
    assert refused_rule(release(measurements=[base]), mine) == "release_policy.measurements"


def test_snp_guest_policy_may_only_be_narrowed() -> None:
    """A client's sev-snp set refuses a migration agent by default; a KMS that admits
    one (``migrate_ma: any``) or that allows SMT where the client requires it off
    admits workers the client does not accept."""
    base = {"tee": "sev-snp", "measurement": os.urandom(48).hex()}
    mine = Policy.from_mapping({"measurements": [base]})
    check_release_policy(release(measurements=[base]), mine)
    admits_ma = release(measurements=[{**base, "guest_policy": {"migrate_ma": "any"}}])
    assert refused_rule(admits_ma, mine) == "release_policy.measurements"
    no_smt = Policy.from_mapping({"measurements": [{**base, "guest_policy": {"smt": False}}]})
    assert refused_rule(release(measurements=[base]), no_smt) == "release_policy.measurements"
    stricter = {**base, "guest_policy": {"smt": False, "single_socket": True}}
    check_release_policy(release(measurements=[stricter]), no_smt)


def test_sgx_svn_bound_may_only_be_raised() -> None:
    signer = os.urandom(32).hex()
    base = {"tee": "sgx", "mrsigner": signer, "isv_prod_id": 1}
    mine = Policy.from_mapping({"measurements": [{**base, "isv_svn_min": 3}]})
    check_release_policy(release(measurements=[{**base, "isv_svn_min": 4}]), mine)
    rel = release(measurements=[{**base, "isv_svn_min": 2}])
    assert refused_rule(rel, mine) == "release_policy.measurements"


def test_ak_pins_must_be_a_subset_of_the_clients() -> None:
    a, b = ak_name(), ak_name()
    mine = Policy.from_mapping({"tpm_ak_names": [a]})
    check_release_policy(release(tpm_ak_names=[a.upper().replace("X", "x")]), mine)
    assert refused_rule(release(tpm_ak_names=[a, b]), mine) == "release_policy.tpm_ak_names"
    assert refused_rule(release(tpm_ak_names=[b]), Policy.default()) == (
        "release_policy.tpm_ak_names"
    )


def test_an_empty_sim_key_list_means_any_key() -> None:
    key = os.urandom(32).hex()
    sim = {"allow_simulated": True, "measurements": [{"tee": "sim"}]}
    anyone = Policy(allow_simulated=True)
    pinned = replace(anyone, sim_platform_keys=(key,))
    check_release_policy(release(**sim, sim_platform_keys=[key]), anyone)
    check_release_policy(release(**sim, sim_platform_keys=[key]), pinned)
    assert refused_rule(release(**sim), pinned) == "release_policy.sim_platform_keys"
    other = release(**sim, sim_platform_keys=[os.urandom(32).hex()])
    assert refused_rule(other, pinned) == "release_policy.sim_platform_keys"


def test_any_list_of_trust_roots_is_judged_as_a_subset() -> None:
    """A list-valued key with no rule of its own (AK names, CA certificates, ...)."""
    _check_key("tpm_ak_ca_certs", ["CERT A"], ["CERT A", "CERT B"], {})
    _check_key("some_future_roots", ["AB" * 32], ["ab" * 32], {})
    with pytest.raises(AttestationRefused) as exc:
        _check_key("tpm_ak_ca_certs", ["CERT C"], ["CERT A"], {})
    assert exc.value.claim == "release_policy.tpm_ak_ca_certs"


def test_a_known_key_without_a_rule_is_refused() -> None:
    with pytest.raises(AttestationRefused):
        _check_key("collateral_url", "https://pccs.example", "https://pccs.example", {})
