"""Attack: the host of a joining replica hands it an older KMS state than the donor's.

A replica that joins has an empty disk, so it has seen no state version: whoever runs
its etcd connection (its client certificate is on the host's disk) can give it the
document from before a serving-key rotation, and the joined replica publishes and
releases the rotated-out key as current (the rotation may have been a revocation).
The donor knows the latest version: it now signs it into its answer, and the joiner
refuses any state older than that, naming both versions.

In process: a real donor ``KmsService`` on a shared in-memory store; the joiner's
store is the host's copy of it (``HostsCopy``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.attacks.join_fixtures import sim_policy
from tests.attacks.test_kms_join_forged_answer import Relay
from trustserve.attestation import Policy, VerifierSources, make_provider
from trustserve.crypto.rootkey import FileKeyStore, KeyFileProtector, KeyStore, create_key_file
from trustserve.errors import Forbidden
from trustserve.kms import join
from trustserve.kms.service import KmsService


class HostsCopy:
    """A ``StateStore`` in memory: the real one, or the copy the host keeps for a joiner."""

    where = "memory /kms"

    def __init__(self, keys: Path, blob: bytes | None = None) -> None:
        self.keys, self.blob, self.revision = keys, blob, 0

    def load(self) -> tuple[bytes | None, int]:
        return self.blob, self.revision

    def compare_and_set(self, expected_revision: int, blob: bytes) -> bool:
        if expected_revision != self.revision:
            return False
        self.blob, self.revision = blob, self.revision + 1
        return True

    def root_key_store(self) -> KeyStore:
        return FileKeyStore(self.keys)


def test_a_joiner_refuses_a_state_older_than_the_donor_s(tmp_path: Path) -> None:
    key_file = tmp_path / "operator.key"
    create_key_file(key_file)
    home = tmp_path / "kms0"
    store = HostsCopy(tmp_path / "wrapped-root")
    donor = KmsService(
        home, KeyFileProtector(key_file), Policy.development(home), state_store=store
    )
    before = store.blob
    revoked = donor.serving_public_keys()[0]["key_id"]
    donor.rotate_serving_key()  # e.g. the old serving key leaked

    peer = sim_policy(home, tmp_path / "kms1")
    relay = Relay(donor, forge=False)
    relay.policy = peer
    provider = make_provider("sim", tmp_path / "kms1")
    joined = join._join_at(relay, peer, provider, VerifierSources(), donor.policy)  # type: ignore[arg-type]

    hosts = HostsCopy(tmp_path / "unused", before)  # the state from before the rotation
    options = {"state_store": hosts, "root": joined.root, "state_version": joined.state_version}
    try:
        replica = KmsService(tmp_path / "kms1", None, donor.policy, **options)  # type: ignore[arg-type]
    except Forbidden as exc:
        assert f"rolled back from version {joined.state_version} to 1" in str(exc)
        return
    current = replica.serving_public_keys()[0]["key_id"]
    pytest.fail(f"the joined replica serves {current} (the revoked key is {revoked})")
