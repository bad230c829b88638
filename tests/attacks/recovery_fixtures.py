"""Shared pieces of the owner-recovery attack tests: a KMS split among owners, and a
recovering KMS (real session, sim evidence: no TEE hardware here) over real HTTPS."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.attacks.kms_fixtures import https_server, throwaway_ca
from trustserve.attestation import EvidenceProvider, make_provider
from trustserve.crypto import hpke
from trustserve.crypto.rootkey import FileKeyStore, KeyFileProtector, create_key_file, unlock_raw
from trustserve.keyrelease.client import KmsClient
from trustserve.kms.recovery import RecoveryFile, RecoverySession
from trustserve.kms.recovery_app import create_recovery_app
from trustserve.kms.state import KmsState


@dataclass
class Split:
    root_key: bytes
    recovery: RecoveryFile
    owners: list[bytes]  # private keys, in the order of recovery.shares


def split_kms(root: Path, owners: int = 3, threshold: int = 2) -> Split:
    """A real KMS state under ``root``, its root key split among fresh owner keys."""
    key = root / "kms.key"
    create_key_file(key)
    protector = KeyFileProtector(key)
    state = KmsState(root / "home", protector)
    raw = unlock_raw(FileKeyStore(state.dir / "root-key.json"), protector)
    pairs = [hpke.generate_keypair() for _ in range(owners)]
    recovery = RecoveryFile.make(raw, state.identity_public_key(), [p for _, p in pairs], threshold)
    return Split(raw, recovery, [s for s, _ in pairs])


@dataclass
class Recovering:
    """A recovering KMS: its session, the keys it rebuilt, and a client for owners."""

    session: RecoverySession
    url: str
    ca: Path
    provider: EvidenceProvider
    rebuilt: list[bytes] = field(default_factory=list)

    def client(self) -> KmsClient:
        return KmsClient(self.url, ca_file=self.ca)


@contextmanager
def recovering_kms(
    root: Path, recovery: RecoveryFile, session_class: type[RecoverySession] = RecoverySession
) -> Iterator[Recovering]:
    """``session_class`` over real TLS on 127.0.0.1, with sim evidence of ``root/kms-home``."""
    provider = make_provider("sim", root / "kms-home")
    rebuilt: list[bytes] = []
    session = session_class(recovery, provider, rebuilt.append)
    tls = throwaway_ca(root / "tls")
    with https_server(create_recovery_app(session), tls) as url:
        yield Recovering(session, url, tls.ca, provider, rebuilt)
