"""The ``sim`` evidence provider: software-only evidence for development and CI.

Nothing here is hardware-protected; every policy refuses sim evidence unless it
says ``allow_simulated: true``. The provider signs a statement (canonical JSON,
signed as bytes) with the simulated platform's key (``attestation.sim_platform``);
it carries the report data, the issue time and ``sim_measurement``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from trustserve import __version__
from trustserve.attestation.base import Evidence, b64
from trustserve.attestation.checks import normalize_report_data
from trustserve.attestation.sim_platform import load_or_create_key, raw_public, sim_measurement


class SimProvider:
    name = "sim"

    def __init__(self, home: Path) -> None:
        self._key = load_or_create_key(home)

    def make(self, report_data: bytes) -> Evidence:
        public = raw_public(self._key.public_key())
        statement = {
            "tee": "sim",
            "report_data": normalize_report_data(report_data).hex(),
            "issued_at": time.time(),
            "trustserve_version": __version__,
            "sim_measurement": sim_measurement(public),
        }
        body = json.dumps(statement, sort_keys=True, separators=(",", ":")).encode()
        return Evidence(
            "sim",
            {
                "statement": b64(body),
                "signature": b64(self._key.sign(body)),
                "public_key": public.hex(),
            },
        )
