"""Attack: whoever controls etcd replaces the KMS state document with another KMS's (one
whose keys the attacker knows, so that workers would be served keys of their choosing),
or edits its bytes or its version in the clear.

The document is sealed under this KMS's root key with the store key and the version in
the associated data: another KMS's document, an edited one and one whose clear version
was changed do not open, and the replica says so.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from tests.kms.etcd_cluster import STATE_KEY, EtcdCluster, etcd, etcd_replica
from tests.support import tiny_manifest
from trustserve.crypto.rootkey import create_key_file
from trustserve.errors import Forbidden

__all__ = ["etcd"]  # the fixture

NOT_OURS = "does not open under this KMS's root key"


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "operator.key"
    create_key_file(path)
    return path


def test_another_kms_state_is_refused(etcd: EtcdCluster, key_file: Path, tmp_path: Path) -> None:
    kms = etcd_replica(etcd, tmp_path / "a", key_file)
    key_id = kms.create_model_key(tiny_manifest("m", "1"))
    ours = etcd.get(STATE_KEY)
    # the attacker's own KMS, on the same etcd, with a key file of their own
    theirs_key = tmp_path / "attacker.key"
    create_key_file(theirs_key)
    etcd.delete(STATE_KEY)
    etcd.delete("/trustserve-test/root-key")
    attacker = etcd_replica(etcd, tmp_path / "attacker", theirs_key)
    for i in range(3):  # a higher version than ours, so only the seal can tell
        attacker.create_model_key(tiny_manifest("m", str(i)))
    theirs = etcd.get(STATE_KEY)
    assert theirs is not None and ours is not None
    assert json.loads(theirs)["version"] > json.loads(ours)["version"]
    with pytest.raises(Forbidden, match=NOT_OURS):
        kms.model_key(key_id)
    with pytest.raises(Forbidden, match=NOT_OURS):
        kms.create_model_key(tiny_manifest("m", "9"))


def _edited(blob: bytes, **changes: object) -> bytes:
    outer = json.loads(blob)
    outer.update(changes)
    return json.dumps(outer).encode()


def test_edited_bytes_and_an_edited_version_are_refused(
    etcd: EtcdCluster, key_file: Path, tmp_path: Path
) -> None:
    kms = etcd_replica(etcd, tmp_path / "a", key_file)
    key_id = kms.create_model_key(tiny_manifest("m", "1"))
    blob = etcd.get(STATE_KEY)
    assert blob is not None
    sealed = bytearray(base64.b64decode(json.loads(blob)["sealed"]))
    sealed[len(sealed) // 2] ^= 1
    version = json.loads(blob)["version"]
    for forged in (
        _edited(blob, sealed=base64.b64encode(bytes(sealed)).decode()),
        _edited(blob, version=version + 5),  # to look newer than what replicas have seen
    ):
        etcd.put(STATE_KEY, forged)
        with pytest.raises(Forbidden, match=NOT_OURS):
            kms.model_key(key_id)
    etcd.put(STATE_KEY, b'{"format": 1, "models": {}}')
    with pytest.raises(Forbidden, match="not a sealed KMS state document"):
        kms.model_key(key_id)
    etcd.put(STATE_KEY, blob)  # the genuine one still opens
    assert kms.model_key(key_id)
