"""etcd as the KMS replicas' ``StateStore``, through etcd's v3 JSON gateway over mutual TLS.

``kms serve --state 'etcd+https://HOST:PORT,HOST:PORT/PREFIX?ca=CA&cert=CERT&key=KEY'``:
the members to try in turn, a key prefix (default ``/trustserve/kms``), the CA that
signed the members' certificates and this replica's client certificate and key.
Two keys under the prefix: ``state`` (the sealed document of ``trustserve.kms.store``)
and ``root-key`` (the root key wrapped by the operator secret, as ``root-key.json``
holds it on a single host). etcd sees ciphertext only.

Reads are linearizable (etcd's default) and a write is a transaction: compare the key's
``mod_revision``, then put. etcd acknowledges it once a majority of members hold it, so
an acknowledged write survives the loss of any one member of three. A member that does
not answer (or answers 5xx, as during an election) is left for the next one; a write
whose answer was lost is sent again with a read of the key on failure, so a write that
did land the first time is recognised as this replica's own (its bytes are unique).
"""

from __future__ import annotations

import base64
import logging
import ssl
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

from trustserve.errors import ConfigError, Conflict, Unavailable

log = logging.getLogger("trustserve.kms")
SCHEME = "etcd+https"
DEFAULT_PREFIX = "/trustserve/kms"
REQUEST_TIMEOUT = 10.0
GIVE_UP_AFTER = 60.0  # seconds without an answer from any member
STATE_HELP = (
    "where the KMS state lives: the files under --home (default), or, for replicas, their "
    f"shared etcd: '{SCHEME}://HOST:PORT,HOST:PORT/PREFIX?ca=CA.pem&cert=CERT.pem&key=KEY.pem'"
)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class EtcdClient:
    """The few etcd v3 calls the KMS needs, moving between members when one fails."""

    def __init__(self, endpoints: list[str], ca: Path, cert: Path, key: Path) -> None:
        if not endpoints:
            raise ConfigError("the etcd state URL names no member")
        self.endpoints = endpoints
        self._current = 0
        try:
            context = ssl.create_default_context(cafile=str(ca))
            context.load_cert_chain(cert, key)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"etcd TLS files unusable ({ca}, {cert}): {exc}") from None
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        self._http = httpx.Client(verify=context, timeout=REQUEST_TIMEOUT)

    def close(self) -> None:
        self._http.close()

    def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST ``body`` to ``/v3/<path>`` of a member that answers; Unavailable if none
        does for ``GIVE_UP_AFTER`` seconds."""
        deadline = time.monotonic() + GIVE_UP_AFTER
        failures = 0
        while True:
            url = self.endpoints[self._current]
            try:
                answer = self._http.post(f"{url}/v3/{path}", json=body)
                if answer.status_code == 200:
                    parsed: dict[str, Any] = answer.json()
                    return parsed
                problem = f"HTTP {answer.status_code}: {answer.text[:200]}"
                if answer.status_code < 500:
                    raise ConfigError(f"etcd at {url} refused {path}: {problem}")
            except httpx.TransportError as exc:
                problem = f"{type(exc).__name__}: {exc}"
            except ValueError:
                problem = "an answer that is not JSON"
            failures += 1
            if time.monotonic() > deadline:
                raise Unavailable(f"no etcd member answered {path}; last: {url}: {problem}")
            self._current = (self._current + 1) % len(self.endpoints)
            log.warning("etcd %s: %s; trying %s", url, problem, self.endpoints[self._current])
            if failures % len(self.endpoints) == 0:
                time.sleep(min(0.1 * failures, 1.0))  # every member failed: an election

    def get(self, key: str) -> tuple[bytes | None, int]:
        answer = self.call("kv/range", {"key": _b64(key.encode())})
        kvs = answer.get("kvs") or []
        if not kvs:
            return None, 0
        return base64.b64decode(kvs[0].get("value", "")), int(kvs[0]["mod_revision"])

    def put_if(self, key: str, expected_revision: int, value: bytes) -> bool:
        """Put ``value`` if ``key``'s mod_revision is ``expected_revision`` (0: absent).
        True if stored, by this call or by an earlier one whose answer was lost."""
        encoded = _b64(key.encode())
        answer = self.call(
            "kv/txn",
            {
                "compare": [
                    {
                        "key": encoded,
                        "result": "EQUAL",
                        "target": "MOD",
                        "mod_revision": str(expected_revision),
                    }
                ],
                "success": [{"request_put": {"key": encoded, "value": _b64(value)}}],
                "failure": [{"request_range": {"key": encoded}}],
            },
        )
        if answer.get("succeeded"):
            return True
        for response in answer.get("responses") or []:
            for kv in response.get("response_range", {}).get("kvs") or []:
                if base64.b64decode(kv.get("value", "")) == value:
                    return True  # this replica's own write, acknowledged before
        return False


class EtcdKey:
    """One key in etcd as a ``StateStore``."""

    def __init__(self, client: EtcdClient, key: str, root_key: str) -> None:
        self.client, self.key, self._root_key = client, key, root_key
        self.where = f"etcd {key}"

    def load(self) -> tuple[bytes | None, int]:
        return self.client.get(self.key)

    def compare_and_set(self, expected_revision: int, blob: bytes) -> bool:
        return self.client.put_if(self.key, expected_revision, blob)

    def root_key_store(self) -> EtcdRootKey:
        return EtcdRootKey(self.client, self._root_key)


class EtcdRootKey:
    """The wrapped root key in etcd, written once (a ``KeyStore``)."""

    def __init__(self, client: EtcdClient, key: str) -> None:
        self.client, self.key = client, key

    def load(self) -> bytes | None:
        return self.client.get(self.key)[0]

    def store(self, blob: bytes) -> None:
        if not self.client.put_if(self.key, 0, blob):
            raise Conflict(f"another KMS replica stored the root key at etcd {self.key} first")


def is_etcd_url(text: str | None) -> bool:
    return bool(text) and str(text).startswith("etcd+")


def open_etcd_state(url: str) -> EtcdKey:
    """The ``StateStore`` a ``--state`` etcd URL names (ConfigError saying what is wrong)."""
    parts = urlsplit(url)
    if parts.scheme != SCHEME:
        raise ConfigError(f"an etcd state URL starts with {SCHEME}:// (client TLS), not {url!r}")
    hosts = [h for h in parts.netloc.split(",") if h]
    if not hosts or any("@" in h for h in hosts):
        raise ConfigError("the etcd state URL names no members (HOST:PORT,HOST:PORT)")
    query = parse_qs(parts.query)
    files: dict[str, Path] = {}
    for name in ("ca", "cert", "key"):
        values = query.get(name)
        if not values:
            raise ConfigError(f"the etcd state URL needs {name}=FILE (mutual TLS with etcd)")
        files[name] = Path(values[0])
    unknown = set(query) - set(files)
    if unknown:
        raise ConfigError(f"the etcd state URL has unknown parameters: {sorted(unknown)}")
    prefix = parts.path.rstrip("/") or DEFAULT_PREFIX
    client = EtcdClient([f"https://{h}" for h in hosts], files["ca"], files["cert"], files["key"])
    return EtcdKey(client, f"{prefix}/state", f"{prefix}/root-key")
