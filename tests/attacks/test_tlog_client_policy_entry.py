"""Issue 23: the bundle's release policy (or serving key, or model) is not the logged one.

The operator logs the policy everyone sees, but hands one client a bundle with a permissive
policy: the checkpoint and proofs are genuine, yet no logged entry is that policy. Refused by
rule ``transparency.inclusion``; so is an entry whose inclusion proof does not hold.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from tests.attacks.tlog_client_fixtures import serving_key, setting
from trustserve.errors import AttestationRefused


def test_a_release_policy_that_is_not_the_logged_one_is_refused(tmp_path: Path) -> None:
    s = setting(tmp_path)
    s.relied = replace(s.relied, release_policy={"allow_simulated": True, "measurements": []})
    with pytest.raises(AttestationRefused) as refused:
        s.check(s.field())
    assert refused.value.claim == "transparency.inclusion"
    assert "release policy" in refused.value.detail
    assert s.store.latest(s.log.origin) is None


def test_a_serving_key_that_is_not_logged_is_refused(tmp_path: Path) -> None:
    s = setting(tmp_path)
    s.relied = replace(s.relied, serving_keys=[serving_key(), *s.relied.serving_keys])
    with pytest.raises(AttestationRefused) as refused:
        s.check(s.field())
    assert refused.value.claim == "transparency.inclusion"
    assert "serving key" in refused.value.detail


def test_a_model_that_is_not_logged_is_refused(tmp_path: Path) -> None:
    s = setting(tmp_path)
    model = {"name": "resnet", "version": "2", "digest": None}
    s.relied = replace(s.relied, models=[*s.relied.models, model])
    with pytest.raises(AttestationRefused) as refused:
        s.check(s.field())
    assert refused.value.claim == "transparency.inclusion"


def test_an_entry_edited_after_its_proof_was_made_is_refused(tmp_path: Path) -> None:
    s = setting(tmp_path)
    field = s.field()
    field["entries"][0]["entry"] = {**field["entries"][0]["entry"], "time": 0}
    with pytest.raises(AttestationRefused) as refused:
        s.check(field)
    assert refused.value.claim == "transparency.inclusion"
