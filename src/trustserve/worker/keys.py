"""What a worker obtains from the KMS by attestation: model key, serving keys, broker key.

One release per worker start: the worker makes evidence with its configured
provider, the KMS checks it against its release policy and wraps the keys to
the worker's ephemeral key. Nothing released is written anywhere.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from trustserve import archive
from trustserve.attestation import EvidenceProvider, make_provider
from trustserve.crypto.keys import ServingKeySet
from trustserve.crypto.model_encryption import decrypt_archive
from trustserve.errors import ConfigError, Forbidden, UnknownKeyId
from trustserve.kms.client import KmsClient
from trustserve.kms.release import BROKER, SERVING

log = logging.getLogger(__name__)
REFRESH_AFTER_S = 1.0  # a worker asks the KMS again for new serving keys at most this often


class KeyRing:
    """The worker's released keys, and a rate-limited refresh for newly rotated serving keys."""

    def __init__(self, client: KmsClient | None, provider: EvidenceProvider | None) -> None:
        self.client = client
        self.provider = provider
        self.serving: ServingKeySet | None = None
        self.broker: bytes | None = None
        self._refreshed = 0.0

    def obtain(self, model: archive.ModelArchive) -> bytes:
        """Release what this worker needs and return the plaintext model (memory only)."""
        if self.client is None or self.provider is None:
            if model.encrypted:
                raise ConfigError(
                    f"model {model.manifest.name} is encrypted: the worker needs --kms to serve it"
                )
            return model.payload
        wanted = [SERVING, BROKER]
        if model.encrypted:
            assert model.encryption is not None
            wanted.append(str(model.encryption["key_id"]))
        try:
            keys = self.client.release(self.provider, wanted)
        except Forbidden:
            raise Forbidden(
                f"the KMS refused this worker the keys for {model.manifest.name}; "
                "it cannot serve that model (see the KMS log for the claim that failed)"
            ) from None
        self.serving = ServingKeySet.from_bytes(keys[SERVING])
        self.broker = keys[BROKER]
        self._refreshed = time.monotonic()
        if not model.encrypted:
            return model.payload
        return decrypt_archive(model, keys[wanted[-1]])

    def serving_private_key(self, key_id: str, now: float) -> bytes:
        if self.serving is None:
            raise UnknownKeyId("this worker holds no serving key")
        try:
            key = self.serving.find(key_id, now)
        except UnknownKeyId:
            if not self._refresh():
                raise
            key = self.serving.find(key_id, now)
        assert key.private_key is not None
        return key.private_key

    def _refresh(self) -> bool:
        """Ask the KMS again (the serving key may have been rotated); at most every few seconds."""
        if self.client is None or self.provider is None:
            return False
        if time.monotonic() - self._refreshed < REFRESH_AFTER_S:
            return False
        self._refreshed = time.monotonic()
        keys = self.client.release(self.provider, [SERVING])
        self.serving = ServingKeySet.from_bytes(keys[SERVING])
        log.info("serving keys refreshed from the KMS")
        return True


def key_ring(
    kms_url: str | None, home: Path, provider: str, ca: Path | None, **options: str
) -> KeyRing:
    if kms_url is None:
        return KeyRing(None, None)
    client = KmsClient(kms_url, ca_file=ca)
    return KeyRing(client, make_provider(provider, home, **options))
