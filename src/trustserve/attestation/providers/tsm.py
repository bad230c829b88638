"""TDX and SEV-SNP evidence through the Linux configfs-tsm report interface.

The ABI (Documentation/ABI/testing/configfs-tsm): ``mkdir`` an entry under
``/sys/kernel/config/tsm/report``, write the 64 bytes of report data to its
``inblob``, read the quote (TDX) or attestation report (SEV-SNP) from
``outblob``; ``provider`` names the TEE driver (``tdx_guest``, ``sev_guest``) and
``generation`` counts writes, so a reader can tell its outblob answers its
own inblob. Each ``make`` uses its own entry and removes it afterwards.

For ``sev_guest``, ``auxblob`` holds the certificate table of the extended report
(filled by the host, so untrusted); when it has the chip's VCEK, the evidence
carries it (``{"report": b64, "vcek": b64 DER}``) so a verifier needs no KDS. The
verifier checks the VCEK's chain to AMD's roots whatever its source.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import time
from pathlib import Path
from typing import Any

from trustserve.attestation.base import Evidence, b64
from trustserve.attestation.checks import normalize_report_data
from trustserve.attestation.formats.snp_report import parse_cert_table
from trustserve.errors import ConfigError

log = logging.getLogger(__name__)

DEFAULT_ROOT = Path("/sys/kernel/config/tsm/report")
_DRIVERS = {"tdx": "tdx_guest", "sev-snp": "sev_guest"}
# configfs creates the attribute files with the entry; waiting only matters for
# filesystems that fill them in asynchronously.
_WAIT_S = 10.0
_POLL_S = 0.01


class TsmProvider:
    def __init__(self, home: Path, *, kind: str, root: Path | str = DEFAULT_ROOT) -> None:
        if kind not in _DRIVERS:
            raise ConfigError(f"configfs-tsm provides {', '.join(_DRIVERS)}, not {kind}")
        self.name = kind
        self._root = Path(root)

    def make(self, report_data: bytes) -> Evidence:
        inblob = normalize_report_data(report_data)
        if not self._root.is_dir():
            raise ConfigError(f"no configfs-tsm report interface at {self._root}")
        entry = self._root / f"trustserve-{secrets.token_hex(8)}"
        try:
            entry.mkdir()
        except OSError as exc:
            raise ConfigError(f"cannot create {entry}: {exc.strerror}") from None
        try:
            (entry / "inblob").write_bytes(inblob)
            _wait_for(entry / "outblob")
            generation = _generation(entry)
            outblob = (entry / "outblob").read_bytes()
            auxblob = _read_optional(entry / "auxblob") if self.name == "sev-snp" else b""
            provider = (entry / "provider").read_text().strip()
            # An unchanged generation across the read: nobody wrote inblob in between.
            if _generation(entry) != generation:
                raise ConfigError(f"{entry} was written concurrently; try again")
        except (OSError, ValueError) as exc:
            raise ConfigError(f"configfs-tsm report failed: {exc}") from None
        finally:
            with contextlib.suppress(OSError):
                entry.rmdir()
        if provider != _DRIVERS[self.name]:
            raise ConfigError(f"configfs-tsm provider is {provider!r}, not {_DRIVERS[self.name]}")
        if self.name == "sev-snp":
            return Evidence(self.name, _snp_data(outblob, auxblob, provider, generation))
        return Evidence(
            self.name, {"quote": b64(outblob), "provider": provider, "generation": generation}
        )


def _snp_data(report: bytes, auxblob: bytes, provider: str, generation: int) -> dict[str, Any]:
    data: dict[str, Any] = {"report": b64(report), "provider": provider, "generation": generation}
    if auxblob:
        try:
            certs = parse_cert_table(auxblob)
        except ValueError as exc:
            log.warning("ignoring the SEV-SNP certificate table in auxblob: %s", exc)
            certs = {}
        if "vcek" in certs:
            data["vcek"] = b64(certs["vcek"])
    return data


def _read_optional(path: Path) -> bytes:
    """An attribute a TSM may not provide (then it is absent) or leave empty."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return b""


def _generation(entry: Path) -> int:
    return int((entry / "generation").read_text().strip())


def _wait_for(path: Path) -> bytes:
    deadline = time.monotonic() + _WAIT_S
    while True:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            data = b""
        if data:
            return data
        if time.monotonic() > deadline:
            raise ConfigError(f"no report appeared in {path}")
        time.sleep(_POLL_S)


def tdx_provider(home: Path, **options: Any) -> TsmProvider:
    return TsmProvider(home, kind="tdx", **options)


def sev_snp_provider(home: Path, **options: Any) -> TsmProvider:
    return TsmProvider(home, kind="sev-snp", **options)
