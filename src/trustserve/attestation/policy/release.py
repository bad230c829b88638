"""Which verified claims are acceptable: the release policy, loaded from YAML.

Defaults are strict: simulated evidence and debug TEEs are refused, the TCB must
be ``UpToDate``, no advisory is accepted, evidence may be at most 300 s old, and
an empty measurement list refuses everything. Every refusal raises
``AttestationRefused`` naming the claim that failed. What each TEE's measurement
set must name is in ``trustserve.attestation.policy.measurements``.

Example::

    allow_simulated: false
    accepted_tcb_statuses: [UpToDate]
    max_evidence_age_s: 300
    measurements:
      - {tee: tdx, mrtd: "91eb...", rtmr1: "...", rtmr2: "...", rtmr3: "..."}
      - {tee: sgx, mrsigner: "815f...", isv_prod_id: 0, isv_svn_min: 1}
      - {tee: tpm, pcrs: {"0": "d0c3...", "1": "...", ..., "7": "65ca..."}}
      - {tee: sim, sim_measurement: "5a1c..."}
      - {tee: sev-snp, measurement: "7a1e...", min_tcb: {snp: 8}}
    tpm_ak_names: ["000b8f3c..."]               # TPM object Names of pinned AKs
    tpm_ak_ca_certs: ["-----BEGIN CERTIFICATE-----\\n..."]  # or AKs certified by these CAs
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from trustserve.attestation.base import Claims
from trustserve.attestation.checks import config_hex
from trustserve.attestation.policy.measurements import RULES
from trustserve.attestation.verifiers.tpm.ak import check_ca_pem, parse_ak_name
from trustserve.errors import AttestationRefused, ConfigError

# TEEs without a TCB status of their own (a TPM quote says nothing about firmware currency;
# SEV-SNP's TCB is bounded by the set's min_tcb instead).
NO_TCB_STATUS = frozenset({"tpm", "sim", "sev-snp"})
CLOCK_SKEW_S = 30.0

_KEYS = {
    "allow_simulated",
    "allow_debug",
    "accepted_tcb_statuses",
    "accepted_advisories",
    "max_evidence_age_s",
    "measurements",
    "tpm_ak_names",
    "tpm_ak_ca_certs",
    "sim_platform_keys",
}
# Removed: a bare public key does not pin the key's attributes (issue 11 item 9).
_REMOVED = {"tpm_ak_public_keys": "pin the AK's TPM Name in tpm_ak_names instead"}


@dataclass(frozen=True)
class MeasurementSet:
    """One allowed set: every value listed must match (a ``*_min`` value is a lower bound).

    ``values`` is the set in its canonical JSON form, as its TEE's ``SetRules`` parsed it.
    """

    tee: str
    values: dict[str, Any] = field(default_factory=dict)

    def first_mismatch(self, claims: Claims) -> str | None:
        """The name of the first claim this set does not accept, or None if it matches."""
        return RULES[self.tee].first_mismatch(self.values, claims)

    def to_json(self) -> dict[str, Any]:
        return {"tee": self.tee, **self.values}


@dataclass(frozen=True)
class Policy:
    allow_simulated: bool = False
    allow_debug: bool = False
    accepted_tcb_statuses: tuple[str, ...] = ("UpToDate",)
    accepted_advisories: tuple[str, ...] = ()
    max_evidence_age_s: float = 300.0
    measurements: tuple[MeasurementSet, ...] = ()
    tpm_ak_names: tuple[str, ...] = ()
    tpm_ak_ca_certs: tuple[str, ...] = ()
    sim_platform_keys: tuple[str, ...] = ()

    # ---- construction ----

    @classmethod
    def default(cls) -> Policy:
        """The strict policy: with no allowed measurements it refuses everything."""
        return cls()

    @classmethod
    def development(cls, home: Path | None = None) -> Policy:
        """For ``trustserve up``: accepts sim evidence (and nothing hardware-backed).

        With ``home``, only the sim platform key of that installation is trusted;
        without it, any sim key is (sim evidence proves nothing anyway).
        """
        keys: tuple[str, ...] = ()
        if home is not None:
            from trustserve.attestation.sim_platform import platform_public_key

            keys = (platform_public_key(home).hex(),)
        return cls(
            allow_simulated=True, measurements=(MeasurementSet("sim"),), sim_platform_keys=keys
        )

    @classmethod
    def from_yaml(cls, text: str) -> Policy:
        try:
            raw = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"policy is not valid YAML: {exc}") from None
        return cls.from_mapping({} if raw is None else raw)

    @classmethod
    def load(cls, path: Path | str) -> Policy:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ConfigError(f"cannot read policy {path}: {exc.strerror}") from None
        return cls.from_yaml(text)

    @classmethod
    def from_json(cls, raw: Any) -> Policy:
        if isinstance(raw, str | bytes):
            try:
                raw = json.loads(raw)
            except ValueError:
                raise ConfigError("policy is not valid JSON") from None
        return cls.from_mapping(raw)

    @classmethod
    def from_mapping(cls, raw: Any) -> Policy:
        if not isinstance(raw, dict):
            raise ConfigError("policy must be a mapping")
        removed = sorted(set(raw) & set(_REMOVED))
        if removed:
            key = removed[0]
            raise ConfigError(f"policy key {key} is no longer accepted: {_REMOVED[key]}")
        unknown = sorted(set(raw) - _KEYS)
        if unknown:
            raise ConfigError(
                f"unknown policy key(s) {', '.join(map(str, unknown))}; "
                f"known: {', '.join(sorted(_KEYS))}"
            )
        sets = raw.get("measurements", [])
        if not isinstance(sets, list):
            raise ConfigError("policy key measurements must be a list")
        return cls(
            allow_simulated=_bool(raw, "allow_simulated", False),
            allow_debug=_bool(raw, "allow_debug", False),
            accepted_tcb_statuses=_strings(raw, "accepted_tcb_statuses", ("UpToDate",)),
            accepted_advisories=_strings(raw, "accepted_advisories", ()),
            max_evidence_age_s=_positive(raw, "max_evidence_age_s", 300.0),
            measurements=tuple(_measurement_set(i, s) for i, s in enumerate(sets)),
            tpm_ak_names=tuple(parse_ak_name(k) for k in _strings(raw, "tpm_ak_names", ())),
            tpm_ak_ca_certs=tuple(check_ca_pem(k) for k in _strings(raw, "tpm_ak_ca_certs", ())),
            sim_platform_keys=tuple(
                config_hex(k, 32, "sim_platform_keys entry")
                for k in _strings(raw, "sim_platform_keys", ())
            ),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "allow_simulated": self.allow_simulated,
            "allow_debug": self.allow_debug,
            "accepted_tcb_statuses": list(self.accepted_tcb_statuses),
            "accepted_advisories": list(self.accepted_advisories),
            "max_evidence_age_s": self.max_evidence_age_s,
            "measurements": [m.to_json() for m in self.measurements],
            "tpm_ak_names": list(self.tpm_ak_names),
            "tpm_ak_ca_certs": list(self.tpm_ak_ca_certs),
            "sim_platform_keys": list(self.sim_platform_keys),
        }

    # ---- the decision ----

    def check(self, claims: Claims, now: float) -> None:
        """Return if the claims are acceptable; raise AttestationRefused naming the claim."""
        if not math.isfinite(now):
            raise ConfigError("the verification time must be a finite number")
        if claims.tee not in RULES:
            raise AttestationRefused("tee", f"no policy can accept {claims.tee!r} evidence")
        if claims.tee == "sim" and not self.allow_simulated:
            raise AttestationRefused(
                "tee", "simulated evidence (not hardware-protected); policy lacks allow_simulated"
            )
        if claims.debug and not self.allow_debug:
            raise AttestationRefused("debug", "the TEE runs in debug mode")
        if claims.tee not in NO_TCB_STATUS and claims.tcb_status not in self.accepted_tcb_statuses:
            raise AttestationRefused(
                "tcb_status",
                f"{claims.tcb_status} is not one of {', '.join(self.accepted_tcb_statuses)}",
            )
        refused = sorted(set(claims.advisories) - set(self.accepted_advisories))
        if refused:
            raise AttestationRefused("advisories", f"not accepted: {', '.join(refused)}")
        if claims.issued_at is not None:
            if not math.isfinite(claims.issued_at):
                raise AttestationRefused("issued_at", "evidence time is not a finite number")
            age = now - claims.issued_at
            if age > self.max_evidence_age_s:
                raise AttestationRefused(
                    "issued_at", f"evidence is {age:.0f} s old; at most {self.max_evidence_age_s:g}"
                )
            if age < -CLOCK_SKEW_S:
                raise AttestationRefused("issued_at", "evidence is dated in the future")
        self._check_measurements(claims)

    def _check_measurements(self, claims: Claims) -> None:
        candidates = [m for m in self.measurements if m.tee == claims.tee]
        if not candidates:
            raise AttestationRefused("measurements", f"policy allows no {claims.tee} measurements")
        misses = [m.first_mismatch(claims) for m in candidates]
        if None in misses:
            return
        names = sorted({str(m) for m in misses})
        claim = names[0] if len(names) == 1 else "measurements"
        raise AttestationRefused(
            claim, f"{', '.join(names)} not in any allowed {claims.tee} measurement set"
        )


def _bool(raw: dict[str, Any], key: str, default: bool) -> bool:
    value = raw.get(key, default)
    if not isinstance(value, bool):
        raise ConfigError(f"policy key {key} must be true or false")
    return value


def _strings(raw: dict[str, Any], key: str, default: tuple[str, ...]) -> tuple[str, ...]:
    value = raw.get(key, list(default))
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"policy key {key} must be a list of strings")
    return tuple(value)


def _positive(raw: dict[str, Any], key: str, default: float) -> float:
    value = raw.get(key, default)
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ConfigError(f"policy key {key} must be a positive finite number")
    return float(value)


def _measurement_set(index: int, raw: Any) -> MeasurementSet:
    return measurement_set(raw, f"measurements[{index}]")


def measurement_set(raw: Any, where: str) -> MeasurementSet:
    """One measurement set as a policy lists it (``{tee, ...}``); ConfigError naming
    ``where`` and the field if it is not acceptable."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a mapping")
    tee = raw.get("tee")
    if tee not in RULES:
        raise ConfigError(f"{where}.tee must be one of {', '.join(RULES)}")
    return MeasurementSet(tee, RULES[tee].parse(where, raw))
