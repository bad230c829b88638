"""Attack: whoever controls etcd (or its backups) puts back an older KMS state document,
or deletes it, to bring back a serving key that was rotated out or to make keys made
since vanish.

The document is sealed under the root key with its version in the associated data, and
each replica remembers (in memory and in its home) the highest version it has seen: an
older document, or none at all, is refused with the versions named. A replica that has
seen nothing cannot tell (docs/kms.md, "State in etcd").
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.kms.etcd_cluster import ROOT_KEY, STATE_KEY, EtcdCluster, etcd, etcd_replica
from tests.support import tiny_manifest
from trustserve.crypto.rootkey import create_key_file
from trustserve.errors import Forbidden, NotFound

__all__ = ["etcd"]  # the fixture


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "operator.key"
    create_key_file(path)
    return path


def _version(blob: bytes | None) -> int:
    assert blob is not None
    return int(json.loads(blob)["version"])


def test_an_older_state_put_back_is_refused_naming_the_versions(
    etcd: EtcdCluster, key_file: Path, tmp_path: Path
) -> None:
    kms = etcd_replica(etcd, tmp_path / "a", key_file)
    kms.create_model_key(tiny_manifest("m", "1"))
    old = etcd.get(STATE_KEY)
    newer = kms.create_model_key(tiny_manifest("m", "2"))
    kms.rotate_serving_key()
    seen = _version(etcd.get(STATE_KEY))
    assert old is not None
    etcd.put(STATE_KEY, old)  # the attacker's rollback
    rolled = f"rolled back from version {seen} to {_version(old)}"
    with pytest.raises(Forbidden, match=rolled):
        kms.model_key(newer)
    with pytest.raises(Forbidden, match=rolled):
        kms.serving_public_keys()
    with pytest.raises(Forbidden, match=rolled):
        kms.create_model_key(tiny_manifest("m", "3"))  # nothing is written over it either
    assert etcd.get(STATE_KEY) == old
    # restarted on the same home, the replica still remembers what it saw
    with pytest.raises(Forbidden, match=rolled) as refused:
        etcd_replica(etcd, tmp_path / "a", key_file)
    # an operator who restored a backup on purpose is told how to accept it, and can
    seen_file = tmp_path / "a" / "kms" / "state-version"
    assert f"remove {seen_file} on each replica" in str(refused.value)
    seen_file.unlink()
    restored = etcd_replica(etcd, tmp_path / "a", key_file)
    with pytest.raises(NotFound, match="unknown key id"):
        restored.model_key(newer)  # what the backup did not have is gone, as restored


def test_a_deleted_state_is_refused_not_made_again(
    etcd: EtcdCluster, key_file: Path, tmp_path: Path
) -> None:
    """Starting over with a fresh document would hand out a new identity and lose every
    model key; a replica that has seen the state says it is gone instead."""
    kms = etcd_replica(etcd, tmp_path / "a", key_file)
    key_id = kms.create_model_key(tiny_manifest("m", "1"))
    seen = _version(etcd.get(STATE_KEY))
    etcd.delete(STATE_KEY)
    gone = f"is gone, but this replica has seen version {seen}"
    with pytest.raises(Forbidden, match=gone):
        kms.model_key(key_id)
    with pytest.raises(Forbidden, match=gone):
        etcd_replica(etcd, tmp_path / "a", key_file)
    assert etcd.get(STATE_KEY) is None  # and nothing was made in its place


def test_a_deleted_root_key_is_refused(etcd: EtcdCluster, key_file: Path, tmp_path: Path) -> None:
    """Without it a new replica would make a new root key beside a state it cannot open."""
    etcd_replica(etcd, tmp_path / "a", key_file)
    etcd.delete(ROOT_KEY)
    from trustserve.errors import ConfigError

    with pytest.raises(ConfigError, match="exists but its root key is missing"):
        etcd_replica(etcd, tmp_path / "b", key_file)
    assert etcd.get(ROOT_KEY) is None
