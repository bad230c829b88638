"""What a worker obtains from the KMS by attestation: model key, serving keys, broker key.

One release when the worker starts: the worker makes evidence with its
configured provider, the KMS checks it against its release policy and wraps the
keys to the worker's ephemeral key; the worker accepts the answer only when it
is signed by the KMS identity it trusts (``KmsTrust``). Nothing released is
written anywhere. With a KMS configured, a plaintext archive is refused before
anything is asked for: the model store is untrusted, and a plaintext archive
is whatever its last writer wanted served.

Serving keys are then refreshed every ``refresh_interval`` seconds (default 60,
sooner for a short lease): the ``ServingKeySet`` the KMS releases is the truth,
so a key it no longer lists (rotated out) is dropped at the next refresh. A
request naming a key id the worker does not hold triggers one extra refresh (at
most every ``REFRESH_AFTER_S``), for a key just rotated in. Each refresh is
counted by result (ok, failed: KMS unreachable, refused: the KMS no longer
admits this worker); the worker loop hands the counts to the frontend with its
next answer (``drain_refreshes``).

Every released set comes with a lease the KMS signs (``Released``). The worker
counts it on its own monotonic clock from the moment it asked (before the
challenge: no delay of the host's can stretch it) and needs no one to enforce
it: when the lease ends unrenewed (the host blocks the KMS, say), every serving
key is dropped and sealed requests get 503 ``StaleServingKey`` until a refresh
succeeds; a key whose own ``not_after`` (a rotated-out key's grace) comes first
is dropped then.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from trustserve import archive
from trustserve.attestation import EvidenceProvider, make_provider
from trustserve.crypto.keys import ServingKey, ServingKeySet
from trustserve.crypto.model_encryption import decrypt_archive
from trustserve.errors import (
    ArchiveError,
    ConfigError,
    Forbidden,
    StaleServingKey,
    TrustserveError,
    UnknownKeyId,
)
from trustserve.keyrelease.client import KmsClient
from trustserve.keyrelease.protocol import BROKER, SERVING, Released, model_digest
from trustserve.keyrelease.trust import NO_TRUST, KmsTrust

log = logging.getLogger(__name__)
REFRESH_AFTER_S = 1.0  # an unknown key id makes the worker ask the KMS again at most once a second
REFRESH_INTERVAL_S = 60.0  # serving keys are refreshed this often regardless
MIN_WAIT_S = 0.05


@dataclass(frozen=True)
class Lease:
    """When, on the worker's monotonic clock, the held serving keys stop being usable."""

    length: float  # seconds, as the KMS stated it
    ends: float  # the whole set
    key_ends: dict[str, float]  # each key: the lease or its own not_after, whichever first


class KeyRing:
    """The worker's released keys, refreshed on a timer and on an unknown key id."""

    def __init__(
        self,
        client: KmsClient | None,
        provider: EvidenceProvider | None,
        refresh_interval: float = REFRESH_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.provider = provider
        self.refresh_interval = refresh_interval
        self.clock = clock  # monotonic: the host's wall clock cannot stretch a lease
        self.serving: ServingKeySet | None = None
        self.broker: bytes | None = None
        self.lease: Lease | None = None  # None: keys that came from no KMS (or none held)
        self._lapsed = False  # the lease ended unrenewed: 503 until a refresh succeeds
        self._lock = threading.Lock()  # installing and expiring the set
        self._refreshed = 0.0
        self._refreshes: dict[str, int] = {}  # by result, since the last drain
        self._count_lock = threading.Lock()  # refreshes run on worker threads

    def obtain(self, model: archive.ModelArchive) -> bytes:
        """Release what this worker needs and return the plaintext model (memory only)."""
        name = model.manifest.name
        if self.client is None or self.provider is None:
            if model.encrypted:
                raise ConfigError(f"model {name} is encrypted: the worker needs --kms to serve it")
            return model.payload
        if model.encryption is None:
            raise ArchiveError(
                f"model {name} version {model.manifest.version}: the archive is not encrypted; "
                "with a KMS configured only encrypted archives are served (the model store "
                "is untrusted: anyone who can write it could swap the model)"
            )
        key_id = str(model.encryption.get("key_id", ""))
        wanted = [SERVING, BROKER, key_id]
        asked_at = self.clock()
        try:
            keys = self.client.release(
                self.provider, wanted, {key_id: model_digest(model.manifest)}
            )
        except Forbidden as exc:
            raise Forbidden(
                f"this worker got no keys for {name} ({exc}); it cannot serve that model "
                "(a KMS refusal names the failed claim in the KMS log)"
            ) from None
        self._install(keys, asked_at)
        self.broker = keys[BROKER]
        self._refreshed = self.clock()
        return decrypt_archive(model, keys[key_id])

    def _install(self, released: Released, asked_at: float) -> ServingKeySet:
        """Hold the released serving keys under their lease, counted from ``asked_at``."""
        fresh = ServingKeySet.from_bytes(released[SERVING])
        ends = {k.key_id: asked_at + released.key_lease(k.not_after) for k in fresh.keys}
        with self._lock:
            self.lease = Lease(released.lease, asked_at + released.lease, ends)
            self.serving = fresh
            self._lapsed = False
        return fresh

    def expire(self) -> None:
        """Drop what the lease no longer covers: every serving key once it ends, a key
        whose own end (a rotated-out key's grace) comes first at that end. Nobody is
        asked: an unreachable KMS cannot keep a key alive."""
        with self._lock:
            lease, serving = self.lease, self.serving
            if lease is None or serving is None:
                return
            now = self.clock()
            kept = tuple(k for k in serving.keys if now < lease.key_ends.get(k.key_id, 0.0))
            if now >= lease.ends or not kept:
                self.serving, self._lapsed = None, True
                log.error(
                    "serving keys dropped: their %.0f s lease from the KMS ended without "
                    "renewal; sealed requests are refused until the KMS renews it",
                    lease.length,
                )
            elif len(kept) < len(serving.keys):
                self.serving = ServingKeySet(kept)
                gone = {k.key_id for k in serving.keys} - {k.key_id for k in kept}
                log.info("serving keys %s reached their end; dropped", ", ".join(sorted(gone)))

    def serving_private_key(self, key_id: str, now: float) -> bytes:
        return self._private_key(lambda keys: keys.find(key_id, now))

    def ohttp_private_key(self, config_id: int, now: float) -> bytes:
        """The private key of the serving key whose OHTTP key config id is ``config_id``."""
        return self._private_key(lambda keys: keys.find_ohttp(config_id, now))

    def _private_key(self, find: Callable[[ServingKeySet], ServingKey]) -> bytes:
        self.expire()
        if self.serving is None:
            if self._lapsed:
                raise StaleServingKey(
                    "this worker's serving keys outlived their lease from the KMS without "
                    "renewal (the KMS is unreachable) and were dropped: retry later"
                )
            raise UnknownKeyId("this worker holds no serving key")
        try:
            key = find(self.serving)
        except UnknownKeyId:  # UnknownOhttpKey too
            if not self._refresh_for_unknown() or self.serving is None:
                raise
            key = find(self.serving)
        assert key.private_key is not None
        return key.private_key

    def refresh(self) -> None:
        """Replace the serving keys by the set the KMS releases now (drops rotated-out keys)."""
        if self.client is None or self.provider is None:
            return
        asked_at = self._refreshed = self.clock()
        try:
            keys = self.client.release(self.provider, [SERVING])
        except Forbidden:
            self._count("refused")
            raise
        except TrustserveError:
            self._count("failed")
            raise
        self._count("ok")
        old = {k.key_id for k in self.serving.keys} if self.serving else set()
        fresh = self._install(keys, asked_at)
        dropped = old - {k.key_id for k in fresh.keys}
        if dropped:
            log.info("serving keys refreshed; dropped %s", ", ".join(sorted(dropped)))

    def _count(self, result: str) -> None:
        with self._count_lock:
            self._refreshes[result] = self._refreshes.get(result, 0) + 1

    def drain_refreshes(self) -> dict[str, int] | None:
        """The refresh counts since the last call (None if none): one dict check when idle."""
        if not self._refreshes:
            return None
        with self._count_lock:
            counts, self._refreshes = self._refreshes, {}
        return counts

    def _refresh_for_unknown(self) -> bool:
        """Ask the KMS again (the serving key may have been rotated); at most every second."""
        if self.client is None or self.clock() - self._refreshed < REFRESH_AFTER_S:
            return False
        self.refresh()
        return True

    def _next_wait(self) -> float:
        """Seconds to the next refresh: the interval, a quarter of the lease if shorter (so
        three more tries fit before it ends), and never past its end (to drop the keys)."""
        wait = self.refresh_interval
        lease = self.lease
        if lease is not None and not self._lapsed:
            wait = min(wait, lease.length / 4, lease.ends - self.clock())
        return max(MIN_WAIT_S, wait)

    async def keep_fresh(self, stop: asyncio.Event) -> None:
        """Until ``stop``: refresh every ``refresh_interval`` s (or sooner, see ``_next_wait``).
        A refusal drops every serving key (the KMS no longer admits this worker); while the
        KMS is unreachable the last set is kept until its lease ends, then dropped."""
        if self.client is None:
            return
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), self._next_wait())
                return
            except TimeoutError:
                pass
            self.expire()
            try:
                await asyncio.to_thread(self.refresh)
            except Forbidden as exc:  # refused (policy changed) or not the trusted KMS
                with self._lock:
                    self.serving, self.lease = None, None
                log.error("serving key refresh refused; this worker drops its keys: %s", exc)
            except TrustserveError as exc:
                log.warning(
                    "serving key refresh failed (keeping the set its lease covers): %s", exc
                )
            self.expire()


def key_ring(
    kms_url: str | None,
    home: Path,
    provider: str,
    ca: Path | None,
    trust: KmsTrust | None = None,
    refresh_interval: float = REFRESH_INTERVAL_S,
    **options: str,
) -> KeyRing:
    """The worker's key ring; with a KMS, ``trust`` must say which KMS identity to believe.
    ``options`` go to the evidence provider."""
    if kms_url is None:
        return KeyRing(None, None)
    if trust is None:
        raise ConfigError(NO_TRUST)
    if refresh_interval <= 0:
        raise ConfigError("--key-refresh must be a positive number of seconds")
    client = KmsClient(kms_url, ca_file=ca, trust=trust)
    return KeyRing(client, make_provider(provider, home, **options), refresh_interval)
