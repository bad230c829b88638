"""A real KMS service (in-process, fresh key file, development policy) for the KMS attack tests."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import httpx

from trustserve.attestation import EvidenceProvider, Policy
from trustserve.crypto.rootkey import KeyFileProtector, create_key_file
from trustserve.kms.app import create_app
from trustserve.kms.service import KmsService


def local_kms(root: Path, **options: object) -> KmsService:
    key_file = root / "kms.key"
    create_key_file(key_file)
    home = root / "home"
    return KmsService(home, KeyFileProtector(key_file), Policy.development(home), **options)  # type: ignore[arg-type]


def http(
    service: KmsService,
    client: str = "203.0.113.7",
    provider: EvidenceProvider | None = None,
    **app_options: Any,
) -> httpx.AsyncClient:
    """The KMS's ASGI app (in-process) as seen from ``client`` (an address)."""
    app = create_app(service, provider, token=secrets.token_urlsafe(16), **app_options)
    transport = httpx.ASGITransport(app=app, client=(client, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://kms")
