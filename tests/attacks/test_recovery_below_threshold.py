"""Attack: rebuild the root key with fewer than k shares, or with shares that are not the owners'.

The recovering KMS counts each share once, accepts only shares of the split its
recovery file names, and rebuilds nothing until k shares combine to a key whose
check value matches. Each refusal says what was wrong; nothing is stored.
"""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest
import shamir_mnemonic

from tests.attacks.recovery_fixtures import Split, recovering_kms, split_kms
from trustserve.attestation import Policy
from trustserve.crypto import shares
from trustserve.encoding import b64, unb64
from trustserve.errors import BadRequest, CannotOpenSealed, ConfigError, Conflict
from trustserve.kms.recovery import RecoveryFile, send_share


def _mnemonic(split: Split, owner: int) -> str:
    entry = split.recovery.shares[owner]
    return shares.open_as_owner(
        split.owners[owner],
        entry.sealed,
        split.recovery.identity,
        split.recovery.check,
        entry.index,
    )


def _post(url: str, ca: Path, sealed: bytes) -> httpx.Response:
    return httpx.post(f"{url}/v1/recovery/shares", json={"sealed": b64(sealed)}, verify=str(ca))


@pytest.fixture
def split(tmp_path: Path) -> Split:
    return split_kms(tmp_path / "original", owners=5, threshold=3)


def test_k_minus_1_shares_unlock_nothing_and_the_kms_says_how_many_more(
    tmp_path: Path, split: Split
) -> None:
    policy = Policy.development(tmp_path / "kms-home")
    with recovering_kms(tmp_path, split.recovery) as kms, kms.client() as client:
        first = send_share(client, split.owners[0], split.recovery, policy)
        second = send_share(client, split.owners[3], split.recovery, policy)
        assert first == {"threshold": 3, "received": 1, "needed": 2, "recovered": False}
        assert second == {"threshold": 3, "received": 2, "needed": 1, "recovered": False}
        assert kms.rebuilt == []
        # a third owner completes it: the key rebuilt is the one split
        third = send_share(client, split.owners[4], split.recovery, policy)
        assert third["recovered"] is True
        assert kms.rebuilt == [split.root_key]


def test_k_minus_1_shares_do_not_combine() -> None:
    """SLIP-39 itself refuses a set below its threshold (and Shamir says it would learn nothing)."""
    root = os.urandom(32)
    mnemonics = shares.split(root, 3, 5)
    with pytest.raises(BadRequest, match="do not combine"):
        shares.combine(mnemonics[:2], shares.check_value(root))


def test_the_same_share_twice_counts_once(tmp_path: Path, split: Split) -> None:
    policy = Policy.development(tmp_path / "kms-home")
    with recovering_kms(tmp_path, split.recovery) as kms, kms.client() as client:
        send_share(client, split.owners[1], split.recovery, policy)
        with pytest.raises(Conflict, match="share 1 was received already"):
            send_share(client, split.owners[1], split.recovery, policy)
        assert kms.session.status()["received"] == 1
        assert kms.rebuilt == []


def test_an_altered_share_is_refused_with_a_clear_message(tmp_path: Path, split: Split) -> None:
    words = _mnemonic(split, 0).split()
    words[5] = "academic" if words[5] != "academic" else "acid"
    with recovering_kms(tmp_path, split.recovery) as kms:
        sealed = shares.seal_to_kms(
            kms.session.public_key, " ".join(words), split.recovery.identity
        )
        answer = _post(kms.url, kms.ca, sealed)
        assert answer.status_code == 400
        assert "not a valid SLIP-39 mnemonic" in answer.json()["error"]
        assert kms.session.status()["received"] == 0


def test_a_tampered_sealed_share_does_not_open(tmp_path: Path, split: Split) -> None:
    with recovering_kms(tmp_path, split.recovery) as kms:
        sealed = bytearray(
            shares.seal_to_kms(kms.session.public_key, _mnemonic(split, 0), split.recovery.identity)
        )
        sealed[-1] ^= 1
        answer = _post(kms.url, kms.ca, bytes(sealed))
        assert answer.status_code == 400
        assert answer.json()["code"] == CannotOpenSealed.code
        assert _post(kms.url, kms.ca, b"").json()["code"] == CannotOpenSealed.code
        bad = httpx.post(f"{kms.url}/v1/recovery/shares", json={"s": 1}, verify=str(kms.ca))
        assert bad.status_code == 400 and "sealed" in bad.json()["error"]
        assert kms.session.status()["received"] == 0


def test_a_share_of_another_split_is_refused(tmp_path: Path, split: Split) -> None:
    """Shares of another KMS's key (or an earlier split of this one) never mix in."""
    other = split_kms(tmp_path / "other", owners=5, threshold=3)
    with recovering_kms(tmp_path, split.recovery) as kms:
        sealed = shares.seal_to_kms(
            kms.session.public_key, _mnemonic(other, 0), split.recovery.identity
        )
        answer = _post(kms.url, kms.ca, sealed)
        assert answer.status_code == 400
        assert "another split" in answer.json()["error"]


def test_shares_that_combine_to_another_key_rebuild_nothing(tmp_path: Path, split: Split) -> None:
    """A forged split with the same identifier (whoever knows a recovery file knows it): the
    shares are well-formed and combine, but not to the key whose check value the file holds."""
    forged = shamir_mnemonic.generate_mnemonics(1, [(3, 5)], os.urandom(32))[0]
    recovery = split.recovery
    with recovering_kms(tmp_path, recovery) as kms:
        statuses = []
        for m in forged[:3]:
            share = shamir_mnemonic.Share.from_mnemonic(m)
            relabelled = share.__class__(
                recovery.identifier, *[getattr(share, f) for f in _FIELDS[1:]]
            ).mnemonic()
            sealed = shares.seal_to_kms(kms.session.public_key, relabelled, recovery.identity)
            statuses.append(_post(kms.url, kms.ca, sealed))
        assert [s.status_code for s in statuses] == [200, 200, 400]
        assert (
            "do not combine" in statuses[2].json()["error"]
            or "check value" in (statuses[2].json()["error"])
        )
        assert kms.rebuilt == []


_FIELDS = (
    "identifier",
    "extendable",
    "iteration_exponent",
    "group_index",
    "group_threshold",
    "group_count",
    "index",
    "member_threshold",
    "value",
)


def test_an_owner_without_a_share_in_the_file_is_told_so(tmp_path: Path, split: Split) -> None:
    stranger = shares.hpke.generate_keypair()[0]
    policy = Policy.development(tmp_path / "kms-home")
    with (
        recovering_kms(tmp_path, split.recovery) as kms,
        kms.client() as client,
        pytest.raises(ConfigError, match="holds no share"),
    ):
        send_share(client, stranger, split.recovery, policy)


def test_a_recovery_file_round_trips(tmp_path: Path, split: Split) -> None:
    path = tmp_path / "recovery.json"
    split.recovery.write(path)
    assert RecoveryFile.load(path) == split.recovery
    assert unb64(b64(split.recovery.check), "check") == split.recovery.check
