"""What the ``trustserve`` command prints when a command fails: one line that names the
cause and what to do about it (the traceback only with ``--debug``).

The foreign libraries' errors (httpx, ssl, the OS) are read here, at the command's top
level, and nowhere else: a command lets them rise. Our own errors (``errors.py``) already
say what was wrong; they are printed as they are.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator

import httpx

from trustserve.errors import TrustserveError

LOCAL_CA = (
    "a 'trustserve up' stack's is $TRUSTSERVE_HOME/tls/ca.pem, by default ~/.trustserve/tls/ca.pem"
)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and what it was raised from or during, outermost first (each once)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _where(exc: BaseException) -> tuple[str, str]:
    """The URL asked and its host:port, from the httpx error if it names the request."""
    for e in _chain(exc):
        if isinstance(e, httpx.RequestError):
            try:
                url = e.request.url
            except RuntimeError:  # raised outside a request
                continue
            port = url.port or (443 if url.scheme == "https" else 80)
            return str(url.copy_with(query=None)), f"{url.host}:{port}"
    return "the server", "the server"


def _certificate(e: ssl.SSLCertVerificationError, url: str, where: str) -> str:
    host = where.rsplit(":", 1)[0]
    if e.verify_code in (62, 64):  # X509_V_ERR_HOSTNAME_MISMATCH, _IP_ADDRESS_MISMATCH
        what = "the address" if e.verify_code == 64 else "the host name"
        return (
            f"the TLS certificate of {where} does not name {what} {host} (a certificate "
            "mismatch, not a network problem): use a name the certificate was made for, or "
            "give the server a certificate for this name (--cert/--key for a KMS, "
            "--tls-cert/--tls-key for a frontend)"
        )
    reason = e.verify_message or e.reason or "refused"
    return (
        f"the TLS certificate of {where} is not trusted ({reason}): pass --ca with the CA "
        f"certificate that signed it ({LOCAL_CA})"
    )


def transport_error(exc: httpx.TransportError) -> str:
    """A failed connection as one line: the cause (refused, name, certificate...) and fix."""
    url, where = _where(exc)
    for e in _chain(exc):
        if isinstance(e, ssl.SSLCertVerificationError):
            return _certificate(e, url, where)
        if isinstance(e, ssl.SSLError):
            if "WRONG_VERSION_NUMBER" in str(e) or "record layer" in str(e):
                return (
                    f"{where} does not speak TLS: its URL may be http://, but trustserve "
                    "clients need an https:// server"
                )
            return f"TLS with {where} failed ({e.reason or e}): check the URL and --ca"
        if isinstance(e, socket.gaierror):
            host = where.rsplit(":", 1)[0]
            return (
                f"cannot resolve the host name {host} ({e.strerror}): check the URL; the "
                "name must be in DNS or /etc/hosts and in the server's certificate"
            )
        if isinstance(e, ConnectionRefusedError):
            return (
                f"nothing listens at {where} (connection refused): is the server running, and "
                "is this its port? (start a local one with 'trustserve up')"
            )
    if isinstance(exc, httpx.TimeoutException):
        return f"{where} did not answer in time ({type(exc).__name__}): is it overloaded or down?"
    if url.startswith("http://") and isinstance(exc, httpx.NetworkError | httpx.ProtocolError):
        return (
            f"{where} dropped a plain-HTTP request ({exc or type(exc).__name__}): trustserve "
            f"servers speak HTTPS only, use {_https(url)}"
        )
    if isinstance(exc, httpx.UnsupportedProtocol):
        return f"{exc}: a server URL starts with https:// (e.g. https://localhost:8080)"
    return f"cannot talk to {where}: {exc or type(exc).__name__}"


def _https(url: str) -> str:
    base = httpx.URL(url)
    return str(base.copy_with(scheme="https", path="/", query=None)).rstrip("/")


def _os_error(exc: OSError) -> str:
    what = exc.strerror or str(exc) or type(exc).__name__
    if exc.filename is not None:
        return f"{exc.filename}: {what}"
    return what


def one_line(exc: BaseException) -> str:
    """The error as one line for the terminal: its cause and, where known, the fix."""
    if isinstance(exc, TrustserveError):
        text = str(exc)
    elif isinstance(exc, httpx.TransportError):
        text = transport_error(exc)
    elif isinstance(exc, ssl.SSLError):
        text = f"TLS: {exc.reason or exc}: check the certificate files given"
    elif isinstance(exc, OSError):
        text = _os_error(exc)
    else:
        text = f"{type(exc).__name__}: {exc} (rerun with --debug for the traceback)"
    return " ".join(text.split())  # one line, whatever the message held
