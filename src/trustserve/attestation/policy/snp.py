"""The SEV-SNP measurement set of a release policy: its keys, parsing and matching.

A set (``measurements.RULES["sev-snp"]`` is ``SnpRules``)::

    {tee: sev-snp, measurement: "<96 hex>", host_data: "<64 hex>",
     id_key_digest: "<96 hex>", author_key_digest: "<96 hex>", vmpl: 0,
     min_tcb: {bootloader: 3, tee: 0, snp: 8, microcode: 115}, guest_svn_min: 0,
     guest_policy: {smt: false, migrate_ma: false, single_socket: any}}

``measurement`` is required; the others are checked when named, except ``vmpl``,
which is 0 when not named (a report from a lower-privileged VMPL is not the
guest's firmware speaking). ``min_tcb`` bounds each named component of the
reported TCB from below (``fmc`` too, on Turin); ``guest_svn_min`` bounds the
guest SVN. ``guest_policy`` names bits of the report's guest policy (AMD SEV-SNP
ABI, GUEST_POLICY) and what each must be: ``true`` (set), ``false`` (clear) or
``any``. ``migrate_ma`` (a migration agent may be associated: it can read the
guest's memory) is ``false`` unless named; every other bit is ``any`` unless named
(``smt: false`` requires SMT disabled). The debug bit is the policy's
``allow_debug`` rule, not a set key.

The parsed set is in its canonical JSON form (``min_tcb`` a mapping); the claims
it is compared with are the SNP verifier's (``tcb_snp``, ``guest_svn``, ...).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from trustserve.attestation.base import Claims
from trustserve.attestation.checks import config_hex
from trustserve.errors import ConfigError

HEX_SIZES = {"measurement": 48, "host_data": 32, "id_key_digest": 48, "author_key_digest": 48}
TCB_COMPONENTS = ("bootloader", "tee", "snp", "microcode", "fmc")
DEFAULT_VMPL = 0
_INT_LIMITS = {"vmpl": 3, "guest_svn_min": 0xFFFFFFFF}
# GUEST_POLICY bits (AMD SEV-SNP ABI); 17 is reserved (always 1), 19 DEBUG is allow_debug's.
POLICY_BITS = {
    "smt": 16,
    "migrate_ma": 18,
    "single_socket": 20,
    "cxl_allow": 21,
    "mem_aes_256_xts": 22,
    "rapl_dis": 23,
    "ciphertext_hiding": 24,
    "page_swap_disable": 25,
}
DEFAULT_GUEST_POLICY = {"migrate_ma": False}
_KEYS = frozenset(HEX_SIZES) | frozenset(_INT_LIMITS) | {"min_tcb", "guest_policy"}


class SnpRules:
    """``SetRules`` for ``tee: sev-snp`` sets."""

    def parse(self, where: str, raw: Mapping[str, Any]) -> dict[str, Any]:
        """The set's canonical values; ConfigError naming the key that is wrong."""
        unknown = sorted(set(map(str, raw)) - _KEYS - {"tee"})
        if unknown:
            raise ConfigError(
                f"{where}: unknown key(s) {', '.join(unknown)} for sev-snp; "
                f"known: {', '.join(sorted(_KEYS))}"
            )
        if "measurement" not in raw:
            raise ConfigError(f"{where}: a sev-snp set must name measurement")
        values: dict[str, Any] = {}
        for key, size in HEX_SIZES.items():
            if key in raw:
                values[key] = config_hex(raw[key], size, f"{where}.{key}")
        for key, limit in _INT_LIMITS.items():
            if key in raw:
                values[key] = _int(raw[key], limit, f"{where}.{key}")
        if "min_tcb" in raw:
            values["min_tcb"] = _min_tcb(raw["min_tcb"], f"{where}.min_tcb")
        values["guest_policy"] = _guest_policy(raw.get("guest_policy", {}), f"{where}.guest_policy")
        return values

    def first_mismatch(self, want: Mapping[str, Any], claims: Claims) -> str | None:
        """The name of the first claim ``want`` does not accept, or None if all match."""
        got = claims.measurements
        for key in HEX_SIZES:
            if key in want and got.get(key, "").lower() != want[key]:
                return key
        if _number(got, "vmpl") != want.get("vmpl", DEFAULT_VMPL):
            return "vmpl"
        for name, minimum in want.get("min_tcb", {}).items():
            number = _number(got, f"tcb_{name}")
            if number is None or number < minimum:
                return f"tcb_{name}"
        if "guest_svn_min" in want:
            number = _number(got, "guest_svn")
            if number is None or number < want["guest_svn_min"]:
                return "guest_svn"
        policy = _policy(got.get("policy", ""))
        for name, must in want.get("guest_policy", DEFAULT_GUEST_POLICY).items():
            if must != "any" and (policy is None or bool(policy >> POLICY_BITS[name] & 1) != must):
                return f"guest_policy.{name}"
        return None


def _guest_policy(raw: Any, where: str) -> dict[str, bool | str]:
    """Each named bit ``true``/``false``/``any``; ``migrate_ma`` always present, ``any`` of
    the others left out (so a client can compare sets value by value)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a mapping of policy bit to true, false or any")
    out: dict[str, bool | str] = dict(DEFAULT_GUEST_POLICY)
    for name, must in raw.items():
        if name not in POLICY_BITS:
            known = ", ".join(POLICY_BITS)
            raise ConfigError(
                f"{where}: unknown bit {name!r} (debug is allow_debug); known: {known}"
            )
        if not isinstance(must, bool) and must != "any":
            raise ConfigError(f"{where}.{name} must be true, false or any")
        out[name] = must
    return {k: v for k, v in out.items() if v != "any" or k in DEFAULT_GUEST_POLICY}


def _policy(text: str) -> int | None:
    try:
        return int(text, 16)
    except ValueError:
        return None


def _min_tcb(tcb: Any, where: str) -> dict[str, int]:
    if not isinstance(tcb, dict) or not tcb:
        raise ConfigError(f"{where} must be a mapping of TCB component to number")
    out: dict[str, int] = {}
    for name, number in tcb.items():
        if name not in TCB_COMPONENTS:
            raise ConfigError(
                f"{where}: unknown component {name!r}; known: {', '.join(TCB_COMPONENTS)}"
            )
        out[name] = _int(number, 0xFF, f"{where}.{name}")
    return out


def _number(claims: Mapping[str, str], name: str) -> int | None:
    text = claims.get(name, "")
    return int(text) if text.isdigit() else None


def _int(value: Any, limit: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= limit:
        raise ConfigError(f"{what} must be an integer from 0 to {limit}")
    return value
