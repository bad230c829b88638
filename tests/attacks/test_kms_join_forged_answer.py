"""Attack: a host in the middle of a replica's join (it holds the KMS's TLS certificate,
which lives on the host's disk) relays the real replica's attestation bundle and
challenge, then answers the join itself with a root key of its own: the joining replica
would run on a key the attacker knows. The answer must be signed by the attested KMS
identity, which only a holder of the real root key can do, so the joiner refuses it.

And: a join request replayed (its challenge already spent) gets nothing.

In process: the KMS side is a real ``KmsService`` on its files with the real ``Joins``;
the network between the two sides is this test (the attacker's position).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.attacks.join_fixtures import service, sim_policy
from trustserve.attestation import Policy, VerifierSources, make_provider
from trustserve.crypto.keywrap import RootKey
from trustserve.encoding import b64, unb64
from trustserve.errors import BadRequest, Forbidden
from trustserve.keyrelease.bundle import parse_nonce
from trustserve.kms import join
from trustserve.kms.service import KmsService

__all__ = ["service"]  # the fixture


class Relay:
    """What the joiner's ``KmsClient`` talks to: the real KMS, or the attacker in between."""

    url = "https://kms-0.example:8443"

    def __init__(self, service: KmsService, forge: bool) -> None:
        self.service, self.forge = service, forge
        self.requests: list[dict[str, Any]] = []
        self.provider = make_provider("sim", service.home)

    def attestation_bundle(self, nonce: str | None = None) -> dict[str, Any]:
        return self.service.attestation_bundle(self.provider, parse_nonce(nonce))

    def challenge(self) -> bytes:
        return unb64(self.service.challenge()["nonce"], "nonce")

    def join(self, body: dict[str, Any]) -> dict[str, Any]:
        self.requests.append(body)
        if not self.forge:
            return join.Joins(self.service, self.policy).grant(body, "127.0.0.9")
        own_root, _ = RootKey.generate()  # the attacker's key, sealed to the joiner
        identity = self.service.state.identity_public_key()
        recipient = unb64(body["public_key"], "public_key")
        sealed = own_root.seal_to(recipient, aad=identity, info=join.JOIN_INFO)
        signature = Ed25519PrivateKey.generate().sign(sealed)  # not the KMS identity's
        return {"sealed": b64(sealed), "signature": b64(signature)}

    policy: Policy | None = None


@pytest.fixture
def peer_policy(tmp_path: Path, service: KmsService) -> Policy:
    """Admits the sim evidence of the running replica's home and the joiner's."""
    return sim_policy(service.home, tmp_path / "joiner")


def _join(relay: Relay, policy: Policy, tmp_path: Path) -> join.Joined:
    provider = make_provider("sim", tmp_path / "joiner")
    release = relay.service.policy  # the joiner releases as strictly as the running replica
    return join._join_at(relay, policy, provider, VerifierSources(), release)  # type: ignore[arg-type]


def test_a_root_key_from_a_host_in_the_middle_is_refused(
    service: KmsService, peer_policy: Policy, tmp_path: Path
) -> None:
    relay = Relay(service, forge=True)
    with pytest.raises(Forbidden, match="not signed by the attested KMS identity"):
        _join(relay, peer_policy, tmp_path)


def test_the_real_replica_s_answer_opens_the_state(
    service: KmsService, peer_policy: Policy, tmp_path: Path
) -> None:
    relay = Relay(service, forge=False)
    relay.policy = peer_policy
    joined = _join(relay, peer_policy, tmp_path)
    assert joined.identity == service.state.identity_public_key()
    entry = json.loads(service.state.path.read_bytes())["broker"]  # wrapped under the root key
    wrapped = unb64(entry["wrapped"], "wrapped")
    assert joined.root.unwrap(wrapped, "broker", entry["key_id"]) == service.state.broker_key()[1]


def test_a_replayed_join_request_gets_nothing(
    service: KmsService, peer_policy: Policy, tmp_path: Path
) -> None:
    relay = Relay(service, forge=False)
    relay.policy = peer_policy
    _join(relay, peer_policy, tmp_path)
    with pytest.raises(Forbidden, match="replica join refused"):
        join.Joins(service, peer_policy).grant(relay.requests[0], "127.0.0.9")
    refusals = [
        json.loads(line)
        for line in (service.state.dir / "audit.jsonl").read_text().splitlines()
        if '"replica-join-refused"' in line
    ]
    assert [r["claim"] for r in refusals] == ["nonce"]


def test_a_bad_public_key_is_refused_before_anything_is_sealed(
    service: KmsService, peer_policy: Policy
) -> None:
    body = {"nonce": b64(bytes(32)), "public_key": b64(bytes(32)), "evidence": {}}
    with pytest.raises(BadRequest, match="public"):
        join.Joins(service, peer_policy).grant(body, "127.0.0.9")
