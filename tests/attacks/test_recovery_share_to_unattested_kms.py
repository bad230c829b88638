"""Attack: a KMS that is not attested (or not the one attested) collects owners' shares.

Whoever runs the host where the KMS is being recovered controls the network and
can stand up a KMS of its own. An owner sends its share only after the recovering
KMS's evidence satisfied the owner's own KMS trust policy and binds the owner's
fresh nonce, the KMS identity of the owner's recovery file and the very key the
share is sealed to. Each attack below ends with the owner refusing, and the
server having received no share at all; a control shows the same owner sending
to a KMS its policy accepts.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from tests.attacks.recovery_fixtures import Split, recovering_kms, split_kms
from trustserve.attestation import Policy
from trustserve.crypto import hpke
from trustserve.encoding import b64
from trustserve.errors import Forbidden
from trustserve.kms.recovery import RecoverySession, send_share


class Counting(RecoverySession):
    """A genuine session that counts every share posted to it, accepted or not."""

    posted = 0

    def accept(self, sealed: bytes) -> dict[str, Any]:
        type(self).posted += 1
        return super().accept(sealed)


class OwnKey(Counting):
    """Genuine evidence for its recovery key, but names an attacker's key to seal to."""

    attacker = hpke.generate_keypair()[1]

    def evidence(self, nonce: bytes) -> dict[str, Any]:
        return {**super().evidence(nonce), "recovery_public_key": b64(self.attacker)}


class OldEvidence(Counting):
    """Genuine evidence, made for another nonce (one it saw before, or its own)."""

    def evidence(self, nonce: bytes) -> dict[str, Any]:
        return {**super().evidence(os.urandom(32)), "nonce": b64(nonce)}


class OtherIdentity(Counting):
    """Genuine evidence, but recovering another KMS than the owner's recovery file names."""

    other = os.urandom(32)

    def evidence(self, nonce: bytes) -> dict[str, Any]:
        return {**super().evidence(nonce), "identity_public_key": b64(self.other)}


@pytest.fixture
def split(tmp_path: Path) -> Split:
    return split_kms(tmp_path / "original")


def _send(tmp_path: Path, split: Split, policy: Policy, session: type[Counting]) -> None:
    session.posted = 0
    with recovering_kms(tmp_path, split.recovery, session) as kms, kms.client() as client:
        try:
            send_share(client, split.owners[0], split.recovery, policy)
        finally:
            assert kms.session.status()["received"] == session.posted


def test_control_an_owner_sends_its_share_to_a_kms_its_policy_accepts(
    tmp_path: Path, split: Split
) -> None:
    _send(tmp_path, split, Policy.development(tmp_path / "kms-home"), Counting)
    assert Counting.posted == 1


def test_an_owner_with_a_strict_policy_refuses_simulated_evidence(
    tmp_path: Path, split: Split
) -> None:
    with pytest.raises(Forbidden, match="share not sent: the recovering KMS is not attested"):
        _send(tmp_path, split, Policy.default(), Counting)
    assert Counting.posted == 0


def test_evidence_of_a_platform_the_owner_does_not_trust_is_refused(
    tmp_path: Path, split: Split
) -> None:
    elsewhere = Policy.development(tmp_path / "another-host")
    with pytest.raises(Forbidden, match="share not sent"):
        _send(tmp_path, split, elsewhere, Counting)
    assert Counting.posted == 0


@pytest.mark.parametrize("session", [OwnKey, OldEvidence, OtherIdentity])
def test_evidence_that_does_not_bind_this_request_is_refused(
    tmp_path: Path, split: Split, session: type[Counting]
) -> None:
    """Another key to seal to, evidence for another nonce, another KMS identity: each
    would be evidence of a genuine KMS that does not vouch for what the owner is asked."""
    with pytest.raises(Forbidden, match="share not sent"):
        _send(tmp_path, split, Policy.development(tmp_path / "kms-home"), session)
    assert session.posted == 0
