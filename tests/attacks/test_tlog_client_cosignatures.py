"""Issue 23: a split view shown to one client carries no (or too few) witness cosignatures.

The operator signs a checkpoint with the KMS key alone (no witness would cosign a view that
forks what it cosigned), or with one of the two witnesses a client requires: the client
refuses by rule ``transparency.cosignatures`` and stores nothing.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.attacks.tlog_client_fixtures import setting
from tests.transparency.tlog_support import new_witness
from trustserve.errors import AttestationRefused


@pytest.mark.parametrize("cosigners", [0, 1])
def test_a_checkpoint_without_a_quorum_of_cosignatures_is_refused(
    tmp_path: Path, cosigners: int
) -> None:
    s = setting(tmp_path)
    field = s.log.field(s.indices, witnesses=s.witnesses[:cosigners])
    with pytest.raises(AttestationRefused) as refused:
        s.check(field)
    assert refused.value.claim == "transparency.cosignatures"
    assert s.store.latest(s.log.origin) is None


def test_cosignatures_by_witnesses_the_client_does_not_name_do_not_count(tmp_path: Path) -> None:
    s = setting(tmp_path)
    strangers = (new_witness("witness.test/w1"), new_witness("witness.test/other"))
    field = s.log.field(s.indices, witnesses=strangers)
    with pytest.raises(AttestationRefused) as refused:
        s.check(field)
    assert refused.value.claim == "transparency.cosignatures"


def test_a_checkpoint_not_signed_by_the_kms_identity_is_refused(tmp_path: Path) -> None:
    s = setting(tmp_path)
    other = type(s.log)()  # another key, same entries
    for entry in s.log.entries:
        other.append(entry)
    field = other.field(s.indices, witnesses=s.witnesses)
    with pytest.raises(AttestationRefused) as refused:
        s.check(field)
    assert refused.value.claim == "transparency.checkpoint"
