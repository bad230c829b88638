"""Would the KMS release keys only to workers this client accepts? The release policy, judged.

The serving key goes to every worker the KMS release policy admits, so a client
that trusts the KMS's evidence must still check that policy against its own
worker rules (a ``Policy``): the release policy may be at most as permissive,
rule by rule, and anything this client cannot judge is refused (fail closed).

* ``allow_simulated`` / ``allow_debug``: true only if the client's is; a measurement
  set for ``sim`` counts as admitting simulated workers.
* ``accepted_tcb_statuses``, ``accepted_advisories``: a subset of the client's.
* ``max_evidence_age_s``: at most the client's.
* ``measurements``: if the client names any, each set of the KMS must be one of the
  client's or narrower (pins all it pins, the same values; a ``*_min`` / ``min_*``
  bound at least as high; nested maps such as PCRs or ``min_tcb`` entry by entry).
  If the client names none, it leaves the choice of code to the KMS owner.
* every other list-valued key is a list of trust roots (TPM AK names, AK CA
  certificates, sim platform keys, ...): a subset of the client's same key. For
  ``sim_platform_keys`` an empty list means "any key", so an empty client list
  accepts any and a non-empty one refuses an empty release list.
* any other key, or a key unknown to this client's policy version, is refused.

A KMS judges a replica that joins it (``trustserve.kms.join``) by the same rules: the
joiner's release and peer policies may admit no more than the KMS's own.
"""

from __future__ import annotations

import re
from typing import Any

from trustserve.attestation.policy.release import Policy
from trustserve.errors import AttestationRefused, ConfigError

EMPTY_MEANS_ANY = frozenset({"sim_platform_keys"})
_FLAGS = ("allow_simulated", "allow_debug")
_SUBSETS = ("accepted_tcb_statuses", "accepted_advisories")
_HEX = re.compile(r"[0-9a-fA-F]+")


def _refuse(key: str, detail: str) -> AttestationRefused:
    return AttestationRefused(f"release_policy.{key}", detail)


def check_release_policy(release: Any, mine: Policy) -> None:
    """Return if ``release`` admits no worker ``mine`` would refuse; else AttestationRefused
    whose claim names the rule (``release_policy.<key>``)."""
    if not isinstance(release, dict):
        raise _refuse("format", "the release policy is not a mapping")
    ours = mine.to_json()
    unknown = sorted(set(release) - set(ours))
    if unknown:
        raise _refuse(
            unknown[0], "unknown release-policy key: this client cannot tell what it admits"
        )
    try:
        theirs = Policy.from_mapping(release).to_json()
    except ConfigError as exc:
        raise _refuse("format", f"the release policy does not parse: {exc}") from None
    for key in sorted(theirs):
        _check_key(key, theirs[key], ours[key], ours)


def _check_key(key: str, theirs: Any, ours: Any, mine: dict[str, Any]) -> None:
    if key in _FLAGS:
        if theirs is True and ours is not True:
            what = "simulated (not hardware-protected)" if key == "allow_simulated" else "debug"
            raise _refuse(key, f"the KMS would release keys to {what} TEEs")
    elif key in _SUBSETS:
        extra = sorted(set(theirs) - set(ours))
        if extra:
            raise _refuse(key, f"the KMS accepts {', '.join(extra)}; this client does not")
    elif key == "max_evidence_age_s":
        if float(theirs) > float(ours):
            raise _refuse(
                key, f"the KMS accepts worker evidence {theirs:g} s old; at most {ours:g}"
            )
    elif key == "measurements":
        _check_measurements(theirs, ours, mine)
    elif isinstance(theirs, list) and isinstance(ours, list):
        _check_roots(key, theirs, ours)
    else:
        raise _refuse(key, "this client has no rule for this release-policy key")


def _check_measurements(theirs: list[Any], ours: list[Any], mine: dict[str, Any]) -> None:
    for admitted in theirs:
        if admitted.get("tee") == "sim" and mine.get("allow_simulated") is not True:
            raise _refuse("measurements", "the KMS admits simulated workers ({tee: sim})")
        if ours and not any(_narrower(admitted, accepted) for accepted in ours):
            raise _refuse(
                "measurements", f"the KMS admits workers this client does not accept: {admitted}"
            )


def _narrower(theirs: dict[str, Any], ours: dict[str, Any]) -> bool:
    """True if every worker the set ``theirs`` admits, the set ``ours`` admits too."""
    for name, want in ours.items():
        got = theirs.get(name)
        bound = name.endswith("_min") or name.startswith("min_")
        if isinstance(want, dict):
            if not isinstance(got, dict):
                return False
            if not all(_covers(got.get(i), v, bound) for i, v in want.items()):
                return False
        elif not _covers(got, want, bound):
            return False
    return True


def _covers(got: Any, want: Any, bound: bool) -> bool:
    """``got`` pins at least what ``want`` does: equal, or a lower bound as high (``bound``)."""
    if not bound:
        return bool(got == want)
    numbers = all(isinstance(v, int) and not isinstance(v, bool) for v in (got, want))
    return numbers and got >= want


def _check_roots(key: str, theirs: list[Any], ours: list[Any]) -> None:
    if key in EMPTY_MEANS_ANY:
        if not ours:
            return
        if not theirs:
            raise _refuse(key, "the KMS trusts any key here; this client pins some")
    mine = {_norm(v) for v in ours}
    extra = [v for v in theirs if _norm(v) not in mine]
    if extra:
        raise _refuse(
            key,
            f"the KMS trusts {len(extra)} root(s) this client does not, e.g. {_short(extra[0])}",
        )


def _norm(value: Any) -> str:
    text = "".join(str(value).split())
    return text.lower() if _HEX.fullmatch(text) else text


def _short(value: Any) -> str:
    text = _norm(value)
    return text if len(text) <= 40 else f"{text[:20]}...{text[-12:]}"
