"""The KMS's transparency log as the frontend last saw it, for Prometheus (docs/observability.md).

The KMS serves no ``/metrics``; the frontend fetches its attestation bundle anyway, and
the bundle's ``transparency`` field carries the KMS's newest checkpoint with the witnesses'
cosignatures. Each bundle the frontend gets updates two label-less gauges:

* ``trustserve_kms_log_size``: the checkpoint's size;
* ``trustserve_kms_log_cosigned_age_seconds``: now (at scrape) minus the newest timestamp
  among the checkpoint's ``cosignature/v1`` lines. Absent while the checkpoint has none
  (alert on ``absent(...)``): Prometheus's way of saying "no value", where a NaN would
  silently make every ``> threshold`` comparison false.

Informational only, and unverified: the frontend knows neither the log's key nor the
witnesses' keys, so it checks the note's form (``note.parse``, size-bounded) and takes
the timestamp of every signature line shaped like a cosignature (8-byte time + Ed25519
signature) without verifying it. Clients verify for themselves
(``trustserve.transparency.verify``); nothing here is trusted or passed on. A bundle
without a readable checkpoint (an older KMS, or a malformed field) drops both series.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from trustserve.errors import TransparencyRefused
from trustserve.transparency import note

SIZE = "trustserve_kms_log_size"
COSIGNED_AGE = "trustserve_kms_log_cosigned_age_seconds"
_COSIGNATURE_BYTES = 8 + 64  # big-endian timestamp, then the Ed25519 signature


def log_figures(bundle: object) -> tuple[int, int | None] | None:
    """(checkpoint size, newest cosignature timestamp or None) of a bundle's
    ``transparency`` field, unverified; None when it holds no readable checkpoint."""
    field = bundle.get("transparency") if isinstance(bundle, dict) else None
    text = field.get("checkpoint") if isinstance(field, dict) else None
    if not isinstance(text, str):
        return None
    try:
        signed = note.parse(text)
        checkpoint = note.Checkpoint.from_text(signed.text)
    except TransparencyRefused:
        return None
    stamps = [
        struct.unpack(">Q", signature[:8])[0]
        for _, _, signature in signed.signatures
        if len(signature) == _COSIGNATURE_BYTES
    ]
    return checkpoint.size, max(stamps, default=None)


class KmsLogFigures(Collector):
    """The two gauges, from the last bundle ``seen``; the age is taken at each scrape."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._figures: tuple[int, int | None] | None = None

    def seen(self, bundle: dict[str, Any]) -> None:
        """A bundle the frontend got from the KMS (never raises: figures only)."""
        self._figures = log_figures(bundle)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        figures = self._figures
        if figures is None:
            return
        size, newest = figures
        yield GaugeMetricFamily(
            SIZE,
            "Size of the KMS's transparency log at the checkpoint in the bundle this frontend "
            "last got (unverified here: clients verify it)",
            value=size,
        )
        if newest is not None:
            yield GaugeMetricFamily(
                COSIGNED_AGE,
                "Seconds since the newest witness cosignature on that checkpoint, by the "
                "cosignature's own timestamp, unverified (the frontend has no witness keys; "
                "clients verify); absent when it has none",
                value=self._clock() - newest,
            )
