"""Encrypted model archives: Tink streaming AEAD (AES256_GCM_HKDF_1MB) over the payload.

The data key of a model version is a Tink keyset holding one
AES256_GCM_HKDF_1MB streaming-AEAD key, serialized in Tink's binary keyset
format (``new_data_key``); the KMS stores it wrapped and releases it as bytes.

The archive header (``archive.encode_header``: manifest plus
``{"scheme": SCHEME, "key_id": ...}``) is the associated data, so the public
metadata is authenticated too. Tink's segmented construction detects changed,
reordered, removed or appended segments and a wrong key; ``decrypt_archive``
reads the whole stream before it returns anything.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import tink
from tink import secret_key_access, streaming_aead

from trustserve import archive
from trustserve.archive import Manifest, ModelArchive
from trustserve.errors import ArchiveError

SCHEME = "tink-streaming-aead/AES256_GCM_HKDF_1MB"
_CHUNK = 1 << 20

streaming_aead.register()


def new_data_key() -> bytes:
    """A fresh model data key: a serialized Tink streaming-AEAD keyset (secret!)."""
    handle = tink.new_keyset_handle(streaming_aead.streaming_aead_key_templates.AES256_GCM_HKDF_1MB)
    return bytes(tink.proto_keyset_format.serialize(handle, secret_key_access.TOKEN))


def _primitive(data_key: bytes) -> streaming_aead.StreamingAead:
    try:
        handle = tink.proto_keyset_format.parse(data_key, secret_key_access.TOKEN)
        return handle.primitive(streaming_aead.StreamingAead)
    except tink.TinkError:
        raise ArchiveError("the model data key is not a streaming-AEAD keyset") from None


class _Sink(io.BytesIO):
    """Tink closes its destination when the stream ends; keep the bytes readable."""

    def close(self) -> None:
        pass


def encryption_header(key_id: str) -> dict[str, Any]:
    return {"scheme": SCHEME, "key_id": key_id}


def encrypt_archive(
    manifest: Manifest,
    model_bytes: bytes,
    data_key: bytes,
    key_id: str,
    progress: Callable[[int], None] | None = None,
) -> bytes:
    """The full encrypted archive; ``progress(n)`` is called after each ``n`` bytes."""
    header = archive.encode_header(manifest, encryption_header(key_id))
    sink = _Sink()
    sink.write(header)
    view = memoryview(model_bytes)
    with _primitive(data_key).new_encrypting_stream(sink, header) as stream:
        for start in range(0, len(view), _CHUNK):
            piece = view[start : start + _CHUNK]
            stream.write(piece)
            if progress is not None:
                progress(len(piece))
    return sink.getvalue()


def decrypt_archive(model_archive: ModelArchive, data_key: bytes) -> bytes:
    """The model bytes; ArchiveError if the archive or key is wrong (nothing is returned then)."""
    enc = model_archive.encryption
    if enc is None:
        raise ArchiveError(f"model {model_archive.manifest.name} archive is not encrypted")
    if enc.get("scheme") != SCHEME:
        raise ArchiveError(f"unsupported archive encryption scheme {enc.get('scheme')!r}")
    primitive = _primitive(data_key)
    try:
        source = io.BytesIO(model_archive.payload)
        with primitive.new_decrypting_stream(source, model_archive.header_bytes) as stream:
            plaintext: bytes = stream.read()
    except tink.TinkError:
        raise ArchiveError(
            f"model {model_archive.manifest.name} archive cannot be decrypted: wrong key, "
            "or the archive was tampered with, truncated or reordered"
        ) from None
    return plaintext
