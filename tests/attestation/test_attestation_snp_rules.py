"""The SEV-SNP rules that the one genuine report cannot exercise, and the SNP policy syntax.

A report from another TCB, a debug guest, a VLEK-signed or a Turin report needs a
signer we do not have: these tests use a test double, a self-made AMD-like
hierarchy (``FakeAmd``) put in place of AMD's pinned roots with ``monkeypatch``
(no AMD key can sign here). Their reports start from the genuine one and are
re-signed by the self-made VCEK.
"""

from __future__ import annotations

import pytest
from snp_data import (
    MEASUREMENT,
    NOW,
    REPORT_DATA,
    TCB,
    FakeAmd,
    chip_id,
    patch,
    report_bytes,
    sign_report,
    snp_evidence,
    snp_policy,
    snp_set,
    tcb_bytes,
    u32,
)

from trustserve.attestation import Evidence, Policy, VerifierSources, verify_evidence
from trustserve.attestation.verifiers.snp import certs as snp_certs
from trustserve.attestation.verifiers.snp.verifier import SnpOptions, SnpVerifier
from trustserve.errors import AttestationRefused, ConfigError


@pytest.fixture(scope="module")
def amd() -> FakeAmd:
    return FakeAmd.make()


@pytest.fixture
def fake_roots(amd: FakeAmd, monkeypatch: pytest.MonkeyPatch) -> FakeAmd:
    """Trust the self-made hierarchy as if it were AMD's, for every product line."""
    monkeypatch.setattr(
        snp_certs, "pinned_roots", lambda product: snp_certs.AmdRoots(product, amd.ark, amd.ask)
    )
    return amd


def signed(
    amd: FakeAmd, report: bytes, tcb: dict[str, int] = TCB, hwid: bytes | None = None
) -> Evidence:
    """Evidence: ``report`` signed by a fresh self-made VCEK for ``hwid`` at ``tcb``."""
    vcek, key = amd.vcek(chip_id() if hwid is None else hwid, tcb)
    return snp_evidence(sign_report(report, key), vcek)


def test_the_double_itself_is_accepted(fake_roots: FakeAmd) -> None:
    """Control: a faithful re-signed copy passes, so the refusals below are the rule's."""
    claims = verify_evidence(signed(fake_roots, report_bytes()), REPORT_DATA, snp_policy(), NOW)
    assert claims.measurements["measurement"] == MEASUREMENT


def test_a_vcek_for_another_tcb_cannot_vouch_for_the_report(fake_roots: FakeAmd) -> None:
    """An old VCEK of the chip (before a firmware update) must not sign for a newer TCB."""
    older = {**TCB, "snp": 7}
    with pytest.raises(AttestationRefused) as info:
        SnpVerifier().verify(signed(fake_roots, report_bytes(), tcb=older), REPORT_DATA, NOW)
    assert info.value.claim == "reported_tcb"


def test_a_vcek_for_another_chip_cannot_vouch_for_the_report(fake_roots: FakeAmd) -> None:
    other_chip = bytes(reversed(chip_id()))
    with pytest.raises(AttestationRefused) as info:
        SnpVerifier().verify(signed(fake_roots, report_bytes(), hwid=other_chip), REPORT_DATA, NOW)
    assert info.value.claim == "chip_id"


def test_a_debug_guest_is_refused_unless_the_policy_allows_debug(fake_roots: FakeAmd) -> None:
    debug = patch(report_bytes(), "policy", (0x30000 | 1 << 19).to_bytes(8, "little"))
    evidence = signed(fake_roots, debug)
    with pytest.raises(AttestationRefused) as info:
        verify_evidence(evidence, REPORT_DATA, snp_policy(), NOW)
    assert info.value.claim == "debug"
    claims = verify_evidence(evidence, REPORT_DATA, snp_policy("allow_debug: true\n"), NOW)
    assert claims.debug is True


def test_vmpl_is_0_unless_the_set_names_another(fake_roots: FakeAmd) -> None:
    evidence = signed(fake_roots, patch(report_bytes(), "vmpl", u32(2)))
    with pytest.raises(AttestationRefused) as info:
        verify_evidence(evidence, REPORT_DATA, snp_policy(), NOW)
    assert info.value.claim == "vmpl"
    assert (
        verify_evidence(evidence, REPORT_DATA, snp_policy(vmpl=2), NOW).measurements["vmpl"] == "2"
    )


def test_guest_svn_is_a_lower_bound(fake_roots: FakeAmd) -> None:
    evidence = signed(fake_roots, patch(report_bytes(), "guest_svn", u32(5)))
    claims = verify_evidence(evidence, REPORT_DATA, snp_policy(guest_svn_min=5), NOW)
    assert claims.measurements["guest_svn"] == "5"
    with pytest.raises(AttestationRefused) as info:
        verify_evidence(evidence, REPORT_DATA, snp_policy(guest_svn_min=6), NOW)
    assert info.value.claim == "guest_svn"


def test_a_vlek_signed_report_is_refused(fake_roots: FakeAmd) -> None:
    vlek = patch(report_bytes(), "flags", u32(1 << 2))
    with pytest.raises(AttestationRefused) as info:
        SnpVerifier().verify(signed(fake_roots, vlek), REPORT_DATA, NOW)
    assert info.value.claim == "vcek"


def test_a_turin_report_uses_the_turin_tcb_layout_and_8_byte_hwid(fake_roots: FakeAmd) -> None:
    """Version 3 report whose CPUID says Turin (family 1Ah); the VCEK carries FMC too."""
    report = patch(report_bytes(), "version", u32(3))
    report = patch(report, "cpuid", bytes([0x1A, 0x02, 0x01]))
    tcb = {"fmc": 1, "bootloader": 4, "tee": 2, "snp": 9, "microcode": 80}
    report = patch(report, "reported_tcb", tcb_bytes("turin", 4, 2, 9, 80, fmc=1))
    evidence = signed(fake_roots, report, tcb=tcb, hwid=chip_id()[:8])
    claims = SnpVerifier(SnpOptions(products=("turin",))).verify(evidence, REPORT_DATA, NOW)
    assert claims.extra["product"] == "turin"
    assert {k: int(claims.measurements[f"tcb_{k}"]) for k in tcb} == tcb
    policy = snp_policy(min_tcb="{fmc: 2}")
    with pytest.raises(AttestationRefused) as info:
        verify_evidence(
            evidence, REPORT_DATA, policy, NOW, VerifierSources(snp=SnpOptions(products=("turin",)))
        )
    assert info.value.claim == "tcb_fmc"


def test_a_report_whose_cpu_is_not_the_vcek_s_product_is_refused(fake_roots: FakeAmd) -> None:
    report = patch(patch(report_bytes(), "version", u32(3)), "cpuid", bytes([0x19, 0x11, 0x01]))
    with pytest.raises(AttestationRefused) as info:
        SnpVerifier(SnpOptions(products=("milan",))).verify(
            signed(fake_roots, report), REPORT_DATA, NOW
        )
    assert info.value.claim == "product"


# ---- the policy syntax of an SNP set ----


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"measurement": '"' + "ab" * 47 + '"'}, "48 bytes"),
        ({"host_data": '"' + "ab" * 48 + '"'}, "32 bytes"),
        ({"id_key_digest": '"abcd"'}, "48 bytes"),
        ({"author_key_digest": '"zz"'}, "not valid hex"),
        ({"measurement": "1234"}, "quoted hex"),
        ({"vmpl": 4}, "vmpl"),
        ({"vmpl": True}, "vmpl"),
        ({"guest_svn_min": -1}, "guest_svn_min"),
        ({"min_tcb": "{snp: 256}"}, "min_tcb.snp"),
        ({"min_tcb": "{psp: 1}"}, "unknown component"),
        ({"min_tcb": "8"}, "mapping"),
        ({"mrtd": '"00"'}, "unknown key"),
    ],
)
def test_a_malformed_snp_set_is_a_configuration_error(
    keys: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        Policy.from_yaml(f"measurements: [{snp_set(**keys)}]")


def test_an_snp_set_must_name_the_measurement() -> None:
    with pytest.raises(ConfigError, match="must name measurement"):
        Policy.from_yaml("measurements: [{tee: sev-snp, vmpl: 0}]")


def test_an_snp_policy_round_trips_through_json() -> None:
    policy = snp_policy(vmpl=1, min_tcb="{bootloader: 3, snp: 8}", guest_svn_min=2)
    again = Policy.from_json(policy.to_json())
    assert again == policy
    assert again.to_json()["measurements"][0]["min_tcb"] == {"bootloader": 3, "snp": 8}
