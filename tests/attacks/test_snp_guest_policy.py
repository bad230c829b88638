"""Attack: a SEV-SNP guest launched with a policy that lets the host in, accepted.

The guest policy in an SEV-SNP report says what the firmware lets the host do with
the guest: with ``MIGRATE_MA`` (bit 18) a migration agent may be associated with it,
and that agent can read and export the guest's memory; with ``SMT`` (bit 16) the
guest may share cores with other threads (the side channels SMT opens). The verifier
looked at the debug bit (19) only: a guest whose host had set ``MIGRATE_MA`` released
keys like any other, and no policy could require SMT off. Now a set's
``guest_policy`` names bits and what they must be (``true``, ``false``, ``any``);
``migrate_ma`` is ``false`` unless a set says otherwise.

The genuine Milan report (policy 0x30000: SMT allowed, no migration agent) shows the
default accepting it and ``smt: false`` refusing it. A report with ``MIGRATE_MA`` set
needs a signer nobody here has: it is re-signed by a self-made AMD-like hierarchy put
in place of AMD's pinned roots (a test double; see tests/attestation/snp_data.py).
"""

from __future__ import annotations

import pytest

from tests.attestation.snp_data import (
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
)
from trustserve.attestation import Evidence, Policy, verify_evidence
from trustserve.attestation.verifiers.snp import certs as snp_certs
from trustserve.errors import AttestationRefused, ConfigError

GENUINE_POLICY = 0x30000  # SMT allowed, reserved bit 17


@pytest.fixture
def fake_roots(monkeypatch: pytest.MonkeyPatch) -> FakeAmd:
    amd = FakeAmd.make()
    monkeypatch.setattr(
        snp_certs, "pinned_roots", lambda product: snp_certs.AmdRoots(product, amd.ark, amd.ask)
    )
    return amd


def with_policy(amd: FakeAmd, policy: int) -> Evidence:
    vcek, key = amd.vcek(chip_id(), TCB)
    report = patch(report_bytes(), "policy", policy.to_bytes(8, "little"))
    return snp_evidence(sign_report(report, key), vcek)


def refused(evidence: Evidence, policy: Policy) -> str:
    with pytest.raises(AttestationRefused) as info:
        verify_evidence(evidence, REPORT_DATA, policy, NOW)
    return info.value.claim


def test_a_guest_a_migration_agent_may_read_is_refused_by_default(fake_roots: FakeAmd) -> None:
    evidence = with_policy(fake_roots, GENUINE_POLICY | 1 << 18)
    assert refused(evidence, snp_policy()) == "guest_policy.migrate_ma"
    allowed = snp_policy(guest_policy="{migrate_ma: any}")
    assert verify_evidence(evidence, REPORT_DATA, allowed, NOW).measurements["policy"] == "0x70000"


def test_the_genuine_report_passes_the_default_and_fails_smt_off() -> None:
    claims = verify_evidence(snp_evidence(), REPORT_DATA, snp_policy(), NOW)
    assert claims.measurements["measurement"] == MEASUREMENT
    assert refused(snp_evidence(), snp_policy(guest_policy="{smt: false}")) == "guest_policy.smt"


def test_smt_off_and_single_socket_can_be_required(fake_roots: FakeAmd) -> None:
    strict = snp_policy(guest_policy="{smt: false, single_socket: true}")
    assert refused(with_policy(fake_roots, 0x20000), strict) == "guest_policy.single_socket"
    claims = verify_evidence(with_policy(fake_roots, 0x20000 | 1 << 20), REPORT_DATA, strict, NOW)
    assert claims.measurements["policy"] == "0x120000"


@pytest.mark.parametrize(
    ("guest_policy", "words"),
    [
        ("{debug: true}", "unknown bit 'debug'"),
        ("{migrate_ma: 1}", "must be true, false or any"),
        ("[smt]", "must be a mapping"),
    ],
)
def test_a_guest_policy_that_cannot_mean_one_thing_does_not_load(
    guest_policy: str, words: str
) -> None:
    with pytest.raises(ConfigError, match=words):
        snp_policy(guest_policy=guest_policy)
