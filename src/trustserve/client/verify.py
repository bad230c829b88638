"""What a client checks before it seals anything: the attestation bundle, against its own policy.

1. The KMS evidence satisfies ``ClientPolicy.kms`` and binds the identity key, the
   release policy, the signed serving-key list, the model list and, when the client
   sent one, its nonce (``trustserve.keyrelease.bundle``).
2. The release policy admits no worker ``ClientPolicy.workers`` would refuse
   (``trustserve.attestation.policy.rules``).
3. The signed key list is at most ``max_bundle_age_s`` old, so a key list replayed
   after a rotation stops working within that bound even without a nonce.
4. Each usable key's OHTTP key config (``ohttp_key_id``, ``ohttp_key_config``, signed
   with the key) decodes and names that very key: an OHTTP request is encapsulated only
   to the current key's config, the one the attested KMS released for every client
   (``ServingTarget.attested_ohttp_config``).

5. With a witness policy (``ClientPolicy.transparency``, the ``transparency:`` section of
   the client's policy file), the bundle's transparency checkpoint and proofs
   (``trustserve.transparency.verify``): signed by the KMS identity, cosigned by a quorum
   of the client's witnesses, no rollback or fork from the largest checkpoint this client
   stored, and the release policy, serving keys and models the logged ones. Without one
   the log is not checked, and the client says so once.

The model list then says which model versions an attested worker can serve; a
sealed request names the version resolved from it (``ServingTarget.resolve``).
"""

from __future__ import annotations

import base64
import logging
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from trustserve.attestation import Claims, Policy, VerifierSources
from trustserve.attestation.policy.rules import check_release_policy
from trustserve.crypto.ohttp import KeyConfig
from trustserve.errors import AttestationRefused, BadRequest, ConfigError
from trustserve.keyrelease.bundle import NONCE_SIZE, VerifiedBundle, verify_bundle
from trustserve.transparency.note import Checkpoint
from trustserve.transparency.store import CheckpointStore
from trustserve.transparency.verify import ConsistencyProof, Relied, verify_transparency
from trustserve.transparency.witness_policy import WitnessPolicy

log = logging.getLogger(__name__)

CLOCK_SKEW_S = 30.0
DEFAULT_MAX_BUNDLE_AGE_S = 300.0


@dataclass(frozen=True)
class ClientPolicy:
    """``kms``: which KMS evidence to accept. ``workers``: the most the KMS release policy
    may admit (strict by default: no simulated or debug TEE, TCB ``UpToDate`` only, no
    advisory, no TPM AK; any measurement set, unless it names some). ``max_bundle_age_s``:
    the oldest signed serving-key list accepted. ``send_nonce``: ask for evidence bound to a
    fresh nonce of this client (the frontend cannot replay an old bundle then).
    ``sources``: where sgx/tdx collateral for the KMS evidence comes from (the client's
    collateral directory / PCCS). ``transparency``: which witnesses must cosign the KMS's
    log checkpoint (None: the log is not checked); ``checkpoints``: where the largest
    verified checkpoint per log is kept (default ``HOME/transparency``)."""

    kms: Policy
    workers: Policy = field(default_factory=Policy.default)
    max_bundle_age_s: float = DEFAULT_MAX_BUNDLE_AGE_S
    send_nonce: bool = True
    sources: VerifierSources = field(default_factory=VerifierSources)
    transparency: WitnessPolicy | None = None
    checkpoints: Path | None = None

    def __post_init__(self) -> None:
        if not 0 < self.max_bundle_age_s < float("inf"):
            raise ConfigError("max_bundle_age_s must be a positive number of seconds")

    @classmethod
    def development(cls, home: Path | None = None, **options: Any) -> ClientPolicy:
        """Accepts simulated attestation (of the installation at ``home`` if given), for
        the KMS and its workers: proves nothing, for development only."""
        kms = Policy.development(home)
        workers = replace(Policy.default(), allow_simulated=True)
        workers = replace(workers, sim_platform_keys=kms.sim_platform_keys)
        return cls(kms, workers, **options)


@dataclass(frozen=True)
class ServingTarget:
    """A verified serving key: what requests are sealed to, and the models behind it."""

    key_id: str
    public_key: bytes
    not_after: float
    kms_claims: Claims
    release_policy: dict[str, Any] = field(repr=False)
    models: tuple[dict[str, Any], ...] = ()
    issued_at: float = 0.0
    ohttp_configs: tuple[KeyConfig, ...] = ()  # of every usable key, current first
    checkpoint: Checkpoint | None = None  # the verified log checkpoint (None: not checked)

    @property
    def ohttp_config(self) -> KeyConfig | None:
        """The current key's OHTTP key config (None: the KMS publishes none)."""
        return self.ohttp_configs[0] if self.ohttp_configs else None

    def attested_ohttp_config(self, encoded: bytes | None) -> KeyConfig:
        """The current key's config, the one every client of this bundle encapsulates to;
        ``encoded`` (a config from the caller) only if it is exactly that one.

        AttestationRefused otherwise, before anything is sent: a config the attested KMS
        did not release may be anyone's key, and the previous key's config (still in the
        bundle for a day after a rotation) is one that no other client uses, so a frontend
        that handed it to one client at discovery would know that every relayed request
        with its key id is that client's (RFC 9458 section 7, key consistency)."""
        current = self.ohttp_config
        if current is None:
            raise AttestationRefused(
                "ohttp_key_config", "the attested bundle holds no OHTTP key config"
            )
        if encoded is None:
            return current
        try:
            wanted = KeyConfig.decode(encoded)
        except BadRequest as exc:
            raise AttestationRefused("ohttp_key_config", f"malformed key config: {exc}") from None
        if wanted == current:
            return current
        if wanted in self.ohttp_configs:
            raise AttestationRefused(
                "ohttp_key_config",
                f"key config id {wanted.key_id} is the previous key's, not the current one "
                f"({current.key_id}) that every other client uses: requests to it could be "
                "told apart from theirs; nothing was sent (use the verified bundle's current "
                "config, not one from discovery)",
            )
        raise AttestationRefused(
            "ohttp_key_config",
            f"key config id {wanted.key_id} is not in the attested bundle (its key is not "
            "one the attested KMS released): nothing was sent",
        )

    def resolve(self, model: str, version: str | None) -> str:
        """The version a sealed request names: ``version`` if the KMS holds its key, else
        (None) the default among the versions it holds. AttestationRefused otherwise."""
        held = [str(m["version"]) for m in self.models if m.get("name") == model]
        if not held:
            raise AttestationRefused(
                "models", f"the KMS holds no key for model {model!r}: no attested worker serves it"
            )
        if version is None:
            return default_version(held)
        if version not in held:
            raise AttestationRefused(
                "models",
                f"the KMS holds no key for {model!r} version {version!r} (it holds {sorted(held)})",
            )
        return version

    def digest(self, model: str, version: str) -> str | None:
        """The archive digest the KMS pinned for ``model`` ``version`` (None if none)."""
        for m in self.models:
            if m.get("name") == model and m.get("version") == version:
                return m.get("digest")
        return None


def default_version(versions: list[str]) -> str:
    """The frontend registry's rule: the greatest numeric version, else the greatest name.

    (A manifest's ``default_version`` marker is not in the bundle: name the version to
    pick another.)
    """
    return max(versions, key=lambda v: (1, int(v), "") if v.isdigit() else (0, 0, v))


def new_nonce() -> bytes:
    return os.urandom(NONCE_SIZE)


def verify(
    bundle: Any,
    policy: ClientPolicy,
    now: float | None = None,
    nonce: bytes | None = None,
    consistency: ConsistencyProof | None = None,
) -> ServingTarget:
    """The current serving key if the bundle is trusted; else AttestationRefused/BadRequest.

    ``nonce``: the nonce this client sent with its request for the bundle (then the
    evidence must bind it); without one only the signed ``issued_at`` proves freshness.
    ``consistency(old, new)``: fetches a consistency proof of the KMS's log (through the
    frontend) when the policy checks the log and this client stored a smaller checkpoint.
    """
    now = time.time() if now is None else now
    checked = verify_bundle(bundle, policy.kms, now, policy.sources, nonce)
    check_release_policy(checked.release_policy, policy.workers)
    age = now - checked.issued_at
    if age > policy.max_bundle_age_s:
        raise AttestationRefused(
            "issued_at",
            f"the serving-key list was signed {age:.0f} s ago; "
            f"this client accepts at most {policy.max_bundle_age_s:g} s (a replayed old list?)",
        )
    if age < -CLOCK_SKEW_S:
        raise AttestationRefused("issued_at", "the serving-key list is dated in the future")
    usable = [k for k in checked.keys if float(k["not_after"]) > now]
    if not usable:
        raise AttestationRefused("serving_keys", "every serving key in the bundle has expired")
    key = usable[0]
    configs = tuple(c for c in (_ohttp_config(k) for k in usable) if c is not None)
    checkpoint = _check_log(bundle, checked, policy, consistency)
    return ServingTarget(
        str(key["key_id"]),
        base64.b64decode(key["public_key"]),
        float(key["not_after"]),
        checked.claims,
        checked.release_policy,
        tuple(checked.models),
        checked.issued_at,
        configs,
        checkpoint,
    )


_warned: list[bool] = []


def _check_log(
    bundle: dict[str, Any],
    checked: VerifiedBundle,
    policy: ClientPolicy,
    consistency: ConsistencyProof | None,
) -> Checkpoint | None:
    """The KMS log's checkpoint, verified under the client's witness policy (None if the
    policy names none: then the client warns, once per process, that it checks no log)."""
    if policy.transparency is None:
        if not _warned:
            _warned.append(True)
            log.warning(
                "the KMS's transparency log is not checked (no transparency: section in the "
                "client policy): a policy or key shown to this client only would go unseen"
            )
        return None
    relied = Relied(checked.release_policy, checked.keys, checked.models)
    return verify_transparency(
        checked.identity_public_key,
        bundle.get("transparency"),
        policy.transparency,
        CheckpointStore(policy.checkpoints),
        consistency or _no_proof,
        relied,
    )


def _no_proof(old: int, new: int) -> list[bytes]:
    raise AttestationRefused(
        "transparency.consistency", f"this client has no way to fetch a proof {old} -> {new}"
    )


def _ohttp_config(key: dict[str, Any]) -> KeyConfig | None:
    """A signed key's OHTTP key config, checked to be that key's (None if it has none)."""
    if "ohttp_key_config" not in key:
        return None
    try:
        config = KeyConfig.decode(base64.b64decode(key["ohttp_key_config"], validate=True))
    except (BadRequest, ValueError, TypeError):
        raise AttestationRefused("ohttp_key_config", "a signed key config is malformed") from None
    if config.key_id != key.get("ohttp_key_id") or config.public_key != base64.b64decode(
        key["public_key"]
    ):
        raise AttestationRefused(
            "ohttp_key_config", f"key config id {config.key_id} does not name its serving key"
        )
    return config
