"""Issue 23: a forked log. The client stored a checkpoint of one history; it is then shown a
checkpoint (signed by the KMS key and cosigned: the witnesses here were shown only the fork)
of another history that does not extend it. Refused by rule ``transparency.consistency``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.attacks.tlog_client_fixtures import setting
from tests.transparency.tlog_support import TestLog, policy_entry
from trustserve.errors import AttestationRefused


def _fork(s_log: TestLog, keep: int) -> TestLog:
    fork = TestLog(s_log.identity)
    for entry in s_log.entries[:keep]:
        fork.append(entry)
    return fork


def test_a_checkpoint_that_does_not_extend_the_stored_one_is_refused(tmp_path: Path) -> None:
    s = setting(tmp_path)
    s.log.append(policy_entry({"allow_simulated": False}))
    assert s.check(s.field()).size == 4
    fork = _fork(s.log, 3)
    fork.append(policy_entry({"allow_simulated": True, "measurements": [{"tee": "sim"}]}))
    fork.append(policy_entry({"allow_simulated": True}))
    with pytest.raises(AttestationRefused) as refused:
        s.check(s.field(log=fork), log=fork)
    assert refused.value.claim == "transparency.consistency"
    latest = s.store.latest(s.log.origin)
    assert latest is not None and latest.size == 4


def test_two_roots_for_the_same_size_are_a_fork(tmp_path: Path) -> None:
    s = setting(tmp_path)
    s.log.append(policy_entry({"allow_simulated": False}))
    s.check(s.field())
    fork = _fork(s.log, 3)
    fork.append(policy_entry({"allow_debug": False}))
    with pytest.raises(AttestationRefused) as refused:
        s.check(s.field(log=fork), log=fork)
    assert refused.value.claim == "transparency.consistency"
