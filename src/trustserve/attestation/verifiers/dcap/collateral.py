"""Where DCAP collateral comes from: the verifier's own configuration, never the evidence.

Collateral (the PCK and root CA CRLs, the TCB info of the platform's FMSPC, the
QE identity, with their issuer chains and signatures) decides which TCB status
and advisories a quote gets. A requester that chose it could pick the most
favourable set still valid, so collateral inside evidence is ignored and a
verifier (the KMS, a client) names its own sources:

* a **collateral directory**: one JSON file per TEE type, FMSPC and PCK CA,
  ``<dir>/<tee>-<fmspc>-<ca>.json`` (e.g. ``tdx-b0c06f000000-platform.json``,
  ``sgx-00a067110000-processor.json``), each holding the JSON that
  ``dcap_qvl.get_collateral`` and a PCCS produce;
* a **PCCS** (or Intel PCS) URL: asked on first use for each (tee, FMSPC, CA)
  and cached in memory until that collateral expires. ``https://`` only: over
  plain HTTP whoever is on the path could answer with older collateral that is
  still valid; ``TRUSTSERVE_INSECURE_PCCS_HTTP=1`` allows it (a test PCCS), loudly.

A collateral set expires at the earliest ``nextUpdate`` of its TCB info, QE
identity, PCK CRL and root CA CRL. An expired file is not used (the PCCS is
asked instead, when there is one); ``dcap-qvl`` checks validity again when it
verifies. No usable collateral refuses the quote (claim ``collateral``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime
import json
import logging
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import dcap_qvl
from cryptography import x509

from trustserve.errors import AttestationRefused, ConfigError

FETCH_TIMEOUT_S = 30.0
INSECURE_HTTP_ENV = "TRUSTSERVE_INSECURE_PCCS_HTTP"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CollateralKey:
    """What one collateral set covers: the TEE type, the platform's FMSPC and its PCK CA."""

    tee: str
    fmspc: str
    ca: str

    @classmethod
    def of(cls, quote: bytes) -> CollateralKey:
        try:
            parsed = dcap_qvl.parse_quote(quote)
            return cls("tdx" if parsed.is_tdx() else "sgx", parsed.fmspc().lower(), parsed.ca())
        except ValueError as exc:
            raise AttestationRefused("quote", f"cannot read the quote's FMSPC: {exc}") from None

    @property
    def file_name(self) -> str:
        return f"{self.tee}-{self.fmspc}-{self.ca}.json"

    def __str__(self) -> str:
        return f"{self.tee} FMSPC {self.fmspc} ({self.ca} CA)"


class CollateralSource(Protocol):
    def collateral(self, quote: bytes, now: float) -> dict[str, Any]:
        """Collateral for ``quote`` valid at ``now``; else AttestationRefused (collateral)."""
        ...


def _refused(detail: str) -> AttestationRefused:
    return AttestationRefused("collateral", detail)


def _time(text: Any) -> float:
    return datetime.datetime.fromisoformat(str(text).replace("Z", "+00:00")).timestamp()


def expires_at(collateral: dict[str, Any], key: CollateralKey, where: str) -> float:
    """When ``collateral`` stops being valid; refused if it is not collateral for ``key``."""
    try:
        tcb_info = json.loads(collateral["tcb_info"])
        qe_identity = json.loads(collateral["qe_identity"])
        crls = [
            x509.load_der_x509_crl(bytes.fromhex(collateral[name]))
            for name in ("pck_crl", "root_ca_crl")
        ]
        updates = [_time(tcb_info["nextUpdate"]), _time(qe_identity["nextUpdate"])]
        fmspc, tee = str(tcb_info["fmspc"]).lower(), str(tcb_info["id"]).lower()
    except (KeyError, TypeError, ValueError) as exc:
        raise _refused(f"{where} is not DCAP collateral ({type(exc).__name__}: {exc})") from None
    if fmspc != key.fmspc or tee != key.tee:
        raise _refused(f"{where} holds {tee} FMSPC {fmspc}, not {key}")
    for crl in crls:
        if crl.next_update_utc is None:
            raise _refused(f"{where}: a CRL has no nextUpdate")
        updates.append(crl.next_update_utc.timestamp())
    return min(updates)


def _stamp(when: float) -> str:
    return datetime.datetime.fromtimestamp(when, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class CollateralDirectory:
    """Operator-managed files ``<dir>/<tee>-<fmspc>-<ca>.json``."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        if not self.path.is_dir():
            raise ConfigError(f"collateral directory {self.path} does not exist")

    def collateral(self, quote: bytes, now: float) -> dict[str, Any]:
        key = CollateralKey.of(quote)
        path = self.path / key.file_name
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            raise _refused(f"no collateral for {key}: {path} does not exist") from None
        except (OSError, ValueError) as exc:
            raise _refused(f"collateral file {path} is unreadable: {exc}") from None
        if not isinstance(raw, dict):
            raise _refused(f"collateral file {path} is not a JSON object")
        until = expires_at(raw, key, str(path))
        if now >= until:
            raise _refused(f"collateral file {path} expired at {_stamp(until)}")
        return raw


def fetch_collateral(quote: bytes, pccs_url: str) -> dict[str, Any]:
    """Collateral for ``quote`` from the PCCS (or Intel PCS) at ``pccs_url``."""

    async def fetch() -> Any:
        return await dcap_qvl.get_collateral(pccs_url, quote)

    # dcap-qvl's fetch is a coroutine; run it on its own loop so callers inside
    # an event loop (the KMS) can use this synchronous source too.
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    try:
        collateral = pool.submit(asyncio.run, fetch()).result(timeout=FETCH_TIMEOUT_S)
    except (RuntimeError, ValueError, OSError, TimeoutError) as exc:
        raise _refused(f"cannot fetch collateral from {pccs_url}: {exc}") from None
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    raw: dict[str, Any] = json.loads(collateral.to_json())
    return raw


def _plain_http(url: str) -> None:
    """Refuse a plain-HTTP PCCS unless ``INSECURE_HTTP_ENV`` is 1, and then warn."""
    if os.environ.get(INSECURE_HTTP_ENV) != "1":
        raise ConfigError(
            f"PCCS URL {url} is plain HTTP: whoever is on the path could answer with "
            "older collateral that is still valid (a TCB info or CRL from before a "
            f"recovery or revocation); use https://, or set {INSECURE_HTTP_ENV}=1 for a "
            "test PCCS"
        )
    log.warning(
        "INSECURE, TESTS ONLY (%s=1): collateral from %s comes over plain HTTP; whoever is "
        "on the path decides which valid collateral quotes are judged by",
        INSECURE_HTTP_ENV,
        url,
    )


class Pccs:
    """Collateral from a PCCS, kept in memory until it expires."""

    def __init__(
        self,
        url: str,
        fetch: Callable[[bytes, str], dict[str, Any]] = fetch_collateral,
    ) -> None:
        if not url.startswith(("https://", "http://")):
            raise ConfigError(f"PCCS URL must be https://…, got {url!r}")
        if url.startswith("http://"):
            _plain_http(url)
        self.url = url
        self._fetch = fetch
        self._lock = threading.Lock()
        self._cache: dict[CollateralKey, tuple[float, dict[str, Any]]] = {}

    def collateral(self, quote: bytes, now: float) -> dict[str, Any]:
        key = CollateralKey.of(quote)
        with self._lock:
            cached = self._cache.get(key)
        if cached is not None and now < cached[0]:
            return cached[1]
        raw = self._fetch(quote, self.url)
        until = expires_at(raw, key, f"collateral from {self.url}")
        if now >= until:
            raise _refused(f"the PCCS at {self.url} served collateral that expired {_stamp(until)}")
        with self._lock:
            self._cache[key] = (until, raw)
        return raw


class FirstOf:
    """The first source that has valid collateral (a directory, then a PCCS)."""

    def __init__(self, sources: Sequence[CollateralSource]) -> None:
        self.sources = tuple(sources)

    def collateral(self, quote: bytes, now: float) -> dict[str, Any]:
        reasons = []
        for source in self.sources:
            try:
                return source.collateral(quote, now)
            except AttestationRefused as exc:
                if exc.claim != "collateral":
                    raise
                reasons.append(exc.detail)
        raise _refused("; ".join(reasons) or "no collateral source")


class FixedCollateral:
    """One collateral set the operator gave (``trustserve verify --collateral FILE``)."""

    def __init__(self, raw: dict[str, Any]) -> None:
        self.raw = raw

    def collateral(self, quote: bytes, now: float) -> dict[str, Any]:
        return self.raw


def collateral_source(
    directory: Path | None = None, pccs_url: str | None = None
) -> CollateralSource | None:
    """The configured source: the directory first, then the PCCS; None if neither is set."""
    sources: list[CollateralSource] = []
    if directory is not None:
        sources.append(CollateralDirectory(directory))
    if pccs_url:
        sources.append(Pccs(pccs_url))
    if not sources:
        return None
    return sources[0] if len(sources) == 1 else FirstOf(sources)
