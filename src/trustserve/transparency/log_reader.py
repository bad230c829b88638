"""Reads a KMS's public log routes (``trustserve.transparency.routes``) over HTTP(S).

Nothing read is trusted: a checkpoint is checked against the log's key, entries against
the checkpoint's root, proofs against signed roots (``trustserve.transparency.log_check``).
An unreachable KMS or an error answer is ``Unavailable`` / the error the KMS named.
"""

from __future__ import annotations

import base64
import binascii
import ssl
from pathlib import Path
from typing import Any

import httpx

from trustserve.errors import TransparencyRefused, Unavailable, error_class
from trustserve.transparency import routes


class LogReader:
    def __init__(self, url: str, ca: Path | None = None, timeout: float = 30.0) -> None:
        verify: ssl.SSLContext | bool = True
        if ca is not None:
            verify = ssl.create_default_context(cafile=str(ca))
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, verify=verify, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> LogReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _get(self, path: str, params: dict[str, int] | None = None) -> httpx.Response:
        try:
            response = self._http.get(path, params=params)
        except httpx.HTTPError as exc:
            raise Unavailable(f"the log at {self.url} is unreachable: {exc}") from None
        if response.status_code != 200:
            try:
                body = response.json()
                message, code = str(body.get("error")), body.get("code")
            except (ValueError, AttributeError):
                message, code = response.text[:200], None
            raise error_class(code).from_message(f"the log at {self.url}: {message}")
        return response

    def _json(self, path: str, params: dict[str, int] | None = None) -> Any:
        try:
            return self._get(path, params).json()
        except ValueError:
            raise TransparencyRefused(f"{path} did not answer JSON") from None

    def checkpoint(self) -> str:
        """The newest signed checkpoint with its cosignatures (unverified)."""
        return self._get(routes.CHECKPOINT).text

    def entries(self, start: int, end: int) -> list[dict[str, Any]]:
        """Entries ``start``..``end``-1, fetched in pages."""
        found: list[dict[str, Any]] = []
        while start + len(found) < end:
            first = start + len(found)
            last = min(end, first + routes.MAX_PAGE)
            answer = self._json(routes.ENTRIES, {"start": first, "end": last})
            found += routes.read_entries(answer, first, last)[1]
        return found

    def consistency(self, old: int, new: int) -> list[bytes]:
        answer = self._json(routes.CONSISTENCY, {"old": old, "new": new})
        return routes.read_proof(answer, old=old, new=new)

    def inclusion(self, index: int, size: int) -> list[bytes]:
        answer = self._json(routes.INCLUSION, {"index": index, "size": size})
        return routes.read_proof(answer, index=index, size=size)

    def identity(self) -> bytes:
        """The identity key the KMS's attestation bundle names (NOT verified here)."""
        answer = self._json("/v1/attestation")
        try:
            identity = base64.b64decode(answer["identity_public_key"], validate=True)
        except (TypeError, KeyError, binascii.Error):
            raise TransparencyRefused("the KMS's bundle names no identity key") from None
        if len(identity) != 32:
            raise TransparencyRefused("the KMS's identity key is not an Ed25519 key")
        return identity
