"""Issue 23: the KMS state and log rolled back to an earlier signed state.

A client that verified the checkpoint of size 5 is shown the (genuinely signed and cosigned)
checkpoint of size 4 again: it refuses by rule ``transparency.rollback`` and keeps size 5.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.attacks.tlog_client_fixtures import setting
from tests.transparency.tlog_support import policy_entry
from trustserve.errors import AttestationRefused


def test_a_client_refuses_a_checkpoint_older_than_the_one_it_stored(tmp_path: Path) -> None:
    s = setting(tmp_path)
    s.log.append(policy_entry({"allow_simulated": False}))
    old = s.field()  # size 4
    s.log.append(policy_entry({"allow_simulated": False, "allow_debug": False}))
    assert s.check(s.field()).size == 5
    with pytest.raises(AttestationRefused) as refused:
        s.check(old)
    assert refused.value.claim == "transparency.rollback"
    assert "5" in refused.value.detail and "4" in refused.value.detail
    latest = s.store.latest(s.log.origin)
    assert latest is not None and latest.size == 5
