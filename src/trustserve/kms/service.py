"""The key service: keys under the root key, attested key release, and the audit log.

Construct it in-process (``trustserve up`` does) with the home directory, the
operator secret (a ``Protector``) and the release ``Policy``; call it directly,
or serve it with ``trustserve.kms.app.create_app``.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NoReturn

from trustserve.archive import Manifest
from trustserve.attestation import (
    EvidenceProvider,
    Policy,
    VerifierSources,
    verify_evidence,
)
from trustserve.crypto.keys import sign_serving_keys
from trustserve.crypto.keywrap import RootKey
from trustserve.crypto.rootkey import KeyStore, Protector, protector_from_env
from trustserve.encoding import b64, unb64
from trustserve.errors import (
    AttestationRefused,
    BadRequest,
    ConfigError,
    Conflict,
    Forbidden,
    NotFound,
)
from trustserve.keyrelease.bundle import bundle_report_data, canonical
from trustserve.keyrelease.protocol import (
    BROKER,
    CHALLENGE_TTL,
    DEFAULT_LEASE,
    MAX_LEASE,
    SERVING,
    ReleaseRequest,
    model_digest,
)
from trustserve.kms import audit
from trustserve.kms.budgets import FreshEvidenceBudgets, FreshEvidenceOptions
from trustserve.kms.bundle import make_bundle, model_list, transparency_field
from trustserve.kms.challenges import Challenges
from trustserve.kms.peers import Requester
from trustserve.kms.release import seal_keys
from trustserve.kms.state import DAY, KmsState
from trustserve.kms.store import StateStore
from trustserve.kms.witnesses import Witnesses
from trustserve.transparency import entries
from trustserve.transparency import log as tlog
from trustserve.transparency.note import Signer

log = logging.getLogger("trustserve.kms")
REFUSED = "key release refused"
BUNDLE_EVIDENCE_TTL = 60.0


class KmsService:
    def __init__(
        self,
        home: Path,
        protector: Protector | None,
        policy: Policy,
        *,
        keystore: KeyStore | None = None,
        clock: Callable[[], float] = time.time,
        challenge_ttl: float = CHALLENGE_TTL,
        serving_key_lifetime: float = 30 * DAY,
        rotation_grace: float = DAY,
        key_lease: float = DEFAULT_LEASE,
        sources: VerifierSources | None = None,
        fresh_evidence: FreshEvidenceOptions | None = None,
        state_store: StateStore | None = None,
        root: RootKey | None = None,
        state_version: int = 0,
        witnesses: Witnesses | None = None,
    ) -> None:
        self.home = home
        self.witnesses = witnesses or Witnesses([], 0)
        self.policy = policy
        # where sgx/tdx collateral comes from: the KMS's configuration, never the requester
        self.sources = sources or VerifierSources()
        self.clock = clock
        self.rotation_grace = rotation_grace
        if not 0 < key_lease <= MAX_LEASE:  # also refuses NaN
            raise ConfigError(
                f"the key lease must be more than 0 and at most {MAX_LEASE:.0f} seconds, "
                f"not {key_lease}"
            )
        # how long a released set may be used without renewal: the bound on how long a
        # worker the KMS cannot reach (or no longer admits) keeps a rotated-out serving key
        self.key_lease = key_lease
        # state_store: the replicas' shared store (etcd); default the files under home
        self.state = KmsState(
            home, protector, keystore, serving_key_lifetime, state_store, root, state_version
        )
        self.audit = audit.AuditLog(self.state.dir, self.state.identity_key())
        self.challenges = Challenges(challenge_ttl)
        legacy = [k for k, v in self.state.model_keys().items() if not v.get("digest")]
        if legacy:
            log.warning(
                "model keys %s have no recorded archive digest (made by an older version) "
                "and are never released: re-encrypt those models as a new version",
                ", ".join(sorted(legacy)),
            )
        self._bundle_lock = threading.Lock()
        self._bundle_cache: tuple[float, bytes, dict[str, Any]] | None = None
        self.fresh_evidence = FreshEvidenceBudgets(fresh_evidence or FreshEvidenceOptions())

    @classmethod
    def from_env(
        cls, home: Path, policy: Policy, environ: Mapping[str, str] | None = None, **options: Any
    ) -> KmsService:
        """Unlocked with TRUSTSERVE_KMS_PASSPHRASE or TRUSTSERVE_KMS_KEY_FILE."""
        return cls(home, protector_from_env(environ), policy, **options)

    # ---- keys (owner side) ----

    def create_model_key(self, manifest: Manifest) -> str:
        """The key id of a new data key for the archive of ``manifest`` (audited).

        Conflict (audited too) if that model version has a key already: existing
        keys never leave the KMS except by attested release.
        """
        digest = model_digest(manifest)
        what = {"model": manifest.name, "version": manifest.version, "digest": digest}
        try:
            key_id = self.state.create_model_key(
                manifest.name, manifest.version, digest, self.clock()
            )
        except (Conflict, BadRequest) as exc:
            self.audit.append("model-key-refused", reason=str(exc), **what)
            raise
        self.audit.append("model-key-created", key_id=key_id, **what)
        self.publish_log()
        return key_id

    def provision_model_key(self, manifest: Manifest) -> tuple[str, bytes]:
        """A fresh key id and data key, for the model owner who encrypts this archive."""
        key_id = self.create_model_key(manifest)
        return key_id, self.state.model_key(key_id)

    def model_key(self, key_id: str) -> bytes:
        return self.state.model_key(key_id)

    def serving_public_keys(self) -> list[dict[str, Any]]:
        keys = self.state.serving_keys(self.clock(), private=False)
        return [k.public_json() for k in keys.keys]

    def rotate_serving_key(self) -> dict[str, Any]:
        key = self.state.rotate_serving_key(self.clock(), self.rotation_grace)
        self.audit.append("serving-key-rotated", key_id=key.key_id)
        with self._bundle_lock:
            self._bundle_cache = None
        self.publish_log()
        return key.public_json()

    # ---- the transparency log (trustserve.transparency.log, kms.witnesses) ----

    def log_signer(self) -> Signer:
        return tlog.log_signer(self.state.identity_key())

    def publish_log(self) -> None:
        """Submit the current checkpoint to the witnesses (after each append)."""
        self.witnesses.publish(self.state, self.log_signer())

    def log_release_policy(self) -> bool:
        """Log the release policy in force unless it is the newest one logged (True if so)."""
        return self.log_policy("release-policy", self.policy.to_json())

    def log_policy(self, kind: str, policy: dict[str, Any]) -> bool:
        """Log ``policy`` as a ``kind`` entry (``release-policy``, ``kms-trust-policy``)
        unless it is the newest one of that kind logged; True if it was logged now."""
        digest = entries.policy_digest(policy)

        def logged(state: dict[str, Any]) -> bool:
            last = tlog.latest(state, kind)
            return last is not None and last[1].get("sha256") == digest

        if logged(self.state.read()):  # the common case: no write at all
            return False

        def change(state: dict[str, Any]) -> bool:
            if logged(state):
                return False
            build = entries.release_policy if kind == "release-policy" else entries.kms_trust_policy
            tlog.append(state, build(policy, self.clock()))
            return True

        appended = self.state.update(change)
        if appended:
            log.info("transparency log: %s %s logged", kind, digest[:16])
            self.publish_log()
        return appended

    def declare_release(self, fields: dict[str, Any]) -> dict[str, int]:
        """Append a ``release-declared`` entry of ``fields`` (``kms.declare``) in one state
        write and publish it to the witnesses: its index and the log's size after it."""
        entry = entries.release_declared(self.clock(), **fields)
        index, size = self.state.update(
            lambda state: (tlog.append(state, entry), len(tlog.section(state)["entries"]))
        )
        self.audit.append("release-declared", index=index, digest=fields.get("digest"))
        log.info("transparency log: release declared at index %d", index)
        self.publish_log()
        return {"index": index, "size": size}

    def commit_audit_head(self) -> bool:
        """Log the audit log's head unless it is the one logged last (True if logged):
        the audit log then cannot be rolled back past it unseen."""
        seq, digest = self.audit.head()
        last = tlog.latest(self.state.read(), "audit-head")
        if seq == 0 or (last is not None and last[1].get("hash") == digest):
            return False
        self.state.append_log(entries.audit_head(seq, digest, self.clock()))
        self.publish_log()
        return True

    def commit_audit_heads(self, interval: float, stop: threading.Event) -> None:
        """``commit_audit_head`` every ``interval`` seconds until ``stop`` is set (a thread)."""
        while not stop.wait(interval):
            try:
                self.commit_audit_head()
            except Exception:  # a store or witness hiccup: try again next time
                log.exception("committing the audit head to the transparency log failed")

    def start_log(self, recovered_from_rollback: bool = False) -> None:
        """At start-up: check the state against the witnesses (a rollback refuses to
        start), then log the release policy if it changed."""
        self.witnesses.check_startup(self.state, self.log_signer(), recovered_from_rollback)
        self.log_release_policy()

    # ---- release (worker side) ----

    def challenge(self) -> dict[str, Any]:
        """A fresh nonce, good for one release (``trustserve.kms.challenges``)."""
        nonce, expires_at = self.challenges.issue(self.clock())
        return {"nonce": b64(nonce), "expires_at": expires_at}

    def release(self, request: ReleaseRequest | Any) -> dict[str, Any]:
        """Verify the requester's evidence and seal the keys to its ephemeral key.

        Refusals raise Forbidden("key release refused") and log the failed claim
        here only; an unknown key id raises NotFound.
        """
        req = request if isinstance(request, ReleaseRequest) else ReleaseRequest.from_json(request)
        now = self.clock()
        who = {
            "evidence_kind": req.evidence.kind,
            "requester_key": hashlib.sha256(req.public_key).hexdigest()[:16],
            "key_ids": list(req.key_ids),
            "archives": dict(req.archives),
        }
        why = self.challenges.check(req.nonce, now)
        if why is not None:
            self._refuse("nonce", why, who)
        expected = req.report_data
        try:
            claims = verify_evidence(req.evidence, expected, self.policy, now, self.sources)
        except AttestationRefused as exc:
            self._refuse(exc.claim, exc.detail, who)
        except BadRequest as exc:
            self._refuse("evidence", str(exc), who)
        why = self.challenges.spend(req.nonce, now)  # the first release that passed wins
        if why is not None:
            self._refuse("nonce", why, who)
        try:
            self._check_archives(req, who)
            keys = {key_id: self._key(key_id, now) for key_id in req.key_ids}
        except NotFound as exc:
            self.audit.append("release-failed", reason=str(exc), **who)
            raise
        until = now + self.key_lease
        self.audit.append(
            "release", tee=claims.tee, measurements=claims.measurements, lease_until=until, **who
        )
        log.info("released %s to %s evidence", ", ".join(req.key_ids), claims.tee)
        identity = self.state.identity_key()
        return seal_keys(identity, req.public_key, req.nonce, keys, now, self.key_lease)

    def _check_archives(self, req: ReleaseRequest, who: dict[str, Any]) -> None:
        """A model key goes only to a requester holding the archive it was provisioned for."""
        for key_id in req.key_ids:
            if key_id in (SERVING, BROKER):
                continue
            recorded = self.state.model_digest(key_id)
            held = req.archives.get(key_id)
            if recorded is None:
                self._refuse("archive", f"{key_id} has no recorded archive digest", who)
            if held != recorded:
                self._refuse(
                    "archive",
                    f"{key_id} is provisioned for archive {recorded}, requester holds {held}",
                    who,
                )

    def _key(self, key_id: str, now: float) -> bytes:
        if key_id == SERVING:
            return self.state.serving_keys(now).to_bytes()
        if key_id == BROKER:
            return self.state.broker_key()[1]
        return self.state.model_key(key_id)

    def _refuse(self, claim: str, detail: str, who: dict[str, Any]) -> NoReturn:
        detail = audit.bounded(detail)
        log.warning("key release refused: claim %s: %s", claim, detail)
        self.audit.append("refusal", claim=claim, detail=detail, **who)
        raise Forbidden(REFUSED)

    # ---- attestation bundle (for clients, issue 5) ----

    def attestation_bundle(
        self,
        provider: EvidenceProvider,
        nonce: bytes | None = None,
        requester: Requester | None = None,
    ) -> dict[str, Any]:
        """KMS evidence binding its identity key, release policy, signed serving keys and
        model list (see ``trustserve.keyrelease.bundle``), and the client's ``nonce`` if given.

        Without a nonce the bundle is made again when older than ``BUNDLE_EVIDENCE_TTL``
        seconds or when the keys or models changed; with one, always, within the budget
        of ``requester`` (``trustserve.kms.budgets``; an in-process caller is one client).
        """
        now = self.clock()
        identity = self.state.identity_key()
        public = identity.public_key().public_bytes_raw()
        policy = self.policy.to_json()
        keys = self.state.serving_keys(now, private=False)
        models = model_list(self.state.model_keys())
        self.log_release_policy()  # the policy a bundle names is always a logged one
        view, signer = self.state.log_view(), tlog.log_signer(identity)
        ids = [k.key_id for k in keys.keys]
        tlog_field = transparency_field(view, signer, entries.policy_digest(policy), ids)
        checkpoint = view.checkpoint().text()
        what = canonical([provider.name, [k.public_json() for k in keys.keys], models, checkpoint])

        def fresh() -> dict[str, Any]:
            signed = sign_serving_keys(identity, keys, now)
            payload = unb64(signed["payload"], "payload")
            data = bundle_report_data(public, policy, payload, models, nonce, checkpoint)
            evidence = provider.make(data)
            return make_bundle(public, evidence, signed, policy, models, nonce, tlog_field)

        if nonce is not None:
            self.fresh_evidence.take(requester or Requester(""))
            return fresh()
        with self._bundle_lock:
            cached = self._bundle_cache
            if cached is None or now - cached[0] > BUNDLE_EVIDENCE_TTL or cached[1] != what:
                self._bundle_cache = cached = (now, what, fresh())
            # the same checkpoint, with the cosignatures collected since (not bound: each
            # verifies on its own)
            return {**cached[2], "transparency": tlog_field}

    def verify_audit(self) -> audit.AuditReport:
        """The audit log checked against this KMS's own identity (its private key's half)."""
        identity = self.state.identity_key().public_key().public_bytes_raw()
        return audit.verify(self.state.dir, identity)
