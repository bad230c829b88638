"""A synchronous client for the KMS: key release for workers, provisioning for model owners.

A release answer is accepted only when signed by the KMS identity the caller
trusts (``trust``: pinned, or from a bundle verified under the caller's policy);
the TLS CA only protects the connection, it does not say which KMS is genuine.

Several KMS replicas: give their URLs separated by commas. The client keeps to one
and moves to the next when it cannot reach it; every answer is still checked against
the one KMS identity the replicas share, so a replica that is not that KMS gains nothing.
"""

from __future__ import annotations

import base64
import logging
import ssl
import threading
from pathlib import Path
from types import TracebackType
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx

from trustserve import archive
from trustserve.archive import Manifest
from trustserve.attestation import EvidenceProvider
from trustserve.crypto import hpke
from trustserve.encoding import b64, unb64
from trustserve.errors import (
    ArchiveError,
    BadRequest,
    ConfigError,
    Forbidden,
    Unavailable,
    error_class,
)
from trustserve.keyrelease.protocol import (
    NONCE_SIZE,
    PROVISION_INFO,
    Released,
    make_request,
    model_digest,
    open_keys,
)
from trustserve.keyrelease.trust import NO_TRUST, KmsTrust

log = logging.getLogger(__name__)


# resend only what never reached the replica (``KmsClient._call``)
UNSENT: Literal["unsent"] = "unsent"
Resend = bool | Literal["unsent"]


def _maybe_sent(exc: httpx.TransportError) -> bool:
    """False only when the connection was never made (refused, no route, timed out while
    connecting): then the replica cannot have seen the request."""
    return not isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)


def parse_kms_urls(urls: str) -> list[str]:
    """``parse_kms_url`` of each comma-separated URL (several replicas of one KMS)."""
    parsed = [parse_kms_url(url.strip()) for url in urls.split(",") if url.strip()]
    if not parsed:
        raise ConfigError("no KMS URL given")
    return list(dict.fromkeys(parsed))


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


CONNECT_TIMEOUT = 5.0


class KmsClient:
    def __init__(
        self,
        base_url: str,
        ca_file: Path | None = None,
        ssl_context: ssl.SSLContext | None = None,
        token: str | None = None,
        timeout: float = 30.0,
        trust: KmsTrust | None = None,
    ) -> None:
        self.trust = trust
        self._identity: bytes | None = None
        verify: ssl.SSLContext | bool = True
        if ssl_context is not None:
            verify = ssl_context
        elif ca_file is not None:
            verify = ssl.create_default_context(cafile=str(ca_file))
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.urls = parse_kms_urls(base_url)
        self._current = 0
        self._moving = threading.Lock()  # threads (a frontend's, a worker's) share the client
        # a replica whose host vanished costs a caller the connect timeout before it
        # moves on to the next: short, as for Redis
        limits = httpx.Timeout(timeout, connect=min(CONNECT_TIMEOUT, timeout))
        self._http = httpx.Client(verify=verify, timeout=limits, headers=headers)

    @property
    def url(self) -> str:
        """The replica this client talks to now."""
        return self.urls[self._current]

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> KmsClient:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _call(
        self,
        method: str,
        path: str,
        body: Any = None,
        resend: Resend = True,
        text: bool = False,
    ) -> Any:
        """One request; on a transport error the next replica (if any) becomes current,
        and the request goes there with ``resend`` True (requests that may run twice),
        or ``UNSENT`` if the replica was never reached (provisioning, rotation: not run
        twice, but a refused connection sent nothing); never with False (a release names
        a challenge of the replica that issued it)."""
        for tried in range(len(self.urls)):
            replica = self._current
            url = self.urls[replica]
            try:
                response = self._http.request(method, url + path, json=body)
                break
            except httpx.TransportError as exc:  # a certificate mismatch is not "unreachable"
                from trustserve.cli_errors import transport_error

                problem, sent = f"KMS at {url}: {transport_error(exc)}", _maybe_sent(exc)
            except httpx.HTTPError as exc:
                problem, sent = f"KMS at {url} unreachable: {exc}", True
            if len(self.urls) == 1:
                raise Unavailable(problem)
            self._move_on(replica)
            log.warning("%s; moving to the KMS replica at %s", problem, self.url)
            if not (resend is True or (resend == UNSENT and not sent)):
                raise Unavailable(f"{problem} (not sent again: it may have reached that replica)")
            if tried == len(self.urls) - 1:
                raise Unavailable(f"{problem} (and {len(self.urls) - 1} other replica(s))")
        if response.status_code >= 400:
            try:
                answer = response.json()
                message, code = str(answer.get("error")), answer.get("code")
            except (ValueError, AttributeError):
                message, code = response.text[:200], None
            raise error_class(code).from_message(f"KMS: {message}")
        return response.text if text else response.json()

    def _move_on(self, failed: int) -> None:
        """The replica after ``failed`` becomes current, unless another thread has already
        moved on from it: threads that lost the same replica land on the same next one
        (each moving once more could bring one round to the dead replica again)."""
        with self._moving:
            if self._current == failed:
                self._current = (failed + 1) % len(self.urls)

    def kms_identity(self) -> bytes:
        """The identity key release answers must be signed with (resolved once)."""
        if self._identity is None:
            if self.trust is None:
                raise ConfigError(NO_TRUST)
            self._identity = self.trust.resolve(self.attestation_bundle)
        return self._identity

    def release(
        self,
        provider: EvidenceProvider,
        key_ids: list[str],
        archives: dict[str, str] | None = None,
    ) -> Released:
        """Prove this process with ``provider`` and receive ``key_ids`` (model ids, "serving",
        "broker"): challenge, ephemeral key, evidence, release, check the KMS signature,
        unwrap. ``archives`` gives, for each model key id, the digest of the archive held.
        The answer's lease starts, for the caller, before this call (see ``Released``)."""
        identity = self.kms_identity()
        for attempt in range(len(self.urls)):
            replica = self._current
            try:
                answer, private, nonce = self._release_once(provider, key_ids, archives)
                break
            except Unavailable:  # lost the replica after its challenge: start over at the next
                if replica == self._current or attempt == len(self.urls) - 1:
                    raise
        keys = open_keys(private, nonce, answer, identity)
        if sorted(keys) != sorted(set(key_ids)):
            raise Forbidden("KMS released other keys than asked for")
        return keys

    def _release_once(
        self, provider: EvidenceProvider, key_ids: list[str], archives: dict[str, str] | None
    ) -> tuple[Any, bytes, bytes]:
        """Challenge and release at one replica: (answer, private key, nonce)."""
        nonce = self.challenge()
        private, request = make_request(nonce, provider, key_ids, archives)
        return self._call("POST", "/v1/release", request.to_json(), resend=False), private, nonce

    def attestation_bundle(self, nonce: str | None = None) -> dict[str, Any]:
        """The KMS's bundle; ``nonce`` (base64url, as a client sent it) for fresh evidence."""
        path = "/v1/attestation" + (f"?nonce={nonce}" if nonce is not None else "")
        bundle: dict[str, Any] = self._call("GET", path)
        return bundle

    def challenge(self) -> bytes:
        """A fresh challenge nonce of the current replica (for a release or a join)."""
        answer = self._call("POST", "/v1/challenge")
        try:
            nonce = unb64(answer["nonce"], "nonce")
        except (BadRequest, KeyError, TypeError):
            raise Forbidden("KMS challenge is malformed") from None
        if len(nonce) != NONCE_SIZE:
            raise Forbidden("KMS challenge nonce has the wrong size")
        return nonce

    def join(self, body: dict[str, Any]) -> dict[str, Any]:
        """Ask the current replica for the root key (``trustserve.kms.join``)."""
        answer: Any = self._call("POST", "/v1/replicas/join", body, resend=False)
        if not isinstance(answer, dict):
            raise Forbidden("the join answer is not a JSON object")
        return answer

    def log_checkpoint(self) -> str:
        """The KMS's newest signed transparency checkpoint, cosignatures included (text)."""
        text: str = self._call("GET", "/v1/log/checkpoint", text=True)
        return text

    def log_consistency(self, old: int, new: int) -> dict[str, Any]:
        """The KMS's consistency proof between two sizes of its log (it proves itself)."""
        answer: dict[str, Any] = self._call("GET", f"/v1/log/proof/consistency?old={old}&new={new}")
        return answer

    def recovery_evidence(self, nonce: str) -> dict[str, Any]:
        """A recovering KMS's evidence for ``nonce`` (base64url), binding its recovery key."""
        answer: dict[str, Any] = self._call("GET", f"/v1/recovery/evidence?nonce={nonce}")
        if not isinstance(answer, dict):
            raise BadRequest("recovery evidence: not a JSON object")
        return answer

    def send_recovery_share(self, sealed: bytes) -> dict[str, Any]:
        """Post one owner's share, sealed to the recovering KMS's attested recovery key."""
        status: dict[str, Any] = self._call("POST", "/v1/recovery/shares", {"sealed": b64(sealed)})
        return status

    def provision_model_key(self, manifest: Manifest) -> tuple[str, bytes]:
        """A fresh key id and data key for the archive of ``manifest`` (management token
        needed); 409 if that model version already has a key."""
        private, public = hpke.generate_keypair()
        body = {"manifest": manifest.to_json(), "public_key": b64(public)}
        answer = self._call("POST", "/v1/keys/models", body, resend=UNSENT)
        key_id = str(answer["key_id"])
        sealed = base64.b64decode(answer["sealed"])
        return key_id, hpke.open(private, sealed, aad=key_id.encode(), info=PROVISION_INFO)

    def declare_release(self, body: dict[str, Any]) -> dict[str, Any]:
        """Log a ``release-declared`` entry (``trustserve.kms.declare``): ``{index, size}``."""
        answer: dict[str, Any] = self._call("POST", "/v1/log/declare", body, resend=UNSENT)
        return answer

    def rotate_serving_key(self) -> dict[str, Any]:
        key: dict[str, Any] = self._call("POST", "/v1/keys/serving/rotate", resend=UNSENT)
        return key


def fetch_model_key(
    client: KmsClient, provider: EvidenceProvider, model_archive: archive.ModelArchive
) -> bytes:
    """The data key of an encrypted archive, released for this archive's digest only."""
    if model_archive.encryption is None:
        raise ArchiveError(f"model {model_archive.manifest.name} archive is not encrypted")
    key_id = str(model_archive.encryption.get("key_id", ""))
    digest = model_digest(model_archive.manifest)
    return client.release(provider, [key_id], {key_id: digest})[key_id]
