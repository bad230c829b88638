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

from trustserve.attestation import (
    Evidence,
    EvidenceProvider,
    Policy,
    VerifierSources,
    verify_evidence,
)
from trustserve.crypto.keys import sign_serving_keys
from trustserve.crypto.rootkey import KeyStore, Protector, protector_from_env
from trustserve.encoding import b64
from trustserve.errors import AttestationRefused, BadRequest, Forbidden, NotFound
from trustserve.kms import audit
from trustserve.kms.bundle import bundle_report_data, make_bundle
from trustserve.kms.release import (
    BROKER,
    CHALLENGE_TTL,
    SERVING,
    Challenges,
    ReleaseRequest,
    release_report_data,
    seal_keys,
)
from trustserve.kms.state import DAY, KmsState

log = logging.getLogger("trustserve.kms")
REFUSED = "key release refused"
BUNDLE_EVIDENCE_TTL = 60.0


class KmsService:
    def __init__(
        self,
        home: Path,
        protector: Protector,
        policy: Policy,
        *,
        keystore: KeyStore | None = None,
        clock: Callable[[], float] = time.time,
        challenge_ttl: float = CHALLENGE_TTL,
        serving_key_lifetime: float = 30 * DAY,
        rotation_grace: float = DAY,
        sources: VerifierSources | None = None,
    ) -> None:
        self.home = home
        self.policy = policy
        # where sgx/tdx collateral comes from: the KMS's configuration, never the requester
        self.sources = sources or VerifierSources()
        self.clock = clock
        self.rotation_grace = rotation_grace
        self.state = KmsState(home, protector, keystore, serving_key_lifetime)
        self.audit = audit.AuditLog(self.state.dir, self.state.identity_key())
        self.challenges = Challenges(challenge_ttl)
        self._bundle_lock = threading.Lock()
        self._bundle_cache: tuple[float, str, dict[str, Any]] | None = None

    @classmethod
    def from_env(
        cls, home: Path, policy: Policy, environ: Mapping[str, str] | None = None, **options: Any
    ) -> KmsService:
        """Unlocked with TRUSTSERVE_KMS_PASSPHRASE or TRUSTSERVE_KMS_KEY_FILE."""
        return cls(home, protector_from_env(environ), policy, **options)

    # ---- keys (owner side) ----

    def create_model_key(self, model: str, version: str) -> str:
        """The key id of the data key for ``model`` ``version`` (made on first call)."""
        before = set(self.state.model_keys())
        key_id = self.state.create_model_key(model, version, self.clock())
        if key_id not in before:
            self.audit.append("model-key-created", key_id=key_id, model=model, version=version)
        return key_id

    def provision_model_key(self, model: str, version: str) -> tuple[str, bytes]:
        """Key id and data key, for the model owner who encrypts an archive."""
        key_id = self.create_model_key(model, version)
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
        return key.public_json()

    # ---- release (worker side) ----

    def challenge(self, client: str = "") -> dict[str, Any]:
        """A fresh nonce; ``client`` (the caller's address) bounds how many it may hold open."""
        nonce, expires_at = self.challenges.issue(self.clock(), client)
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
        }
        why = self.challenges.consume(req.nonce, now)
        if why is not None:
            self._refuse("nonce", why, who)
        expected = release_report_data(req.nonce, req.public_key)
        try:
            claims = verify_evidence(req.evidence, expected, self.policy, now, self.sources)
        except AttestationRefused as exc:
            self._refuse(exc.claim, exc.detail, who)
        except BadRequest as exc:
            self._refuse("evidence", str(exc), who)
        try:
            keys = {key_id: self._key(key_id, now) for key_id in req.key_ids}
        except NotFound as exc:
            self.audit.append("release-failed", reason=str(exc), **who)
            raise
        self.audit.append("release", tee=claims.tee, measurements=claims.measurements, **who)
        log.info("released %s to %s evidence", ", ".join(req.key_ids), claims.tee)
        return seal_keys(req.public_key, req.nonce, keys)

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

    def attestation_bundle(self, provider: EvidenceProvider) -> dict[str, Any]:
        """KMS evidence binding its identity key and release policy, plus signed serving keys.

        The evidence is made again when older than ``BUNDLE_EVIDENCE_TTL`` seconds.
        """
        now = self.clock()
        identity = self.state.identity_key()
        public = identity.public_key().public_bytes_raw()
        policy = self.policy.to_json()
        with self._bundle_lock:
            cached = self._bundle_cache
            if (
                cached is None
                or now - cached[0] > BUNDLE_EVIDENCE_TTL
                or cached[1] != provider.name
            ):
                evidence = provider.make(bundle_report_data(public, policy)).to_json()
                self._bundle_cache = cached = (now, provider.name, evidence)
        signed = sign_serving_keys(identity, self.state.serving_keys(now, private=False), now)
        return make_bundle(public, Evidence.from_json(cached[2]), signed, policy)

    def verify_audit(self) -> audit.AuditReport:
        return audit.verify(self.state.dir, self.state.identity_public_key())
