"""``trustserve redis config --replica HOST:PORT --sentinel HOST:PORT ...``: Redis that
survives the loss of its host.

Beside the primary's ``redis.conf`` it writes ``replica.conf`` (the same users, TLS and
append-only file, ``replicaof`` the primary) and one ``sentinel-N.conf`` per Sentinel
(three: a majority of two agrees that the primary is down and promotes the replica).
Frontends and workers then take a ``rediss+sentinel://`` URL naming the Sentinels and
follow a failover (``trustserve.broker.redis_config``).

Every link is TLS with client certificates from the same local CA, and every party is
an ACL user with the rights it needs, from Redis's documentation of Sentinel and
replication: the replica authenticates to the primary as ``replicator`` (``PSYNC``
only), Sentinels to the servers as ``sentinel`` and to each other as ``peer``;
frontends and workers may ask a Sentinel where the primary is and nothing else (they
cannot move it). A server's configuration holds the ``replicator`` password in clear
(``masterauth``: each server may become a replica after a failover) and a Sentinel's
the ``sentinel`` and ``peer`` ones: the files are 0600, written for the host they run on.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from trustserve.errors import ConfigError
from trustserve.files import write_secret
from trustserve.tls import TlsFiles, issue_client_cert

SERVICE = "trustserve"  # the name Sentinels monitor the primary under
# Redis docs, "High availability with Redis Sentinel", section "Redis access control list
# authentication": what a Sentinel runs on the servers it watches.
SENTINEL_RIGHTS = (
    "allchannels +multi +slaveof +ping +exec +subscribe +config|rewrite +role +publish "
    "+info +client|setname +client|kill +script|kill"
)
REPLICATION_RIGHTS = "+psync +replconf +ping"
# What a frontend or worker may ask a Sentinel: where the primary and the others are.
ASK_RIGHTS = (
    "+@connection +sentinel|get-master-addr-by-name +sentinel|masters +sentinel|master "
    "+sentinel|sentinels +sentinel|replicas +sentinel|slaves"
)


def password_hash(password: str) -> str:
    return hashlib.sha256(password.encode()).hexdigest()


@dataclass(frozen=True)
class HaSetup:
    replica_conf: Path
    sentinel_confs: tuple[Path, ...]
    sentinels: tuple[tuple[str, int], ...]
    server_lines: tuple[str, ...]  # what the primary's redis.conf adds for replication


def write_server_conf(path: Path, lines: Sequence[str], data: Path, port: int) -> None:
    """A redis-server configuration at ``path``, its data in ``data``, its log beside it."""
    data.mkdir(parents=True, exist_ok=True, mode=0o700)
    tail = [f"tls-port {port}", f"dir {data}", f"logfile {path.with_suffix('.log')}"]
    write_secret(path, ("\n".join([*lines, *tail]) + "\n").encode())


def write_ha_files(
    directory: Path,
    tls: TlsFiles,
    server: Sequence[str],
    primary: tuple[str, int],
    replica: tuple[str, int],
    sentinels: Sequence[tuple[str, int]],
    role_hashes: dict[str, str],
    down_after_ms: int,
) -> HaSetup:
    """``replica.conf`` and the Sentinels' files; ``server``: the primary's own lines."""
    if len(sentinels) < 3:
        raise ConfigError("three Sentinels at least: a majority must survive one lost host")
    cert, key = issue_client_cert(tls, directory / "tls", "replication")
    passwords = {who: secrets.token_urlsafe(32) for who in ("replicator", "sentinel", "peer")}
    shared = (
        "tls-replication yes",  # replication and Sentinel links are TLS too
        f"tls-client-cert-file {cert}",
        f"tls-client-key-file {key}",
        "masteruser replicator",
        f"masterauth {passwords['replicator']}",
        f"user replicator on #{password_hash(passwords['replicator'])} {REPLICATION_RIGHTS}",
        f"user sentinel on #{password_hash(passwords['sentinel'])} {SENTINEL_RIGHTS}",
    )
    host, port = primary
    replica_conf = directory / "replica.conf"
    write_server_conf(
        replica_conf,
        [*server, *shared, f"replica-announce-ip {replica[0]}", f"replicaof {host} {port}"],
        directory / "data-replica",
        replica[1],
    )
    quorum = len(sentinels) // 2 + 1
    confs = []
    for n, (_, sentinel_port) in enumerate(sentinels, 1):
        lines = [
            *(line for line in server if line.split()[0] in ("bind", "port") or "tls-" in line),
            *shared[:3],
            f"tls-port {sentinel_port}",
            f"dir {_mkdir(directory / f'sentinel-{n}')}",
            f"logfile {directory / f'sentinel-{n}.log'}",
            "sentinel resolve-hostnames yes",
            "sentinel announce-hostnames yes",
            f"sentinel monitor {SERVICE} {host} {port} {quorum}",
            f"sentinel down-after-milliseconds {SERVICE} {down_after_ms}",
            f"sentinel failover-timeout {SERVICE} {max(10_000, 6 * down_after_ms)}",
            f"sentinel auth-user {SERVICE} sentinel",
            f"sentinel auth-pass {SERVICE} {passwords['sentinel']}",
            "sentinel sentinel-user peer",
            f"sentinel sentinel-pass {passwords['peer']}",
            "user default off",
            f"user peer on #{password_hash(passwords['peer'])} allchannels +@all",
            *(f"user {role} on #{digest} {ASK_RIGHTS}" for role, digest in role_hashes.items()),
        ]
        path = directory / f"sentinel-{n}.conf"
        write_secret(path, ("\n".join(lines) + "\n").encode())
        confs.append(path)
    return HaSetup(
        replica_conf,
        tuple(confs),
        tuple(sentinels),
        (*shared, f"replica-announce-ip {host}"),
    )


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path
