"""The client's check of the bundle's transparency field, its witness policy and its store."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.attacks.tlog_client_fixtures import setting
from tests.transparency.tlog_support import new_witness, policy_entry
from trustserve.errors import AttestationRefused, ConfigError
from trustserve.keyrelease.bundle import canonical
from trustserve.transparency.entries import encode
from trustserve.transparency.log import origin as log_origin
from trustserve.transparency.note import ED25519, Signer
from trustserve.transparency.witness_policy import WitnessPolicy


def test_a_client_follows_a_growing_log_and_stores_each_larger_checkpoint(
    tmp_path: Path,
) -> None:
    s = setting(tmp_path)
    assert s.check(s.field()).size == 3
    for n in range(4, 9):
        s.log.append(policy_entry({"allow_debug": False, "max_evidence_age_s": n}))
        assert s.check(s.field()).size == n
    path = s.store.path(s.log.origin)
    assert path.name == log_origin(s.log.public).replace("/", "_") + ".checkpoint"
    assert path.parent == tmp_path / "home" / "transparency"
    stored = s.store.latest(s.log.origin)
    assert stored is not None and stored.size == 8
    assert s.check(s.field(size=8)).size == 8  # the same checkpoint again is fine


def test_a_quorum_below_all_accepts_one_cosignature_of_two(tmp_path: Path) -> None:
    s = setting(tmp_path)
    s.policy = WitnessPolicy(s.policy.witnesses, quorum=1)
    field = s.log.field(s.indices, witnesses=s.witnesses[1:])
    assert s.check(field).size == 3


def test_a_bad_cosignature_by_a_named_witness_does_not_count(tmp_path: Path) -> None:
    s = setting(tmp_path)
    field = s.field()
    head, _, sigs = field["checkpoint"].rpartition("\n\n")
    lines = sigs.splitlines()
    last = lines[-1]
    lines[-1] = last[:-6] + ("AAAA==" if not last.endswith("AAAA==") else "BBBB==")
    field["checkpoint"] = head + "\n\n" + "\n".join(lines) + "\n"
    with pytest.raises(AttestationRefused) as refused:
        s.check(field)
    assert refused.value.claim == "transparency.cosignatures"
    assert "bad cosignature" in refused.value.detail


def test_no_consistency_proof_to_be_had_is_a_refusal(tmp_path: Path) -> None:
    s = setting(tmp_path)
    s.check(s.field())
    s.log.append(policy_entry({"allow_debug": False}))

    def unreachable(old: int, new: int) -> list[bytes]:
        raise OSError("connection refused")

    from trustserve.transparency.verify import verify_transparency

    with pytest.raises(AttestationRefused) as refused:
        verify_transparency(s.log.public, s.field(), s.policy, s.store, unreachable, s.relied)
    assert refused.value.claim == "transparency.consistency"


@pytest.mark.parametrize(
    "field", [None, {}, {"checkpoint": "not a note"}, {"checkpoint": 3, "entries": []}]
)
def test_a_missing_or_malformed_field_is_refused(tmp_path: Path, field: object) -> None:
    s = setting(tmp_path)
    from trustserve.transparency.verify import verify_transparency

    with pytest.raises(AttestationRefused) as refused:
        verify_transparency(s.log.public, field, s.policy, s.store, s.log.consistency, s.relied)
    assert refused.value.claim == "transparency.checkpoint"


def test_the_store_never_moves_backwards(tmp_path: Path) -> None:
    s = setting(tmp_path)
    s.log.append(policy_entry({"allow_debug": False}))
    small, large = s.log.checkpoint(3), s.log.checkpoint(4)
    assert s.store.save(large)
    assert not s.store.save(small)
    stored = s.store.latest(s.log.origin)
    assert stored is not None and stored.size == 4


def test_the_policy_digest_is_over_the_bytes_the_bundle_binds() -> None:
    policy = {"measurements": [{"tee": "sim"}], "note": "caf\u00e9", "allow_debug": False}
    assert encode(policy) == canonical(policy)


def test_the_witness_policy_section_parses_and_refuses_what_it_cannot_use() -> None:
    w1, w2 = new_witness("witness.test/w1"), new_witness("witness.test/w2")
    keys = [w1.verifier.vkey(), w2.verifier.vkey()]
    policy = WitnessPolicy.from_mapping({"witnesses": keys})
    assert policy.quorum == 2 and policy.to_json() == {"witnesses": keys, "quorum": 2}
    assert WitnessPolicy.from_mapping({"witnesses": keys, "quorum": 1}).quorum == 1
    assert WitnessPolicy.from_mapping({"quorum": 0}).witnesses == ()  # written out only
    log_key = Signer("kms.test/log", ED25519, w1.private).verifier.vkey()
    bad = [
        {"witnesses": keys, "quorum": 3},
        {"witnesses": keys, "quorum": -1},
        {"witnesses": []},
        {},
        {"witnesses": keys[:1] * 2},
        {"witnesses": keys, "quroum": 1},
        {"witnesses": [log_key]},
        {"witnesses": ["not a key"]},
        ["a list"],
    ]
    for raw in bad:
        with pytest.raises(ConfigError):
            WitnessPolicy.from_mapping(raw)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=12), min_size=1, max_size=5), st.data())
def test_any_growing_sequence_passes_and_any_fork_of_it_is_refused(
    growth: list[int], data: st.DataObject
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        s = setting(Path(tmp))
        seen = 3
        for extra in growth:
            for _ in range(extra):
                s.log.append(policy_entry({"max_evidence_age_s": len(s.log.entries)}))
            assert s.check(s.field()).size == s.log.size
            seen = s.log.size
        keep = data.draw(st.integers(min_value=3, max_value=seen - 1)) if seen > 3 else None
        if keep is None:
            return
        fork = type(s.log)(s.log.identity)
        for entry in s.log.entries[:keep]:
            fork.append(entry)
        for _ in range(data.draw(st.integers(min_value=1, max_value=8))):
            fork.append(policy_entry({"fork": os.urandom(4).hex()}))
        with pytest.raises(AttestationRefused) as refused:
            s.check(s.field(log=fork), log=fork)
        wanted = "transparency.rollback" if fork.size < seen else "transparency.consistency"
        assert refused.value.claim == wanted


def test_quorum_zero_checks_the_log_without_witnesses(tmp_path: Path) -> None:
    s = setting(tmp_path)
    s.policy = WitnessPolicy((), quorum=0)
    assert s.check(s.log.field(s.indices)).size == 3  # no cosignature at all
    s.log.append(policy_entry({"allow_debug": False}))
    s.check(s.log.field(s.indices))
    with pytest.raises(AttestationRefused) as refused:
        s.check(s.log.field(s.indices, size=3))
    assert refused.value.claim == "transparency.rollback"
