"""What a measurement set of each TEE must name, and how it is matched against claims.

A set that names too little accepts code nobody reviewed, so each TEE has a
minimum (a set below it is a configuration error, not a weaker policy):

* ``tdx``: ``mrtd`` (the TD firmware) and ``rtmr1``, ``rtmr2``, ``rtmr3`` (the
  boot loader and kernel, the kernel command line and initrd, the application);
  ``rtmr0`` (firmware configuration), ``mr_seam`` and the other TD report
  fields may be added. Every value is 48 bytes (SHA-384).
* ``sgx``: ``mrenclave`` (this exact enclave), or ``mrsigner`` together with
  ``isv_prod_id`` and ``isv_svn_min`` (this signer's product, at least this
  security version); ``mrenclave`` and ``mrsigner`` are 32 bytes.
* ``tpm``: ``pcrs`` naming at least PCRs 0-7, the static root of trust for
  measurement that the tpm provider quotes by default (firmware code and
  configuration, option ROMs, boot loader code and configuration, platform,
  Secure Boot policy); higher PCRs may be added. ``pcr_bank`` (default
  ``sha256``) fixes the digest size and must be the bank the quote covers.
* ``sim``: ``sim_measurement`` (32 bytes) or nothing (any sim evidence).
* ``sev-snp``: ``measurement`` (48 bytes), plus ``host_data``, the ID/author key
  digests, ``vmpl`` (0 when not named), ``min_tcb`` and ``guest_svn_min``; its
  rules live beside its verifier (``trustserve.attestation.policy.snp``).

Hex values must be non-empty and of their field's exact size. A claim the
evidence does not carry never matches.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from trustserve.attestation.base import Claims
from trustserve.attestation.checks import config_hex
from trustserve.attestation.policy.snp import SnpRules
from trustserve.errors import ConfigError


class SetRules(Protocol):
    """How one TEE's measurement sets are written and matched."""

    def parse(self, where: str, raw: Mapping[str, Any]) -> dict[str, Any]:
        """The set's canonical values (``tee`` left out); ConfigError if it is not acceptable."""
        ...

    def first_mismatch(self, want: Mapping[str, Any], claims: Claims) -> str | None:
        """The name of the first claim ``want`` does not accept, or None if all match."""
        ...


def _unknown(where: str, tee: str, raw: Mapping[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(map(str, raw)) - allowed - {"tee"})
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(unknown)} for {tee}; "
            f"known: {', '.join(sorted(allowed))}"
        )


def _and(names: tuple[str, ...]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


@dataclass(frozen=True)
class FieldRules:
    """Sets made of hex fields (compared exactly) and integer fields.

    An integer field ``x`` must equal the claim ``x``; ``x_min`` is a lower bound on ``x``.
    The set must name every field of at least one of the ``required`` groups.
    """

    tee: str
    hex_sizes: Mapping[str, int]
    required: tuple[tuple[str, ...], ...] = ()
    int_max: Mapping[str, int] = field(default_factory=dict)

    def parse(self, where: str, raw: Mapping[str, Any]) -> dict[str, Any]:
        _unknown(where, self.tee, raw, set(self.hex_sizes) | set(self.int_max))
        values: dict[str, Any] = {}
        for key, value in raw.items():
            if key in self.hex_sizes:
                values[key] = config_hex(value, self.hex_sizes[key], f"{where}.{key}")
            elif key in self.int_max:
                top = self.int_max[key]
                if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= top:
                    raise ConfigError(f"{where}.{key} must be an integer 0..{top}")
                values[key] = value
        if self.required and not any(set(group) <= set(values) for group in self.required):
            options = "; or ".join(_and(group) for group in self.required)
            raise ConfigError(f"{where}: a {self.tee} set must name {options}")
        return values

    def first_mismatch(self, want: Mapping[str, Any], claims: Claims) -> str | None:
        got = claims.measurements
        for name, value in want.items():
            if isinstance(value, int):
                claim = name.removesuffix("_min")
                text = got.get(claim)
                if text is None or not text.isdigit():
                    return claim
                at_least = name.endswith("_min")
                if not (int(text) >= value if at_least else int(text) == value):
                    return claim
            else:
                actual = got.get(name)
                if actual is None or actual.lower() != value:
                    return name
        return None


PCR_BANKS = {"sha1": 20, "sha256": 32, "sha384": 48}
BOOT_CHAIN_PCRS = frozenset(range(8))


class TpmRules:
    """``pcrs: {index: hex}`` covering at least PCRs 0-7, and ``pcr_bank`` (default sha256)."""

    def parse(self, where: str, raw: Mapping[str, Any]) -> dict[str, Any]:
        _unknown(where, "tpm", raw, {"pcrs", "pcr_bank"})
        bank = raw.get("pcr_bank", "sha256")
        if bank not in PCR_BANKS:
            raise ConfigError(f"{where}.pcr_bank must be one of {', '.join(PCR_BANKS)}")
        pcrs = raw.get("pcrs")
        if not isinstance(pcrs, dict) or not pcrs:
            raise ConfigError(f"{where}: a tpm set must name pcrs, a mapping of PCR index to hex")
        parsed: dict[int, str] = {}
        for index_raw, digest in pcrs.items():
            index = str(index_raw)
            if not index.isdigit() or not 0 <= int(index) <= 23:
                raise ConfigError(f"{where}.pcrs: {index_raw!r} is not a PCR index 0..23")
            parsed[int(index)] = config_hex(digest, PCR_BANKS[bank], f"{where}.pcrs.{index}")
        missing = sorted(BOOT_CHAIN_PCRS - set(parsed))
        if missing:
            raise ConfigError(
                f"{where}: a tpm set must name PCRs 0-7 (the boot chain); "
                f"missing {', '.join(map(str, missing))}"
            )
        return {"pcr_bank": bank, "pcrs": {str(i): parsed[i] for i in sorted(parsed)}}

    def first_mismatch(self, want: Mapping[str, Any], claims: Claims) -> str | None:
        if claims.extra.get("pcr_bank") != want["pcr_bank"]:
            return "pcr_bank"
        for index, digest in want["pcrs"].items():
            actual = claims.measurements.get(f"pcr{index}")
            if actual is None or actual.lower() != digest:
                return f"pcr{index}"
        return None


_TDX_48 = (
    "mrtd rtmr0 rtmr1 rtmr2 rtmr3 mr_seam mr_signer_seam mr_config_id mr_owner mr_owner_config"
)

# tee -> its rules.
RULES: dict[str, SetRules] = {
    "tdx": FieldRules(
        "tdx",
        dict.fromkeys(_TDX_48.split(), 48),
        required=(("mrtd", "rtmr1", "rtmr2", "rtmr3"),),
    ),
    "sgx": FieldRules(
        "sgx",
        {"mrenclave": 32, "mrsigner": 32},
        required=(("mrenclave",), ("mrsigner", "isv_prod_id", "isv_svn_min")),
        int_max={"isv_prod_id": 0xFFFF, "isv_svn_min": 0xFFFF},
    ),
    "tpm": TpmRules(),
    "sim": FieldRules("sim", {"sim_measurement": 32}),
    "sev-snp": SnpRules(),
}
