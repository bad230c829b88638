"""Model-owner tools: encrypt a model into an archive under a key the KMS holds."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from tqdm import tqdm

from trustserve import archive, files
from trustserve.archive import Manifest
from trustserve.crypto import model_encryption
from trustserve.errors import ArchiveError


class ModelKeySource(Protocol):
    """``KmsService`` (in-process) and ``KmsClient`` (with the management token) both are one."""

    def provision_model_key(self, manifest: Manifest) -> tuple[str, bytes]: ...


def encrypt_model_file(
    src: Path,
    dst: Path,
    keys: ModelKeySource,
    progress: bool = False,
    manifest: Manifest | None = None,
) -> str:
    """Encrypt ``src`` into the archive ``dst``; returns the key id.

    ``src`` is a plaintext archive (``.tsm``), or, with ``manifest``, the bare
    model file. A new data key is made in the KMS for this model version, bound
    to the manifest's digest (Conflict if the version has a key already: a new
    archive is a new version). ``dst`` is written atomically.
    """
    if manifest is None:
        plain = archive.load(src)
        if plain.encrypted:
            raise ArchiveError(f"{src.name} is already encrypted")
        manifest, payload = plain.manifest, plain.payload
    else:
        try:
            payload = src.read_bytes()
        except OSError as exc:
            raise ArchiveError(f"cannot read {src.name}: {exc.strerror}") from None
    key_id, data_key = keys.provision_model_key(manifest)
    with tqdm(
        total=len(payload),
        unit="B",
        unit_scale=True,
        desc=f"encrypting {manifest.name}",
        disable=not progress,
    ) as bar:
        data = model_encryption.encrypt_archive(
            manifest, payload, data_key, key_id, progress=bar.update
        )
    files.write_atomic(dst, data)
    return key_id
