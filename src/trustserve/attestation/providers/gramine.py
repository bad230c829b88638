"""SGX evidence inside a Gramine enclave, through its ``/dev/attestation`` pseudo-files.

Write the 64 bytes of report data to ``user_report_data``, read the DCAP quote
from ``quote`` (Gramine asks the quoting enclave for it). ``attestation_type``
must say ``dcap``: an EPID quote could not be verified by ``dcap-qvl``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trustserve.attestation.base import Evidence, b64
from trustserve.attestation.checks import normalize_report_data
from trustserve.errors import ConfigError

DEFAULT_DIR = Path("/dev/attestation")


class GramineProvider:
    name = "sgx"

    def __init__(self, home: Path, *, attestation_dir: Path | str = DEFAULT_DIR) -> None:
        self._dir = Path(attestation_dir)

    def make(self, report_data: bytes) -> Evidence:
        data = normalize_report_data(report_data)
        try:
            kind = (self._dir / "attestation_type").read_text().strip()
            if kind != "dcap":
                raise ConfigError(f"Gramine attestation type is {kind!r}; trustserve needs dcap")
            (self._dir / "user_report_data").write_bytes(data)
            quote = (self._dir / "quote").read_bytes()
        except OSError as exc:
            raise ConfigError(f"Gramine attestation at {self._dir} failed: {exc}") from None
        if not quote:
            raise ConfigError(f"{self._dir / 'quote'} returned no quote")
        return Evidence("sgx", {"quote": b64(quote)})


def provider(home: Path, **options: Any) -> GramineProvider:
    return GramineProvider(home, **options)
