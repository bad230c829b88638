"""The local certificate authority ``up`` creates on first start, and TLS contexts.

``$TRUSTSERVE_HOME/tls/ca.pem`` is the CA clients trust; the server certificate
names localhost, 127.0.0.1, ::1 and this host's name. Private keys are 0600.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from trustserve.files import write_atomic, write_secret


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    cert: Path
    key: Path


def _name(common: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "trustserve local"),
            x509.NameAttribute(NameOID.COMMON_NAME, common),
        ]
    )


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def issue_local_ca(
    directory: Path, hosts: list[str] | None = None, days: int = 825, peer: bool = False
) -> TlsFiles:
    """A fresh CA and a server certificate it signs (both new keys). ``peer``: the server
    certificate may also authenticate as a client (etcd's gateway dials its own gRPC port
    with it when client certificates are required)."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("trustserve local CA")
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), True
        )
        .sign(ca_key, hashes.SHA256())
    )
    names = hosts or ["localhost", "127.0.0.1", "::1", socket.gethostname()]
    alt: list[x509.GeneralName] = []
    for h in dict.fromkeys(names):
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            alt.append(x509.DNSName(h))
    usages = [ExtendedKeyUsageOID.SERVER_AUTH]
    if peer:
        usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(names[0]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    files = TlsFiles(directory / "ca.pem", directory / "server.pem", directory / "server-key.pem")
    write_secret(directory / "ca-key.pem", _pem_key(ca_key))
    write_secret(files.key, _pem_key(key))
    write_atomic(files.cert, cert.public_bytes(serialization.Encoding.PEM))
    write_atomic(files.ca, ca_cert.public_bytes(serialization.Encoding.PEM))
    return files


def issue_client_cert(
    ca: TlsFiles, directory: Path, name: str, days: int = 825
) -> tuple[Path, Path]:
    """A client certificate (and its new key) for ``name``, signed by the CA ``issue_local_ca``
    made in ``ca.ca``'s folder; written as ``name.pem`` / ``name-key.pem`` (0600)."""
    ca_key = serialization.load_pem_private_key((ca.ca.parent / "ca-key.pem").read_bytes(), None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{ca.ca.parent / 'ca-key.pem'} is not an EC key")
    ca_cert = x509.load_pem_x509_certificate(ca.ca.read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}-key.pem"
    write_atomic(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    write_secret(key_path, _pem_key(key))
    return cert_path, key_path


def ensure_local_ca(directory: Path) -> TlsFiles:
    files = TlsFiles(directory / "ca.pem", directory / "server.pem", directory / "server-key.pem")
    if files.ca.exists() and files.cert.exists() and files.key.exists():
        return files
    return issue_local_ca(directory)


def server_tls_options(cert: Path | None, key: Path | None, directory: Path) -> dict[str, str]:
    """uvicorn's TLS options: the operator's ``cert`` and ``key``, else the local CA's
    server certificate in ``directory`` (made if missing)."""
    if cert is None or key is None:
        files = ensure_local_ca(directory)
        cert, key = files.cert, files.key
    return {"ssl_certfile": str(cert), "ssl_keyfile": str(key)}


def client_context(ca: Path) -> ssl.SSLContext:
    """Verifies the server against ``ca`` (hostname included); TLS 1.2 at least."""
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx
