"""What the frontend learns from the KMS: the public attestation bundle, and the broker key.

The bundle is public (clients verify it themselves); the frontend caches it
briefly and reads the current serving key ids from it, so that a request
sealed to an unknown key is answered with the key id to use instead. The
broker key is accepted only from a KMS whose identity the frontend trusts
(``client.trust``: pinned or from a bundle verified under its own policy); a
frontend without one refuses to start.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

from trustserve.attestation import EvidenceProvider
from trustserve.encoding import unb64
from trustserve.errors import ConfigError, TrustserveError, Unavailable
from trustserve.frontend.fresh_bundles import NonceBatcher
from trustserve.keyrelease.client import KmsClient
from trustserve.keyrelease.protocol import BROKER
from trustserve.keyrelease.trust import NO_TRUST

BUNDLE_TTL_S = 30.0
MIN_REFRESH_S = 0.5  # a refresh asked for by a client reaches the KMS at most this often


class FrontendKeys:
    def __init__(
        self,
        client: KmsClient,
        provider: EvidenceProvider,
        on_bundle: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        """``on_bundle``: told of every bundle got from the KMS (metrics: ``log_metrics``)."""
        if client.trust is None:
            raise ConfigError(NO_TRUST)
        self.client = client
        self.provider = provider
        self._on_bundle = on_bundle
        self._bundle: tuple[float, dict[str, Any]] | None = None
        self._lock = asyncio.Lock()
        self._fresh = NonceBatcher(self._fetch)

    async def broker_key(self) -> bytes:
        keys = await asyncio.to_thread(self.client.release, self.provider, [BROKER])
        return keys[BROKER]

    async def bundle(self, refresh: bool = False, nonce: bytes | None = None) -> dict[str, Any]:
        """The cached bundle; with a client's ``nonce``, a fresh one whose evidence binds it
        (with the nonces of concurrent clients: ``frontend.fresh_bundles``; not cached)."""
        if nonce is not None:
            return await self._fresh.bundle(nonce)
        async with self._lock:
            age = time.monotonic() - self._bundle[0] if self._bundle else float("inf")
            if age > BUNDLE_TTL_S or (refresh and age > MIN_REFRESH_S) or self._bundle is None:
                self._bundle = (time.monotonic(), await self._fetch(None))
            return self._bundle[1]

    async def log_checkpoint(self) -> str:
        """The KMS's newest transparency checkpoint, passed on unchanged (it is signed)."""
        text: str = await self._kms(self.client.log_checkpoint)
        return text

    async def log_consistency(self, old: int, new: int) -> dict[str, Any]:
        """The KMS's consistency proof from ``old`` to ``new``, passed on unchanged."""
        answer: dict[str, Any] = await self._kms(self.client.log_consistency, old, new)
        return answer

    async def _kms(self, call: Any, *args: Any) -> Any:
        try:
            return await asyncio.to_thread(call, *args)
        except TrustserveError as exc:
            if exc.status < 500:  # the KMS's own answer (a bound that was wrong): pass it on
                raise
            raise Unavailable(f"key service unavailable: {type(exc).__name__}") from None
        except Exception as exc:
            raise Unavailable(f"key service unavailable: {type(exc).__name__}") from None

    async def _fetch(self, nonce: str | None) -> dict[str, Any]:
        try:
            bundle: dict[str, Any] = await asyncio.to_thread(self.client.attestation_bundle, nonce)
        except Exception as exc:  # the KMS unreachable or failing: say so, 503
            raise Unavailable(f"key service unavailable: {type(exc).__name__}") from None
        if self._on_bundle is not None:
            self._on_bundle(bundle)
        return bundle

    async def serving_key_ids(self, expect: str | None = None) -> list[str]:
        """Key ids the KMS currently signs (current first); unverified: only for routing hints.

        If ``expect`` is not among them the bundle is fetched again (a key may have just
        been rotated in), at most every ``MIN_REFRESH_S``.
        """
        ids = self._ids(await self.bundle())
        if expect is not None and expect not in ids:
            ids = self._ids(await self.bundle(refresh=True))
        return ids

    async def ohttp_keys(self, expect: int | None = None) -> dict[int, tuple[str, bytes]]:
        """OHTTP key config id -> (serving key id, encoded key config) of the keys the KMS
        currently signs, current first; unverified (routing and discovery only: a client
        checks a config against its verified bundle). Refetched for an unknown ``expect``
        as ``serving_key_ids`` does."""
        keys = self._ohttp(await self.bundle())
        if expect is not None and expect not in keys:
            keys = self._ohttp(await self.bundle(refresh=True))
        return keys

    @staticmethod
    def _keys(bundle: dict[str, Any]) -> list[dict[str, Any]]:
        body = json.loads(unb64(bundle["serving_keys"]["payload"], "serving_keys.payload"))
        return [k for k in body["keys"] if float(k["not_after"]) > time.time()]

    @classmethod
    def _ids(cls, bundle: dict[str, Any]) -> list[str]:
        return [str(k["key_id"]) for k in cls._keys(bundle)]

    @classmethod
    def _ohttp(cls, bundle: dict[str, Any]) -> dict[int, tuple[str, bytes]]:
        return {
            int(k["ohttp_key_id"]): (str(k["key_id"]), unb64(k["ohttp_key_config"], "key config"))
            for k in cls._keys(bundle)
            if "ohttp_key_config" in k
        }
