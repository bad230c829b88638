"""A synchronous client for the KMS: key release for workers, provisioning for model owners."""

from __future__ import annotations

import base64
import ssl
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import httpx

from trustserve import archive
from trustserve.attestation import EvidenceProvider
from trustserve.crypto import hpke, model_encryption
from trustserve.encoding import b64
from trustserve.errors import (
    BadRequest,
    ConfigError,
    Conflict,
    Forbidden,
    NotFound,
    TrustserveError,
    Unauthorized,
    Unavailable,
)
from trustserve.kms.release import PROVISION_INFO, make_request, open_keys

_ERRORS: dict[int, type[TrustserveError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
}


def parse_kms_url(url: str) -> str:
    """The KMS base URL, checked: http(s), a host, a valid port, no credentials, query or
    fragment; ``ConfigError`` says what is wrong."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"KMS URL {url!r} is not a URL: {exc}") from None
    if parts.scheme not in ("https", "http"):
        raise ConfigError(f"KMS URL must start with https:// (or http://), not {url!r}")
    if not parts.hostname or any(c.isspace() or not c.isprintable() for c in url):
        raise ConfigError(f"KMS URL {url!r} has no valid host")
    if parts.username is not None or parts.password is not None:
        raise ConfigError(
            "KMS URL must not carry credentials (put a token in the client, not the URL)"
        )
    if parts.query or parts.fragment:
        raise ConfigError(f"KMS URL {url!r} must not have a query or fragment")
    if port == 0:
        raise ConfigError(f"KMS URL {url!r} has port 0")
    try:
        return str(httpx.URL(url)).rstrip("/")
    except httpx.InvalidURL as exc:
        raise ConfigError(f"KMS URL {url!r} is not a URL: {exc}") from None


class KmsClient:
    def __init__(
        self,
        base_url: str,
        ca_file: Path | None = None,
        ssl_context: ssl.SSLContext | None = None,
        token: str | None = None,
        timeout: float = 30.0,
    ) -> None:
        verify: ssl.SSLContext | bool = True
        if ssl_context is not None:
            verify = ssl_context
        elif ca_file is not None:
            verify = ssl.create_default_context(cafile=str(ca_file))
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(
            base_url=parse_kms_url(base_url), verify=verify, timeout=timeout, headers=headers
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> KmsClient:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        try:
            response = self._http.request(method, path, json=body)
        except httpx.HTTPError as exc:
            raise Unavailable(f"KMS at {self._http.base_url} unreachable: {exc}") from None
        if response.status_code >= 400:
            try:
                message = str(response.json().get("error"))
            except ValueError:
                message = response.text[:200]
            raise _ERRORS.get(response.status_code, TrustserveError)(f"KMS: {message}")
        return response.json()

    def release(self, provider: EvidenceProvider, key_ids: list[str]) -> dict[str, bytes]:
        """Prove this process with ``provider`` and receive ``key_ids`` (model ids, "serving",
        "broker"): challenge, ephemeral key, evidence, release, unwrap."""
        nonce = base64.b64decode(self._call("POST", "/v1/challenge")["nonce"])
        private, request = make_request(nonce, provider, key_ids)
        keys = open_keys(private, nonce, self._call("POST", "/v1/release", request.to_json()))
        if sorted(keys) != sorted(set(key_ids)):
            raise Forbidden("KMS released other keys than asked for")
        return keys

    def attestation_bundle(self) -> dict[str, Any]:
        bundle: dict[str, Any] = self._call("GET", "/v1/attestation")
        return bundle

    def provision_model_key(self, model: str, version: str) -> tuple[str, bytes]:
        """Key id and data key for ``model`` ``version`` (management token needed)."""
        private, public = hpke.generate_keypair()
        body = {"model": model, "version": version, "public_key": b64(public)}
        answer = self._call("POST", "/v1/keys/models", body)
        key_id = str(answer["key_id"])
        sealed = base64.b64decode(answer["sealed"])
        return key_id, hpke.open(private, sealed, aad=key_id.encode(), info=PROVISION_INFO)

    def rotate_serving_key(self) -> dict[str, Any]:
        key: dict[str, Any] = self._call("POST", "/v1/keys/serving/rotate")
        return key


def fetch_model_key(client: KmsClient, provider: EvidenceProvider, key_id: str) -> bytes:
    return client.release(provider, [key_id])[key_id]


def decrypt_model(
    client: KmsClient, provider: EvidenceProvider, model_archive: archive.ModelArchive
) -> bytes:
    """The plaintext model of a parsed encrypted archive, in memory only.

    The worker's one-liner: fetch the key named in the archive header, decrypt.
    Raises Forbidden if this process's evidence is refused (it cannot serve the
    model then), NotFound if the KMS has no such key, ArchiveError on tampering.
    """
    if model_archive.encryption is None:
        raise BadRequest(f"model {model_archive.manifest.name} archive is not encrypted")
    key_id = str(model_archive.encryption.get("key_id", ""))
    data_key = fetch_model_key(client, provider, key_id)
    return model_encryption.decrypt_archive(model_archive, data_key)


def open_archive(client: KmsClient, provider: EvidenceProvider, path: Path) -> bytes:
    """``decrypt_model`` for the archive file at ``path``."""
    return decrypt_model(client, provider, archive.load(path))
