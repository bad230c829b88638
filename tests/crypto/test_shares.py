"""crypto.shares: any k of n SLIP-39 shares rebuild the key; each HPKE step opens only in place."""

from __future__ import annotations

import itertools
import os

import pytest

from trustserve.crypto import hpke, shares
from trustserve.errors import CannotOpenSealed, ConfigError


def test_any_threshold_of_the_shares_rebuilds_the_key() -> None:
    key = os.urandom(32)
    mnemonics = shares.split(key, 3, 5)
    check = shares.check_value(key)
    assert check != key and shares.matches(key, check)
    for chosen in itertools.combinations(mnemonics, 3):
        assert shares.combine(list(chosen), check) == key
    assert sorted(shares.describe(m).index for m in mnemonics) == [0, 1, 2, 3, 4]


@pytest.mark.parametrize(("threshold", "count"), [(1, 3), (4, 3), (2, 17), (0, 0)])
def test_a_split_that_protects_nothing_or_cannot_exist_is_refused(
    threshold: int, count: int
) -> None:
    with pytest.raises(ConfigError, match="2 <= threshold <= owners"):
        shares.split(os.urandom(32), threshold, count)


def test_an_owners_share_opens_only_for_its_owner_kms_and_index() -> None:
    key, identity = os.urandom(32), os.urandom(32)
    check = shares.check_value(key)
    mnemonic = shares.split(key, 2, 2)[1]
    private, public = hpke.generate_keypair()
    sealed = shares.seal_to_owner(public, mnemonic, identity, check)
    assert shares.open_as_owner(private, sealed, identity, check, 1) == mnemonic
    for wrong in (
        (hpke.generate_keypair()[0], identity, check, 1),
        (private, os.urandom(32), check, 1),
        (private, identity, shares.check_value(os.urandom(32)), 1),
        (private, identity, check, 0),
    ):
        with pytest.raises(CannotOpenSealed):
            shares.open_as_owner(wrong[0], sealed, *wrong[1:])
    # the owner's sealed share is not a share sealed to a KMS (another info label)
    with pytest.raises(CannotOpenSealed):
        shares.open_at_kms(private, sealed, identity)
