"""A KMS replica joins a running one: the root key travels only between attested replicas.

A new replica (a fresh pod, an empty disk, no operator secret) is started with
``kms serve --state etcd+https://... --join URL[,URL...] --peer-policy FILE``. Both sides
check the other against the KMS trust policy (``--peer-policy``), mutually:

1. The joiner fetches the running replica's attestation bundle for a fresh nonce of its
   own and verifies it under the policy (the running replica is attested, and its
   evidence binds the KMS identity key).
2. It takes a challenge (``POST /v1/challenge``), makes an ephemeral X25519 key pair and
   evidence whose report data is ::

       SHA-512("trustserve-kms-join-v1\\0" || identity public key (32 bytes)
               || joiner's public key (32 bytes) || challenge nonce (32 bytes))

   and posts ``{"nonce", "public_key", "evidence"}`` to ``/v1/replicas/join``.
3. The running replica checks the challenge, then the evidence under *its* policy; only
   then does it HPKE-seal the root key to the joiner's key (the identity as associated
   data) and sign ``nonce || public key || sealed`` with the identity key. Each grant and
   each refusal goes into its audit log.
4. The joiner checks that signature with the attested identity, opens the root key, and
   opens the shared state with it: the state's identity must be the attested one, or the
   key is refused (so a host in the middle cannot hand it a root key of its own).

The joined replica keeps the root key in memory only: it joins again when it restarts.
When no replica runs, the operator secret (if the first replica had one) or owner
recovery (``trustserve.kms.recovery``) brings the key back.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from trustserve.attestation import (
    Evidence,
    EvidenceProvider,
    Policy,
    VerifierSources,
    verify_evidence,
)
from trustserve.crypto import hpke
from trustserve.crypto.keywrap import RootKey
from trustserve.encoding import b64, unb64
from trustserve.errors import (
    AttestationRefused,
    BadRequest,
    ConfigError,
    Forbidden,
    TrustserveError,
    Unavailable,
)
from trustserve.keyrelease.bundle import NONCE_SIZE, canonical, encode_nonce, verify_bundle
from trustserve.keyrelease.client import KmsClient, parse_kms_urls
from trustserve.kms import audit
from trustserve.transparency import entries

if TYPE_CHECKING:
    from trustserve.kms.service import KmsService

log = logging.getLogger("trustserve.kms")
_DOMAIN = b"trustserve-kms-join-v1\0"
JOIN_INFO = b"trustserve-kms-join-v1 root key"
REFUSED = "replica join refused"
NO_PEER_POLICY = "this KMS takes no replicas: it was started without --peer-policy"


def join_report_data(identity: bytes, public_key: bytes, nonce: bytes) -> bytes:
    """What the joiner's evidence binds (every part fixed-length)."""
    return hashlib.sha512(_DOMAIN + identity + public_key + nonce).digest()


def _signed_part(nonce: bytes, public_key: bytes, sealed: bytes) -> bytes:
    return _DOMAIN + nonce + public_key + sealed


# ---- the running replica's side ----


class Joins:
    """Grants the root key to replicas whose evidence meets ``policy`` (None: to nobody)."""

    def __init__(self, service: KmsService, policy: Policy | None) -> None:
        self.service = service
        self.policy = policy
        if policy is not None:  # whom the root key may go to is public (transparency log)
            service.log_policy("kms-trust-policy", policy.to_json())

    def grant(self, body: Any, peer: str) -> dict[str, Any]:
        """Check one join request; the sealed root key, or Forbidden (audited, with why)."""
        if not isinstance(body, dict):
            raise BadRequest('body must be {"nonce", "public_key", "evidence"}')
        nonce = unb64(body.get("nonce"), "nonce")
        public_key = hpke.check_public_key(unb64(body.get("public_key"), "public_key"))
        evidence = Evidence.from_json(body.get("evidence"))
        if len(nonce) != NONCE_SIZE:
            raise BadRequest(f"nonce must be {NONCE_SIZE} bytes (a challenge of this KMS)")
        service, now = self.service, self.service.clock()
        who = {
            "peer": peer,
            "evidence_kind": evidence.kind,
            "joiner_key": hashlib.sha256(public_key).hexdigest()[:16],
        }
        if self.policy is None:
            self._refuse("peer_policy", NO_PEER_POLICY, who)
        why = service.challenges.check(nonce, now)
        if why is not None:
            self._refuse("nonce", why, who)
        identity = service.state.identity_public_key()
        expected = join_report_data(identity, public_key, nonce)
        try:
            claims = verify_evidence(evidence, expected, self.policy, now, service.sources)
        except AttestationRefused as exc:
            self._refuse(exc.claim, exc.detail, who)
        except BadRequest as exc:
            self._refuse("evidence", str(exc), who)
        why = service.challenges.spend(nonce, now)
        if why is not None:
            self._refuse("nonce", why, who)
        sealed = service.state.root.seal_to(public_key, aad=identity, info=JOIN_INFO)
        signature = service.state.identity_key().sign(_signed_part(nonce, public_key, sealed))
        service.audit.append(
            "replica-join", tee=claims.tee, measurements=claims.measurements, **who
        )
        measured = canonical(claims.measurements).decode() if claims.measurements else None
        service.state.append_log(entries.replica_joined(evidence.kind, measured, peer, now))
        service.publish_log()
        log.warning("a KMS replica joined from %s (%s evidence)", peer, claims.tee)
        return {"sealed": b64(sealed), "signature": b64(signature)}

    def _refuse(self, claim: str, detail: str, who: dict[str, Any]) -> NoReturn:
        detail = audit.bounded(detail)
        log.warning("replica join refused: claim %s: %s", claim, detail)
        self.service.audit.append("replica-join-refused", claim=claim, detail=detail, **who)
        raise Forbidden(REFUSED if claim != "peer_policy" else f"{REFUSED}: {NO_PEER_POLICY}")


# ---- the joining replica's side ----


@dataclass(frozen=True)
class Joined:
    """What a joiner received: the root key and the identity it was attested under."""

    root: RootKey
    identity: bytes
    donor: str


def join(
    urls: str,
    policy: Policy,
    provider: EvidenceProvider,
    sources: VerifierSources | None = None,
    ca_file: Path | None = None,
) -> Joined:
    """Ask the running replicas at ``urls`` in turn for the root key (see the module doc).
    ConfigError naming each replica's answer when none grants it."""
    problems = []
    for url in parse_kms_urls(urls):
        try:
            with KmsClient(url, ca_file=ca_file) as client:
                return _join_at(client, policy, provider, sources or VerifierSources())
        except (Forbidden, Unavailable, BadRequest, ConfigError) as exc:
            problems.append(f"{url}: {exc}")
        except TrustserveError as exc:
            problems.append(f"{url}: {type(exc).__name__}: {exc}")
    raise ConfigError("could not join a running KMS replica: " + "; ".join(problems))


def _join_at(
    client: KmsClient, policy: Policy, provider: EvidenceProvider, sources: VerifierSources
) -> Joined:
    own_nonce = os.urandom(NONCE_SIZE)
    bundle = client.attestation_bundle(encode_nonce(own_nonce))
    try:
        verified = verify_bundle(bundle, policy, time.time(), sources, nonce=own_nonce)
    except (AttestationRefused, BadRequest) as exc:
        raise Forbidden(f"the running replica is not attested: {exc}") from None
    identity = verified.identity_public_key
    challenge = client.challenge()
    private, public = hpke.generate_keypair()
    evidence = provider.make(join_report_data(identity, public, challenge))
    body = {"nonce": b64(challenge), "public_key": b64(public), "evidence": evidence.to_json()}
    answer = client.join(body)
    try:
        sealed = unb64(answer.get("sealed"), "sealed")
        signature = unb64(answer.get("signature"), "signature")
        Ed25519PublicKey.from_public_bytes(identity).verify(
            signature, _signed_part(challenge, public, sealed)
        )
    except (AttributeError, BadRequest, InvalidSignature):
        raise Forbidden("the join answer is not signed by the attested KMS identity") from None
    raw = hpke.open(private, sealed, aad=identity, info=JOIN_INFO)
    return Joined(RootKey(raw), identity, client.url)


# ---- kms serve's options ----


def add_arguments(serve: Any) -> None:
    serve.add_argument(
        "--join",
        metavar="URL[,URL...]",
        help="running KMS replicas to receive the root key from by mutual attestation "
        "(needs --state and --peer-policy; then no operator secret is needed)",
    )
    serve.add_argument(
        "--peer-policy",
        type=Path,
        metavar="FILE",
        help="the KMS trust policy (YAML) a replica's evidence must meet, both for joining "
        "and for being joined (without it this KMS gives the root key to no one)",
    )
    serve.add_argument("--peer-ca", type=Path, metavar="FILE", help="CA of the replicas' TLS")


def peer_policy(args: Any) -> Policy | None:
    if args.peer_policy is None:
        return None
    policy = Policy.load(args.peer_policy)
    if policy.allow_simulated:
        log.warning(
            "INSECURE, DEVELOPMENT ONLY: the peer policy %s accepts SIMULATED evidence: "
            "whoever holds a listed sim platform key can receive the root key",
            args.peer_policy,
        )
    return policy


def join_from_args(
    args: Any, provider: EvidenceProvider | None, sources: VerifierSources
) -> Joined | None:
    """The root key from ``--join`` (None without it); ConfigError for a flag it needs."""
    if not args.join:
        return None
    if not args.state:
        raise ConfigError("--join needs --state (the replicas' shared store)")
    policy = peer_policy(args)
    if policy is None:
        raise ConfigError("--join needs --peer-policy (what the running replica must prove)")
    if provider is None:
        raise ConfigError("--join needs --provider (this replica's own evidence)")
    joined = join(args.join, policy, provider, sources, args.peer_ca)
    log.info("joined the KMS replica at %s", joined.donor)
    return joined
