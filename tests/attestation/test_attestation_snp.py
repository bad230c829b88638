"""The SEV-SNP verifier on a genuine AMD Milan report, its VCEK and AMD's pinned roots.

Everything here is real evidence (tests/data/attestation/snp, see its README): the
report is accepted with its own values and refused, naming the claim, whenever
the report, the VCEK, the root or the policy says otherwise.
"""

from __future__ import annotations

import datetime
from importlib import resources

import pytest
from snp_data import (
    MEASUREMENT,
    NOW,
    OFFSETS,
    REPORT_DATA,
    SNP,
    TCB,
    FakeAmd,
    chip_id,
    flip,
    report_bytes,
    snp_evidence,
    snp_policy,
)

from trustserve.attestation import Evidence, Policy, VerifierSources, verify_evidence
from trustserve.attestation.verifiers.snp.certs import pinned_roots
from trustserve.attestation.verifiers.snp.verifier import SnpOptions, SnpVerifier
from trustserve.errors import AttestationRefused, BadRequest


def refused(
    evidence: Evidence, policy: Policy | None = None, options: SnpOptions | None = None
) -> AttestationRefused:
    with pytest.raises(AttestationRefused) as info:
        verify_evidence(
            evidence, REPORT_DATA, policy or snp_policy(), NOW, VerifierSources(snp=options)
        )
    return info.value


def test_the_genuine_report_is_accepted_with_its_measurement() -> None:
    claims = verify_evidence(snp_evidence(), REPORT_DATA, snp_policy(), NOW)
    assert claims.tee == "sev-snp"
    assert claims.measurements["measurement"] == MEASUREMENT
    assert claims.report_data == REPORT_DATA
    assert claims.measurements["chip_id"] == chip_id().hex()
    assert {k: int(claims.measurements[f"tcb_{k}"]) for k in TCB} == TCB
    assert claims.measurements["vmpl"] == "0"
    assert claims.measurements["guest_svn"] == "0"
    assert claims.measurements["policy"] == "0x30000"
    assert claims.measurements["host_data"] == "00" * 32
    assert claims.debug is False
    assert claims.tcb_status == "NotApplicable"
    assert claims.extra["product"] == "milan"
    assert claims.extra["product_name"] == "Milan-B0"


def test_every_optional_key_of_a_set_accepts_the_report_values() -> None:
    policy = snp_policy(
        host_data='"' + "00" * 32 + '"',
        id_key_digest='"' + "00" * 48 + '"',
        author_key_digest='"' + "00" * 48 + '"',
        vmpl=0,
        min_tcb="{bootloader: 3, tee: 0, snp: 8, microcode: 115}",
        guest_svn_min=0,
    )
    assert verify_evidence(snp_evidence(), REPORT_DATA, policy, NOW).tee == "sev-snp"


def test_another_measurement_is_refused() -> None:
    other = "ab" * 48
    policy = Policy.from_yaml(f'measurements: [{{tee: sev-snp, measurement: "{other}"}}]')
    error = refused(snp_evidence(), policy=policy)
    assert error.claim == "measurement"


@pytest.mark.parametrize("field", sorted(OFFSETS))
def test_one_flipped_byte_in_any_field_breaks_the_signature(field: str) -> None:
    tampered = flip(report_bytes(), OFFSETS[field] + 1)
    assert refused(snp_evidence(tampered)).claim == "signature"


def test_the_vcek_checked_against_the_genoa_root_is_refused() -> None:
    error = refused(snp_evidence(), options=SnpOptions(products=("genoa",)))
    assert error.claim == "chain"
    assert "genoa" in error.detail


def test_each_product_root_can_be_chosen_and_milan_s_accepts() -> None:
    options = SnpOptions(products=("turin", "milan"))
    claims = verify_evidence(
        snp_evidence(), REPORT_DATA, snp_policy(), NOW, VerifierSources(snp=options)
    )
    assert claims.extra["product"] == "milan"


@pytest.mark.parametrize("component", sorted(TCB))
def test_a_minimum_tcb_above_the_report_is_refused(component: str) -> None:
    minimum = {**TCB, component: TCB[component] + 1}
    error = refused(snp_evidence(), policy=snp_policy(min_tcb=_flow(minimum)))
    assert error.claim == f"tcb_{component}"


def test_vmpl_1_required_is_refused() -> None:
    assert refused(snp_evidence(), policy=snp_policy(vmpl=1)).claim == "vmpl"


@pytest.mark.parametrize(
    ("key", "claim"),
    [
        ("host_data", "host_data"),
        ("id_key_digest", "id_key_digest"),
        ("author_key_digest", "author_key_digest"),
    ],
)
def test_named_digests_must_match(key: str, claim: str) -> None:
    size = 32 if key == "host_data" else 48
    error = refused(snp_evidence(), policy=snp_policy(**{key: '"' + "01" * size + '"'}))
    assert error.claim == claim


def test_a_guest_svn_below_the_minimum_is_refused() -> None:
    assert refused(snp_evidence(), policy=snp_policy(guest_svn_min=1)).claim == "guest_svn"


def test_report_data_other_than_expected_is_refused_naming_report_data() -> None:
    with pytest.raises(AttestationRefused) as info:
        SnpVerifier().verify(snp_evidence(), bytes(64), NOW)
    assert info.value.claim == "report_data"


def test_a_vcek_not_signed_by_amd_s_signing_key_is_refused() -> None:
    """Same chip, same TCB, same extensions; only the signer is not AMD's."""
    fake_vcek, _ = FakeAmd.make().vcek(chip_id(), TCB)
    assert refused(snp_evidence(vcek=fake_vcek)).claim == "chain"


def test_the_vcek_is_refused_after_it_expires() -> None:
    later = datetime.datetime(2030, 4, 4, tzinfo=datetime.UTC).timestamp()
    with pytest.raises(AttestationRefused) as info:
        SnpVerifier().verify(snp_evidence(), REPORT_DATA, later)
    assert info.value.claim == "chain"
    assert "2030-04-03" in info.value.detail


def test_a_policy_without_snp_sets_refuses_snp_evidence() -> None:
    zeros = '"' + "00" * 48 + '"'
    tdx_set = ", ".join(f"{name}: {zeros}" for name in ("mrtd", "rtmr1", "rtmr2", "rtmr3"))
    policy = Policy.from_yaml("measurements: [{tee: tdx, " + tdx_set + "}]")
    assert refused(snp_evidence(), policy=policy).claim == "measurements"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"vcek": "AAAA"}, "report"),
        ({"report": "AAAA", "vcek": "AAAA"}, "not a report"),
        ({"report": "not base64!", "vcek": "AAAA"}, "report"),
    ],
)
def test_malformed_evidence_is_a_bad_request(data: dict[str, str], message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        SnpVerifier().verify(Evidence("sev-snp", data), REPORT_DATA, NOW)


def test_a_vcek_that_is_not_a_certificate_is_a_bad_request() -> None:
    evidence = snp_evidence(vcek=b"not a certificate")
    with pytest.raises(BadRequest, match="VCEK"):
        SnpVerifier().verify(evidence, REPORT_DATA, NOW)


def test_without_a_vcek_or_a_vcek_source_the_evidence_is_a_bad_request() -> None:
    evidence = Evidence("sev-snp", {"report": snp_evidence().data["report"]})
    with pytest.raises(BadRequest, match="no 'vcek'"):
        SnpVerifier().verify(evidence, REPORT_DATA, NOW)


def test_the_pinned_roots_are_amd_s_and_verify() -> None:
    """The package's ARK/ASK are the fixture's copies, and each chain checks out."""
    folder = resources.files("trustserve.attestation.verifiers.snp") / "amd"
    for product in ("milan", "genoa", "turin"):
        for kind in ("ark", "ask"):
            name = f"{kind}_{product}.pem"
            assert (folder / name).read_bytes() == (SNP / name).read_bytes()
        roots = pinned_roots(product)
        assert roots.ark.subject.rfc4514_string().startswith(f"CN=ARK-{product.capitalize()}")
        assert roots.ask.issuer == roots.ark.subject


def _flow(mapping: dict[str, int]) -> str:
    return "{" + ", ".join(f"{k}: {v}" for k, v in mapping.items()) + "}"
