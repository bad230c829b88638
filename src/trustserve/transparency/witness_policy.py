"""A client's witness policy: the ``transparency:`` section of its policy file.

::

    transparency:
      witnesses:          # verifier keys (vkey text) of the witnesses this client trusts
        - "witness.example/w1+abcd1234+AbC..."
      quorum: 2           # how many of them must cosign a checkpoint (default: all)

Each witness key is a C2SP ``cosignature/v1`` verifier key (``trustserve witness init``
prints one). The quorum is at most the number of witnesses named. ``quorum: 0`` (with or
without witnesses, and only when written out) requires no cosignature: the client still
checks the KMS's signature, its own history (rollback, fork) and the inclusion proofs, but
a split view shown to it on first contact goes unseen (for a KMS without witnesses, such as
a development stack's).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from trustserve.errors import ConfigError, TransparencyRefused
from trustserve.transparency import note
from trustserve.transparency.note import COSIGNATURE_V1, Verifier

SECTION = "transparency"
_KEYS = {"witnesses", "quorum"}
_NONE = (
    f"{SECTION}.witnesses must name at least one witness key "
    "(or write quorum: 0 to check the log without witnesses)"
)


@dataclass(frozen=True)
class WitnessPolicy:
    witnesses: tuple[Verifier, ...]
    quorum: int

    def __post_init__(self) -> None:
        if not self.witnesses and self.quorum != 0:
            raise ConfigError(_NONE)
        if not 0 <= self.quorum <= len(self.witnesses):
            raise ConfigError(
                f"{SECTION}.quorum must be between 0 and the {len(self.witnesses)} "
                f"witness(es) named; got {self.quorum}"
            )
        names = [(w.name, w.key_id) for w in self.witnesses]
        if len(set(names)) != len(names):
            raise ConfigError(f"{SECTION}.witnesses names one key twice")

    @classmethod
    def from_mapping(cls, raw: Any) -> WitnessPolicy:
        if not isinstance(raw, dict):
            raise ConfigError(f"policy section {SECTION} must be a mapping")
        unknown = sorted(set(map(str, raw)) - _KEYS)
        if unknown:
            raise ConfigError(
                f"unknown {SECTION} key(s) {', '.join(unknown)}; known: {', '.join(sorted(_KEYS))}"
            )
        listed = raw.get("witnesses", [])
        if not isinstance(listed, list) or not all(isinstance(w, str) for w in listed):
            raise ConfigError(f"{SECTION}.witnesses must be a list of witness verifier keys")
        witnesses = tuple(_witness(text) for text in listed)
        quorum = raw.get("quorum")
        if quorum is None:  # all of them; none only when written out (quorum: 0)
            if not witnesses:
                raise ConfigError(_NONE)
            quorum = len(witnesses)
        if not isinstance(quorum, int) or isinstance(quorum, bool):
            raise ConfigError(f"{SECTION}.quorum must be a whole number")
        return cls(witnesses, quorum)

    def cosigners(self, signed: note.Note) -> tuple[list[str], list[str]]:
        """(the named witnesses whose cosignature on ``signed`` verifies, those whose does
        not); a witness that did not cosign is in neither."""
        good, bad = [], []
        for witness in self.witnesses:
            try:
                if note.verified_by(signed, [witness]):
                    good.append(witness.name)
            except TransparencyRefused:
                bad.append(witness.name)
        return good, bad

    def to_json(self) -> dict[str, Any]:
        return {"witnesses": [w.vkey() for w in self.witnesses], "quorum": self.quorum}


def _witness(text: str) -> Verifier:
    try:
        verifier = Verifier.from_vkey(text)
    except TransparencyRefused as exc:
        raise ConfigError(f"{SECTION}.witnesses: {exc}") from None
    if verifier.kind != COSIGNATURE_V1:
        raise ConfigError(
            f"{SECTION}.witnesses: {verifier.name} is not a cosignature/v1 key "
            "(the key 'trustserve witness init' prints)"
        )
    return verifier
