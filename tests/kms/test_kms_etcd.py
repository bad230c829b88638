"""KMS replicas whose state is in a real 3-member etcd cluster (mutual TLS, loopback).

Each replica has its own home (its audit log, the highest state version it has seen);
the keys are in etcd, sealed under the root key that the replicas' shared operator key
file unwraps.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

import pytest

from tests.kms.etcd_cluster import PREFIX, ROOT_KEY, STATE_KEY, EtcdCluster, etcd, etcd_replica
from tests.support import tiny_manifest
from trustserve.crypto.rootkey import create_key_file
from trustserve.errors import Conflict
from trustserve.kms.service import KmsService

__all__ = ["etcd"]  # the fixture


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "operator.key"
    create_key_file(path)
    return path


def test_etcd_holds_only_ciphertext_and_a_version(
    etcd: EtcdCluster, key_file: Path, tmp_path: Path
) -> None:
    kms = etcd_replica(etcd, tmp_path / "a", key_file)
    key_id = kms.create_model_key(tiny_manifest("m", "1"))
    stored = etcd.get(STATE_KEY)
    assert stored is not None
    outer = json.loads(stored)
    assert set(outer) == {"format", "version", "sealed"}
    assert outer["version"] == 2  # made (1), then a model key (2)
    assert key_id.encode() not in stored and b"identity" not in stored
    assert json.loads(etcd.get(ROOT_KEY) or b"{}")["method"] == "key-file"
    assert not (tmp_path / "a" / "kms" / "state.json").exists()
    assert (tmp_path / "a" / "kms" / "state-version").read_text().strip() == "2"


def test_replicas_share_one_state_and_identity(
    etcd: EtcdCluster, key_file: Path, tmp_path: Path
) -> None:
    a = etcd_replica(etcd, tmp_path / "a", key_file)
    b = etcd_replica(etcd, tmp_path / "b", key_file)
    assert a.state.identity_public_key() == b.state.identity_public_key()
    key_id = a.create_model_key(tiny_manifest("m", "1"))
    assert b.model_key(key_id) == a.model_key(key_id)
    rotated = b.rotate_serving_key()
    assert a.serving_public_keys()[0]["key_id"] == rotated["key_id"]


def test_no_acknowledged_key_is_lost_when_the_etcd_leader_is_killed(
    etcd: EtcdCluster, key_file: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Two replicas create keys without pause, both talking to the leader first; it is
    killed (-9) in the middle. Every key acknowledged before, during and after is read back
    by a third replica that never talked to the dead member."""
    leader = etcd.leader()
    survivors = [m for m in etcd.members if m is not leader]
    a = etcd_replica(etcd, tmp_path / "a", key_file, [leader, *survivors])
    b = etcd_replica(etcd, tmp_path / "b", key_file, [leader, *survivors])
    made: dict[str, bytes] = {}
    failures: list[Exception] = []
    enough = threading.Event()
    progress = threading.Condition()

    def create(replica: KmsService, name: str) -> None:
        i = 0
        while not enough.is_set():
            try:
                key_id = replica.create_model_key(tiny_manifest(name, str(i)))
                key = replica.model_key(key_id)
            except Exception as exc:
                failures.append(exc)
                return
            with progress:
                made[key_id] = key  # acknowledged
                progress.notify_all()
            i += 1

    def wait_for(count: int) -> None:
        with progress:
            assert progress.wait_for(lambda: len(made) >= count or bool(failures), 300)

    writers = [
        threading.Thread(target=create, args=(a, "ma")),
        threading.Thread(target=create, args=(b, "mb")),
    ]
    for writer in writers:
        writer.start()
    try:
        wait_for(10)
        with caplog.at_level(logging.WARNING, "trustserve.kms"):
            etcd.kill(leader)
            killed_at = len(made)
            wait_for(killed_at + 20)  # the writers moved on through the election
    finally:
        enough.set()
        for writer in writers:
            writer.join()
    assert not failures, failures
    assert f"etcd {leader.client_url}" in caplog.text  # they did lose their member
    fresh = etcd_replica(etcd, tmp_path / "c", key_file, survivors)
    for key_id, key in made.items():
        assert fresh.model_key(key_id) == key
    assert set(fresh.state.model_keys()) == set(made)
    # each key's transparency-log entry went in with it, once (a write applied again after
    # a lost answer would log it twice)
    logged = [e["key_id"] for e in fresh.state.log_view().entries if e["kind"] == "model-key"]
    assert sorted(logged) == sorted(made)


def _race(replicas: list[KmsService], version: str) -> list[str | Exception]:
    start = threading.Barrier(len(replicas))
    outcomes: list[str | Exception] = []

    def create(replica: KmsService) -> None:
        start.wait()
        try:
            outcomes.append(replica.create_model_key(tiny_manifest("m", version)))
        except Exception as exc:  # the Conflict the loser must get
            outcomes.append(exc)

    threads = [threading.Thread(target=create, args=(r,)) for r in replicas]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes


def test_two_replicas_creating_a_key_for_one_model_version_cannot_both_win(
    etcd: EtcdCluster, key_file: Path, tmp_path: Path
) -> None:
    replicas = [etcd_replica(etcd, tmp_path / name, key_file) for name in ("a", "b")]
    for round_ in range(5):
        outcomes = _race(replicas, str(round_))
        winners = [o for o in outcomes if isinstance(o, str)]
        losers = [o for o in outcomes if isinstance(o, Exception)]
        assert len(winners) == 1, outcomes
        assert len(losers) == 1 and isinstance(losers[0], Conflict), outcomes
        assert f"already has a key ({winners[0]})" in str(losers[0])
    keys = replicas[0].state.model_keys()
    assert sorted(v["version"] for v in keys.values()) == [str(i) for i in range(5)]


def test_concurrent_changes_from_two_replicas_are_all_kept(
    etcd: EtcdCluster, key_file: Path, tmp_path: Path
) -> None:
    """Every lost compare-and-set is applied again: nothing one replica wrote is overwritten."""
    a = etcd_replica(etcd, tmp_path / "a", key_file)
    b = etcd_replica(etcd, tmp_path / "b", key_file)
    made: list[str] = []

    def create(replica: KmsService, name: str) -> None:
        for i in range(8):
            made.append(replica.create_model_key(tiny_manifest(name, str(i))))

    threads = [
        threading.Thread(target=create, args=(a, "ma")),
        threading.Thread(target=create, args=(b, "mb")),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(made) == 16
    assert set(a.state.model_keys()) == set(made)


def test_the_state_url_is_checked(tmp_path: Path) -> None:
    from trustserve.errors import ConfigError
    from trustserve.kms.etcd_store import open_etcd_state

    with pytest.raises(ConfigError, match="starts with etcd\\+https://"):
        open_etcd_state(f"etcd+http://127.0.0.1:2379{PREFIX}")
    with pytest.raises(ConfigError, match="needs cert=FILE"):
        open_etcd_state(f"etcd+https://127.0.0.1:2379{PREFIX}?ca=/x&key=/y")
    with pytest.raises(ConfigError, match="unknown parameters"):
        open_etcd_state("etcd+https://127.0.0.1:2379?ca=/x&cert=/y&key=/z&password=p")


def test_a_write_sent_again_after_a_lost_answer_is_recognised_as_its_own(
    etcd: EtcdCluster,
) -> None:
    """The same transaction twice (what a replica does when the answer to the first was
    lost): the second's compare fails, and the value read back in the same transaction
    shows the write was this replica's own, so it counts as done and is not applied twice.
    Another replica's value in its place is a lost compare-and-set."""
    from trustserve.kms.etcd_store import open_etcd_state

    store = open_etcd_state(etcd.url())
    key = f"{PREFIX}/scratch"
    mine = b"sealed bytes of this replica, unique by their nonce"
    assert store.client.put_if(key, 0, mine)
    assert store.client.put_if(key, 0, mine)  # sent again: already there
    assert store.client.get(key)[0] == mine
    assert not store.client.put_if(key, 0, b"another replica's bytes")
    _, revision = store.client.get(key)
    assert store.client.put_if(key, revision, b"next")
    assert not store.client.put_if(key, revision, mine)  # mine is no longer there
    store.client.close()


def test_replicas_started_at_once_on_an_empty_store_agree_on_one_root_key_and_identity(
    etcd: EtcdCluster, key_file: Path, tmp_path: Path
) -> None:
    """Each makes a root key and a first document; compare-and-set lets one of each in,
    and the others take the winners'."""
    start = threading.Barrier(3)
    started: list[KmsService | Exception] = []

    def run(name: str) -> None:
        start.wait()
        try:
            started.append(etcd_replica(etcd, tmp_path / name, key_file))
        except Exception as exc:
            started.append(exc)

    threads = [threading.Thread(target=run, args=(n,)) for n in ("a", "b", "c")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    replicas = [r for r in started if isinstance(r, KmsService)]
    assert len(replicas) == 3, started
    assert len({r.state.identity_public_key() for r in replicas}) == 1
    key_id = replicas[0].create_model_key(tiny_manifest("m", "1"))
    assert replicas[1].model_key(key_id) == replicas[2].model_key(key_id)
