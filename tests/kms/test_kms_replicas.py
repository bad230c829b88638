"""A client given several KMS replicas (``URL,URL``) moves on when one is gone, and still
believes only answers signed by the KMS identity it trusts.

Two KMS services on one state directory (what a shared volume gives; each over real TLS on
127.0.0.1) stand in for replicas that share their keys.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.attacks.kms_fixtures import https_server
from tests.kms.conftest import MakeService
from tests.support import free_port, tiny_manifest
from trustserve.attestation import EvidenceProvider, Policy
from trustserve.crypto.rootkey import KeyFileProtector, create_key_file
from trustserve.errors import ConfigError, Forbidden, Unavailable
from trustserve.keyrelease.client import KmsClient, parse_kms_urls
from trustserve.keyrelease.protocol import model_digest
from trustserve.keyrelease.trust import KmsTrust
from trustserve.kms.app import admin_token, create_app
from trustserve.kms.service import KmsService
from trustserve.tls import issue_local_ca


def test_a_client_moves_to_the_next_replica_and_gets_the_same_keys(
    make_service: MakeService,
    sim: EvidenceProvider,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    first, second = make_service(Policy.development()), make_service(Policy.development())
    manifest = tiny_manifest("m", "1")
    key_id = first.create_model_key(manifest)
    archives = {key_id: model_digest(manifest)}
    tls = issue_local_ca(tmp_path / "tls", ["127.0.0.1"])
    trust = KmsTrust(first.state.identity_public_key())
    with contextlib.ExitStack() as running:
        url_b = running.enter_context(https_server(create_app(second, sim), tls))
        a_down = contextlib.ExitStack()
        url_a = a_down.enter_context(https_server(create_app(first, sim), tls))
        with KmsClient(f"{url_a},{url_b}", ca_file=tls.ca, trust=trust) as client:
            before = client.release(sim, [key_id], archives)[key_id]
            assert client.url == url_a
            a_down.close()  # the replica it talks to is gone
            with caplog.at_level(logging.WARNING):
                after = client.release(sim, [key_id], archives)[key_id]
            assert client.url == url_b
            assert after == before == first.model_key(key_id)
            assert f"moving to the KMS replica at {url_b}" in caplog.text


def test_a_replica_that_is_another_kms_is_refused(
    make_service: MakeService, sim: EvidenceProvider, tmp_path: Path
) -> None:
    """The attacker runs their own KMS at one of the URLs (or answers for a dead replica):
    its answers are signed by another identity, and the client refuses them."""
    genuine = make_service(Policy.development())
    other_key = tmp_path / "other.key"
    create_key_file(other_key)
    impostor = KmsService(
        tmp_path / "other-home", KeyFileProtector(other_key), Policy.development()
    )
    tls = issue_local_ca(tmp_path / "tls", ["127.0.0.1"])
    trust = KmsTrust(genuine.state.identity_public_key())
    with contextlib.ExitStack() as running:
        dead = contextlib.ExitStack()
        url_a = dead.enter_context(https_server(create_app(genuine, sim), tls))
        url_b = running.enter_context(https_server(create_app(impostor, sim), tls))
        dead.close()
        with KmsClient(f"{url_a},{url_b}", ca_file=tls.ca, trust=trust) as client:
            with pytest.raises(Forbidden, match="not signed by the trusted KMS identity"):
                client.release(sim, ["broker"])  # a key every KMS has
            assert client.url == url_b  # it did reach the impostor, and believed nothing


def test_every_replica_unreachable_is_one_clear_503(tmp_path: Path) -> None:
    with (
        KmsClient(
            "https://127.0.0.1:9,https://127.0.0.1:7", trust=KmsTrust(secrets.token_bytes(32))
        ) as client,
        pytest.raises(Unavailable, match=r"and 1 other replica\(s\)"),
    ):
        client.attestation_bundle()


def test_replica_urls_are_each_checked() -> None:
    assert parse_kms_urls("https://a:1, https://b:2/,https://a:1") == [
        "https://a:1",
        "https://b:2",
    ]
    for bad, problem in [(" , ", "no KMS URL"), ("https://a,ftp://b", "must start with https")]:
        with pytest.raises(ConfigError, match=problem):
            parse_kms_urls(bad)


def test_threads_that_lose_the_same_replica_all_move_to_the_next_one(
    make_service: MakeService, sim: EvidenceProvider, tmp_path: Path
) -> None:
    """A frontend or worker shares one client between threads: each that finds the current
    replica gone moves on from that replica only, so the lot land on the next live one
    rather than each advancing once more (and some coming round to the dead one again)."""
    first, second = make_service(Policy.development()), make_service(Policy.development())
    tls = issue_local_ca(tmp_path / "tls", ["127.0.0.1"])
    trust = KmsTrust(first.state.identity_public_key())
    threads, barrier = 8, threading.Barrier(8)
    with contextlib.ExitStack() as running:
        url_b = running.enter_context(https_server(create_app(first, sim), tls))
        url_c = running.enter_context(https_server(create_app(second, sim), tls))
        dead = f"https://127.0.0.1:{free_port()}"  # nothing listens: refused at once
        with KmsClient(f"{dead},{url_b},{url_c}", ca_file=tls.ca, trust=trust) as client:
            client._http.get(url_b + "/healthz")  # TLS and the pool warmed up

            def one() -> str:
                barrier.wait()
                return str(client.attestation_bundle()["identity_public_key"])

            with ThreadPoolExecutor(threads) as pool:
                answers = list(pool.map(lambda _: one(), range(threads)))
            assert client.url == url_b
    assert len(set(answers)) == 1


def test_management_moves_on_from_a_replica_it_could_not_reach(
    make_service: MakeService, sim: EvidenceProvider, tmp_path: Path
) -> None:
    """A key provisioned or rotated is not sent twice, but a replica that refused the
    connection never got it: ``model encrypt`` and rotation go to the next replica."""
    service = make_service(Policy.development())
    tls = issue_local_ca(tmp_path / "tls", ["127.0.0.1"])
    with contextlib.ExitStack() as running:
        live = running.enter_context(https_server(create_app(service, sim), tls))
        dead = f"https://127.0.0.1:{free_port()}"
        token = admin_token(service)
        with KmsClient(f"{dead},{live}", ca_file=tls.ca, token=token) as client:
            key_id, key = client.provision_model_key(tiny_manifest("m", "1"))
            assert client.url == live
            client._current = 0  # as if the client had started at the dead one again
            before = {k.key_id for k in service.state.serving_keys(time.time()).keys}
            rotated = client.rotate_serving_key()
    assert service.model_key(key_id) == key
    assert rotated["key_id"] not in before
    assert rotated["key_id"] in {k.key_id for k in service.state.serving_keys(time.time()).keys}
