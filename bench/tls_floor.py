"""The floor under the frontend's CPU per request (issue 25's ≤ 0.8 ms target): what the
TLS read of one 602 KB binary v2 body costs through Python's ``ssl`` (the ``SSLObject``
path uvloop's transport uses), and what one copy of the body costs. After the TLS read the
body is copied five times on its way to a slab: httptools hands each piece to uvicorn as
new bytes, uvicorn appends it to its buffer and hands the app ``bytes(buffer)``, the app
joins the pieces, and the join is copied into the slab.

    cd bench && ../.venv/bin/python tls_floor.py [--requests 200]

A fresh self-signed P-256 certificate each run; TLS 1.3 as the stack negotiates it.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import ssl
import tempfile
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

BODY = 3 * 224 * 224 * 4 + 200  # one FP32 image and a JSON header


def contexts(folder: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), False)
        .sign(key, hashes.SHA256())
    )
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(folder / "cert.pem", folder / "key.pem")
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.load_verify_locations(folder / "cert.pem")
    return server, client


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--requests", type=int, default=200)
    n = p.parse_args().requests
    with tempfile.TemporaryDirectory() as d:
        server_ctx, client_ctx = contexts(Path(d))
    s_in, s_out, c_in, c_out = (ssl.MemoryBIO() for _ in range(4))
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname="localhost")
    for _ in range(10):  # the handshake, through the memory BIOs
        for side in (client, server):
            with contextlib.suppress(ssl.SSLWantReadError):
                side.do_handshake()
        s_in.write(c_out.read())
        c_in.write(s_out.read())
    body = os.urandom(BODY)
    wire = []
    for _ in range(n):
        client.write(body)
        wire.append(c_out.read())
    t0 = time.process_time()
    for records in wire:
        s_in.write(records)
        got = 0
        while True:
            try:
                got += len(server.read(262144))
            except ssl.SSLWantReadError:
                break
        assert got == BODY
    t1 = time.process_time()
    slab = bytearray(BODY)
    view = memoryview(body)
    for _ in range(n):
        slab[:] = view  # into memory already mapped, as a slab is
    t2 = time.process_time()
    for _ in range(n):
        fresh = bytes(view)  # into a new object, as each of the other four copies is
        del fresh
    t3 = time.process_time()
    print(f"{server.version()} {server.cipher()[0]}, {BODY} bytes, {n} bodies")
    print(f"TLS read (decrypt and hand over): {(t1 - t0) / n * 1e3:.3f} ms per body")
    into, new = (t2 - t1) / n * 1e3, (t3 - t2) / n * 1e3
    print(f"one copy of the body into mapped memory: {into:.3f} ms, into new bytes: {new:.3f} ms")
    print(f"the five copies after the TLS read: {into + 4 * new:.3f} ms")


if __name__ == "__main__":
    main()
