"""A KMS replica joins a running one: the root key travels only between attested replicas.

A new replica (a fresh pod, an empty disk, no operator secret) is started with
``kms serve --state etcd+https://... --join URL[,URL...] --peer-policy FILE``. Both sides
check the other against the KMS trust policy (``--peer-policy``), mutually:

1. The joiner fetches the running replica's attestation bundle for a fresh nonce of its
   own and verifies it under the policy (the running replica is attested, and its
   evidence binds the KMS identity key).
2. It takes a challenge (``POST /v1/challenge``), makes an ephemeral X25519 key pair and
   evidence whose report data is ::

       SHA-512("trustserve-kms-join-v2\\0" || identity public key (32 bytes)
               || joiner's public key (32 bytes) || challenge nonce (32 bytes)
               || SHA-256(canonical release policy) || SHA-256(canonical peer policy))

   and posts ``{"nonce", "public_key", "evidence", "release_policy", "peer_policy"}``
   (the policies it will enforce, as ``Policy.to_json``) to ``/v1/replicas/join``.
3. The running replica checks the challenge, then the evidence under *its* policy, then
   that the joiner's release and peer policies admit no more than its own
   (``trustserve.attestation.policy.rules``: the joiner's command line and policy files
   come from its host, which is untrusted, and the holder of the root key must be no
   weaker than the one that gives it); only then does it HPKE-seal the root key to the
   joiner's key (the identity as associated data) and sign
   ``nonce || public key || state version (8 bytes) || sealed`` with the identity key,
   the state version being the latest it sees. Each grant and each refusal goes into
   its audit log.
4. The joiner checks that signature with the attested identity, opens the root key, and
   opens the shared state with it: the state's identity must be the attested one, or the
   key is refused (so a host in the middle cannot hand it a root key of its own), and
   its version at least the donor's (an empty disk has seen none: without this a host
   could hand it the document from before a serving-key rotation).

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
from trustserve.attestation.policy.rules import check_release_policy
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
from trustserve.kms import audit
from trustserve.kms.budgets import FreshEvidenceBudgets, FreshEvidenceOptions
from trustserve.kms.peers import Requester
from trustserve.transparency import entries

if TYPE_CHECKING:
    from trustserve.keyrelease.client import KmsClient
    from trustserve.kms.service import KmsService

log = logging.getLogger("trustserve.kms")
_DOMAIN = b"trustserve-kms-join-v2\0"
JOIN_INFO = b"trustserve-kms-join-v2 root key"
REFUSED = "replica join refused"
NO_PEER_POLICY = "this KMS takes no replicas: it was started without --peer-policy"
FIELDS = ("nonce", "public_key", "evidence", "release_policy", "peer_policy")
# replicas join rarely (when one starts), and each attempt costs an evidence verification
# and an audit line: a few per client, a few a second in all
JOIN_BUDGET = FreshEvidenceOptions(per_client_rate=0.1, per_client_burst=3, total_rate=2.0)


def join_report_data(
    identity: bytes,
    public_key: bytes,
    nonce: bytes,
    release_policy: dict[str, Any],
    peer_policy: dict[str, Any],
) -> bytes:
    """What the joiner's evidence binds (every part fixed-length)."""
    policies = [hashlib.sha256(canonical(p)).digest() for p in (release_policy, peer_policy)]
    return hashlib.sha512(b"".join([_DOMAIN, identity, public_key, nonce, *policies])).digest()


def no_weaker(theirs: dict[str, Any], mine: Policy) -> None:
    """Return if the policy ``theirs`` admits nothing ``mine`` does not; else
    AttestationRefused naming the rule. A client leaves the choice of code to the KMS
    when it names no measurements; here no measurements admit no code, so none may be
    added."""
    if not mine.measurements and Policy.from_mapping(theirs).measurements:
        raise AttestationRefused(
            "release_policy.measurements", "this KMS admits no code; the joiner would admit some"
        )
    check_release_policy(theirs, mine)


def _signed_part(nonce: bytes, public_key: bytes, state_version: int, sealed: bytes) -> bytes:
    return _DOMAIN + nonce + public_key + state_version.to_bytes(8, "big") + sealed


# ---- the running replica's side ----


class Joins:
    """Grants the root key to replicas whose evidence meets ``policy`` (None: to nobody)."""

    def __init__(
        self,
        service: KmsService,
        policy: Policy | None,
        budget: FreshEvidenceOptions = JOIN_BUDGET,
        allow_sim_any: bool = False,
    ) -> None:
        self.service = service
        checked = None if policy is None else check_peer_policy(policy, "given", allow_sim_any)
        self.policy = checked
        self.budgets = FreshEvidenceBudgets(budget, what="join attempts", advice="")
        if checked is not None:  # whom the root key may go to is public (transparency log)
            service.log_policy("kms-trust-policy", checked.to_json())

    def grant(self, body: Any, peer: str, requester: Requester | None = None) -> dict[str, Any]:
        """Check one join request; the sealed root key, or Forbidden (audited, with why).
        Past the budget of ``requester`` (default: ``peer``), 429 or 503 before anything
        is verified or audited."""
        self.budgets.take(requester or Requester(peer))  # before any work on the body
        if not isinstance(body, dict):
            raise BadRequest(f"body must be {{{', '.join(FIELDS)}}}")
        nonce = unb64(body.get("nonce"), "nonce")
        public_key = hpke.check_public_key(unb64(body.get("public_key"), "public_key"))
        evidence = Evidence.from_json(body.get("evidence"))
        policies: dict[str, Any] = {n: body.get(n) for n in ("release_policy", "peer_policy")}
        for name, value in policies.items():
            try:
                Policy.from_mapping(value)  # what is hashed below is a policy, nothing else
            except ConfigError as exc:
                raise BadRequest(f"{name} (the policy the joiner enforces): {exc}") from None
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
        expected = join_report_data(identity, public_key, nonce, **policies)
        try:
            claims = verify_evidence(evidence, expected, self.policy, now, service.sources)
        except AttestationRefused as exc:
            self._refuse(exc.claim, exc.detail, who)
        except BadRequest as exc:
            self._refuse("evidence", str(exc), who)
        # attested code enforces what it is configured with, and its host configures it
        for name, mine in (("release_policy", service.policy), ("peer_policy", self.policy)):
            try:
                no_weaker(policies[name], mine)
            except AttestationRefused as exc:
                rule = exc.claim.removeprefix("release_policy")
                self._refuse(f"joiner_{name}{rule}", exc.detail, who)
        why = service.challenges.spend(nonce, now)
        if why is not None:
            self._refuse("nonce", why, who)
        sealed = service.state.root.seal_to(public_key, aad=identity, info=JOIN_INFO)
        version = service.state.version()  # the joiner has seen none: it takes this one
        signed = _signed_part(nonce, public_key, version, sealed)
        signature = service.state.identity_key().sign(signed)
        service.audit.append(
            "replica-join", tee=claims.tee, measurements=claims.measurements, **who
        )
        measured = canonical(claims.measurements).decode() if claims.measurements else None
        service.state.append_log(entries.replica_joined(evidence.kind, measured, peer, now))
        service.publish_log()
        log.warning("a KMS replica joined from %s (%s evidence)", peer, claims.tee)
        return {"sealed": b64(sealed), "signature": b64(signature), "state_version": version}

    def _refuse(self, claim: str, detail: str, who: dict[str, Any]) -> NoReturn:
        detail = audit.bounded(detail)
        log.warning("replica join refused: claim %s: %s", claim, detail)
        self.service.audit.append("replica-join-refused", claim=claim, detail=detail, **who)
        raise Forbidden(REFUSED if claim != "peer_policy" else f"{REFUSED}: {NO_PEER_POLICY}")


# ---- the joining replica's side ----


@dataclass(frozen=True)
class Joined:
    """What a joiner received: the root key, the identity it was attested under, and the
    state version the donor had seen (an older state is a rollback)."""

    root: RootKey
    identity: bytes
    donor: str
    state_version: int


def join(
    urls: str,
    policy: Policy,
    provider: EvidenceProvider,
    release: Policy,
    sources: VerifierSources | None = None,
    ca_file: Path | None = None,
) -> Joined:
    """Ask the running replicas at ``urls`` in turn for the root key (see the module doc):
    ``policy`` is this replica's peer policy, ``release`` its release policy (both sent,
    bound by its evidence). ConfigError naming each replica's answer when none grants it."""
    problems = []
    from trustserve.keyrelease.client import KmsClient, parse_kms_urls  # not in kms serve's app

    for url in parse_kms_urls(urls):
        try:
            with KmsClient(url, ca_file=ca_file) as client:
                return _join_at(client, policy, provider, sources or VerifierSources(), release)
        except (Forbidden, Unavailable, BadRequest, ConfigError) as exc:
            problems.append(f"{url}: {exc}")
        except TrustserveError as exc:
            problems.append(f"{url}: {type(exc).__name__}: {exc}")
    raise ConfigError("could not join a running KMS replica: " + "; ".join(problems))


def _join_at(
    client: KmsClient,
    policy: Policy,
    provider: EvidenceProvider,
    sources: VerifierSources,
    release: Policy,
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
    policies = {"release_policy": release.to_json(), "peer_policy": policy.to_json()}
    evidence = provider.make(join_report_data(identity, public, challenge, **policies))
    body = {
        "nonce": b64(challenge),
        "public_key": b64(public),
        "evidence": evidence.to_json(),
        **policies,
    }
    answer = client.join(body)
    try:
        sealed = unb64(answer.get("sealed"), "sealed")
        signature = unb64(answer.get("signature"), "signature")
        version = answer.get("state_version")
        if type(version) is not int or not 0 <= version < 2**63:
            raise BadRequest("state_version must be a whole number")
        Ed25519PublicKey.from_public_bytes(identity).verify(
            signature, _signed_part(challenge, public, version, sealed)
        )
    except (AttributeError, BadRequest, InvalidSignature):
        raise Forbidden("the join answer is not signed by the attested KMS identity") from None
    raw = hpke.open(private, sealed, aad=identity, info=JOIN_INFO)
    return Joined(RootKey(raw), identity, client.url, version)


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
    serve.add_argument(
        "--peer-allow-sim-any",
        action="store_true",
        help="development: let a --peer-policy admit SIMULATED evidence of any sim platform "
        "key (any process that reaches the KMS receives the root key)",
    )


def peer_policy(args: Any) -> Policy | None:
    """``--peer-policy`` (None without it); ConfigError for one that admits any sim key.
    (``kms serve`` prints the development banner for one that lists sim keys.)"""
    if args.peer_policy is None:
        return None
    loaded = Policy.load(args.peer_policy)
    return check_peer_policy(loaded, str(args.peer_policy), args.peer_allow_sim_any)


def check_peer_policy(policy: Policy, where: str, allow_sim_any: bool = False) -> Policy:
    """``policy``, unless it admits simulated evidence of ANY sim platform key (the sim
    verifier's empty key list): then any process that reaches the KMS could sign such
    evidence with a key of its own and receive the root key. ``allow_sim_any`` (a
    development cluster whose pods' sim keys are not known beforehand) takes it all the
    same; ``kms serve`` says so loudly."""
    if policy.allow_simulated and not policy.sim_platform_keys and not allow_sim_any:
        raise ConfigError(
            f"the peer policy {where} admits SIMULATED evidence of any sim platform key: "
            "any process could receive the root key; list the sim platform keys of the "
            "homes that may hold it (sim_platform_keys)"
        )
    return policy


def join_from_args(
    args: Any,
    peers: Policy | None,
    release: Policy,
    provider: EvidenceProvider | None,
    sources: VerifierSources,
) -> Joined | None:
    """The root key from ``--join`` (None without it); ConfigError for a flag it needs.
    ``peers`` and ``release``: the policies this replica will enforce, loaded once (the
    running replica checks the very ones it is sent)."""
    if not args.join:
        return None
    if not args.state:
        raise ConfigError("--join needs --state (the replicas' shared store)")
    if peers is None:
        raise ConfigError("--join needs --peer-policy (what the running replica must prove)")
    if provider is None:
        raise ConfigError("--join needs --provider (this replica's own evidence)")
    joined = join(args.join, peers, provider, release, sources, args.peer_ca)
    log.info("joined the KMS replica at %s", joined.donor)
    return joined
