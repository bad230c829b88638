"""The SEV-SNP measurement set of a release policy: its keys, parsing and matching.

A set (``policy.py`` delegates ``tee: sev-snp`` sets here)::

    {tee: sev-snp, measurement: "<96 hex>", host_data: "<64 hex>",
     id_key_digest: "<96 hex>", author_key_digest: "<96 hex>", vmpl: 0,
     min_tcb: {bootloader: 3, tee: 0, snp: 8, microcode: 115}, guest_svn_min: 0}

``measurement`` is required; the others are checked when named, except ``vmpl``,
which is 0 when not named (a report from a lower-privileged VMPL is not the
guest's firmware speaking). ``min_tcb`` bounds each named component of the
reported TCB from below (``fmc`` too, on Turin); ``guest_svn_min`` bounds the
guest SVN. The debug bit is the policy's ``allow_debug`` rule, not a set key.

A set is stored flat (``min_tcb.snp: 8``) in ``MeasurementSet.values``; the claims
it is compared with are the SNP verifier's (``tcb_snp``, ``guest_svn``, ...).
"""

from __future__ import annotations

from typing import Any

from trustserve.errors import ConfigError

HEX_SIZES = {"measurement": 48, "host_data": 32, "id_key_digest": 48, "author_key_digest": 48}
HEX_FIELDS = frozenset(HEX_SIZES)
INT_FIELDS = frozenset({"vmpl", "guest_svn_min"})
REQUIRED = frozenset({"measurement"})
TCB_COMPONENTS = ("bootloader", "tee", "snp", "microcode", "fmc")
DEFAULT_VMPL = 0
_INT_LIMITS = {"vmpl": 3, "guest_svn_min": 0xFFFFFFFF}
_KEYS = HEX_FIELDS | INT_FIELDS | {"min_tcb"}


def parse_set(where: str, raw: dict[str, Any]) -> dict[str, str | int]:
    """The flat values of an SNP set; ConfigError naming the key that is wrong."""
    unknown = sorted(set(map(str, raw)) - _KEYS - {"tee"})
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(unknown)} for sev-snp; "
            f"known: {', '.join(sorted(_KEYS))}"
        )
    if not set(raw) >= REQUIRED:
        raise ConfigError(f"{where} must name measurement for sev-snp")
    values: dict[str, str | int] = {}
    for key, size in HEX_SIZES.items():
        if key in raw:
            values[key] = _hex(raw[key], size, f"{where}.{key}")
    for key, limit in _INT_LIMITS.items():
        if key in raw:
            values[key] = _int(raw[key], limit, f"{where}.{key}")
    if "min_tcb" in raw:
        tcb = raw["min_tcb"]
        if not isinstance(tcb, dict) or not tcb:
            raise ConfigError(f"{where}.min_tcb must be a mapping of TCB component to number")
        for name, number in tcb.items():
            if name not in TCB_COMPONENTS:
                raise ConfigError(
                    f"{where}.min_tcb: unknown component {name!r}; "
                    f"known: {', '.join(TCB_COMPONENTS)}"
                )
            values[f"min_tcb.{name}"] = _int(number, 0xFF, f"{where}.min_tcb.{name}")
    return values


def first_mismatch(values: dict[str, str | int], claims: dict[str, str]) -> str | None:
    """The name of the first claim the set does not accept, or None if it matches."""
    for key in HEX_SIZES:
        if key in values and claims.get(key, "").lower() != values[key]:
            return key
    if _number(claims, "vmpl") != values.get("vmpl", DEFAULT_VMPL):
        return "vmpl"
    for key, want in values.items():
        if key.startswith("min_tcb."):
            claim = "tcb_" + key.removeprefix("min_tcb.")
            got = _number(claims, claim)
            if got is None or got < int(want):
                return claim
    if "guest_svn_min" in values:
        got = _number(claims, "guest_svn")
        if got is None or got < int(values["guest_svn_min"]):
            return "guest_svn"
    return None


def set_to_json(values: dict[str, str | int]) -> dict[str, Any]:
    out: dict[str, Any] = {"tee": "sev-snp"}
    for key, value in values.items():
        if key.startswith("min_tcb."):
            out.setdefault("min_tcb", {})[key.removeprefix("min_tcb.")] = value
        else:
            out[key] = value
    return out


def _number(claims: dict[str, str], name: str) -> int | None:
    text = claims.get(name, "")
    return int(text) if text.isdigit() else None


def _hex(value: Any, size: int, what: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{what} must be a quoted hex string")
    try:
        data = bytes.fromhex(value)
    except ValueError:
        raise ConfigError(f"{what} is not valid hex") from None
    if len(data) != size:
        raise ConfigError(f"{what} must be {size} bytes ({2 * size} hex digits), got {len(data)}")
    return data.hex()


def _int(value: Any, limit: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= limit:
        raise ConfigError(f"{what} must be an integer from 0 to {limit}")
    return value
