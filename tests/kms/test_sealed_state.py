"""``SealedState`` over an in-memory store that loses answers the way a dying etcd member
does: the write lands, another replica writes after it, and the writer hears nothing.
(The real cluster does this by chance in test_kms_etcd.py's leader kill; here on purpose.)"""

from __future__ import annotations

from pathlib import Path

from trustserve.crypto.keywrap import RootKey
from trustserve.crypto.rootkey import KeyStore
from trustserve.kms.store import SealedState


class LosingStore:
    """Bytes and a revision; ``lose_next`` makes the next write land, lets ``meanwhile``
    write after it, and reports the write as lost."""

    where = "memory /state"

    def __init__(self) -> None:
        self.blob: bytes | None = None
        self.revision = 0
        self.lose_next = False
        self.meanwhile: SealedState | None = None

    def load(self) -> tuple[bytes | None, int]:
        return self.blob, self.revision

    def compare_and_set(self, expected_revision: int, blob: bytes) -> bool:
        if expected_revision != self.revision:
            return False
        self.blob, self.revision = blob, self.revision + 1
        if self.lose_next:
            self.lose_next = False
            assert self.meanwhile is not None
            self.meanwhile.update(lambda d: d["items"].append("theirs"))
            return False  # the answer never came back
        return True

    def root_key_store(self) -> KeyStore:
        raise NotImplementedError


def test_a_write_that_landed_unheard_is_not_applied_twice(tmp_path: Path) -> None:
    root, _ = RootKey.generate()
    store = LosingStore()
    ours = SealedState(store, root, tmp_path / "ours")
    ours.create(lambda: {"items": []})
    store.meanwhile = SealedState(store, root, tmp_path / "theirs")
    calls: list[int] = []

    def add(document: dict[str, list[str]]) -> str:
        calls.append(1)
        if "mine" in document["items"]:
            raise AssertionError("applied twice: would be a 409 for our own key")
        document["items"].append("mine")
        return "made"

    store.lose_next = True
    assert ours.update(add) == "made"
    assert ours.read()["items"] == ["mine", "theirs"]
    assert len(calls) == 1


def test_a_write_that_truly_lost_is_applied_again(tmp_path: Path) -> None:
    root, _ = RootKey.generate()
    store = LosingStore()
    ours = SealedState(store, root, tmp_path / "ours")
    ours.create(lambda: {"items": []})
    theirs = SealedState(store, root, tmp_path / "theirs")
    real_cas = store.compare_and_set

    def cas_after_them(expected: int, blob: bytes) -> bool:
        store.compare_and_set = real_cas  # type: ignore[method-assign]
        theirs.update(lambda d: d["items"].append("theirs"))  # they win the race
        return real_cas(expected, blob)

    store.compare_and_set = cas_after_them  # type: ignore[method-assign]
    ours.update(lambda d: d["items"].append("mine"))
    assert ours.read()["items"] == ["theirs", "mine"]
