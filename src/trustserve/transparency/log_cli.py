"""``trustserve log show|verify|monitor URL``: read, check and follow a KMS's transparency log.

* ``show`` lists entries (index, time, kind, a short summary), as the KMS serves them: unchecked.
* ``verify`` fetches every entry, recomputes the tree and checks it against the KMS-signed
  checkpoint (and a witness quorum with ``--witness``/``--quorum``) and against a checkpoint
  trusted from before (``--from``: consistency, no rollback); an edited log is reported with
  the first entry that is not what the checkpoints commit to. Exit 0 verified, 1 not.
* ``monitor`` follows the log, checking each new checkpoint against the previous one, and
  prints each new entry; it exits 1 on a fork, a rollback or an entry that does not match.

The log's key is ``--log-key`` (``trustserve kms log-key`` prints it), else the identity key
the KMS's bundle names, trusted on first use (said on stderr): the log's origin is derived
from it, so ``--from`` pins it too.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from trustserve.crypto import merkle
from trustserve.errors import ConfigError, TransparencyRefused, Unavailable
from trustserve.files import write_atomic
from trustserve.transparency import note
from trustserve.transparency.log import log_verifier
from trustserve.transparency.log_check import (
    NotCosigned,
    first_difference,
    leaves_of,
    open_checkpoint,
)
from trustserve.transparency.log_reader import LogReader
from trustserve.transparency.note import Checkpoint, Verifier
from trustserve.transparency.witness_policy import WitnessPolicy

SUMMARY = {
    "release-policy": ("sha256",),
    "kms-trust-policy": ("sha256",),
    "serving-key": ("key_id", "not_after", "rotation"),
    "model-key": ("name", "version", "digest", "key_id"),
    "replica-joined": ("evidence_kind", "measurement", "peer"),
    "recovery": ("threshold", "shares_used"),
    "release-declared": ("digest", "measurement", "note"),
    "audit-head": ("seq", "hash"),
}


def describe(index: int, entry: dict[str, Any]) -> str:
    """One line: index, time (UTC), kind and the kind's main fields."""
    stamp = entry.get("time")
    when = (
        datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        if isinstance(stamp, int) and 0 <= stamp < 2**35
        else "?"
    )
    kind = str(entry.get("kind"))
    fields = SUMMARY.get(kind, ())
    parts = [f"{f}={_short(entry.get(f))}" for f in fields if f in entry]
    return f"{index:>6}  {when}  {kind:<17} {' '.join(parts)}".rstrip()


def _short(value: Any) -> str:
    if isinstance(value, dict) and "tee" in value:  # a measurement set: its TEE, first value
        rest = [(k, v) for k, v in value.items() if k != "tee"]
        first = f"{rest[0][0]}={_short(rest[0][1])}" if rest else ""
        return f"{value['tee']}({first}{',...' * (len(rest) > 1)})"
    text = str(value)
    return text if len(text) <= 24 else text[:16] + "..."


def _say(text: str) -> None:
    print(f"trustserve: {text}", file=sys.stderr, flush=True)


def _log_key(args: argparse.Namespace, reader: LogReader) -> Verifier:
    if args.log_key:
        try:
            return Verifier.from_vkey(args.log_key)
        except TransparencyRefused as exc:
            raise ConfigError(f"--log-key: {exc}") from None
    key = log_verifier(reader.identity())
    _say(
        f"WARNING: the log key of {key.name} is taken from the KMS's bundle unchecked "
        "(trust on first use): give --log-key (trustserve kms log-key) to pin it"
    )
    return key


def _witnesses(args: argparse.Namespace) -> WitnessPolicy | None:
    if not args.witness:
        if args.quorum is not None:
            raise ConfigError("--quorum counts the --witness keys: name some")
        return None
    raw: dict[str, Any] = {"witnesses": list(args.witness)}
    if args.quorum is not None:
        raw["quorum"] = args.quorum
    return WitnessPolicy.from_mapping(raw)


def _trusted(args: argparse.Namespace, key: Verifier) -> Checkpoint | None:
    if not args.from_file:
        return None
    path = Path(args.from_file)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--from {path}: {exc}") from None
    try:
        return open_checkpoint(text, key)
    except TransparencyRefused as exc:
        raise ConfigError(f"--from {path} is not a checkpoint of this log: {exc}") from None


def _extends(reader: LogReader, old: Checkpoint, new: Checkpoint) -> str | None:
    """Why ``new`` does not extend ``old`` (None if it does)."""
    if new.size < old.size:
        return f"ROLLBACK: the log has size {new.size}, a checkpoint of size {old.size} was seen"
    if old.size == 0:
        return None
    try:
        proof = reader.consistency(old.size, new.size) if old.size < new.size else []
        merkle.verify_consistency(old.size, new.size, old.root, new.root, proof)
    except TransparencyRefused as exc:
        return f"FORK: size {new.size} does not extend the checkpoint of size {old.size}: {exc}"
    return None


LEAVES = ".leaves"  # beside a --save checkpoint: its entries' leaf hashes, one per line


def _kept_copy(
    args: argparse.Namespace, trusted: Checkpoint | None, leaves: list[bytes]
) -> str | None:
    """With the leaf hashes ``--save`` kept beside the ``--from`` checkpoint (and which that
    checkpoint proves), the first entry now served otherwise than then (None if none, or
    no such copy). A log rewritten and signed again proves no prefix of itself, so only a
    kept copy can name its first edited entry."""
    if trusted is None or not args.from_file:
        return None
    path = Path(args.from_file + LEAVES)
    try:
        kept = [bytes.fromhex(line) for line in path.read_text().split()]
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path} is unreadable: {exc}") from None
    if len(kept) != trusted.size or (kept and merkle.root(kept) != trusted.root):
        _say(f"WARNING: {path} is not the log of the --from checkpoint; not used")
        return None
    for index, (then, now) in enumerate(zip(kept, leaves, strict=False)):
        if then != now:
            return (
                f"EDITED: entry {index} is not what it was when {args.from_file} was saved "
                f"(the first bad entry of the log is {index}; entries 0..{index - 1} match)"
            )
    return None


def _bad_entry(reader: LogReader, leaves: list[bytes], refs: list[Checkpoint]) -> str | None:
    for ref in refs:
        bad = first_difference(leaves, ref, reader.consistency)
        if bad is not None and bad > 0:
            return (
                f"EDITED: entry {bad} is not what the checkpoint of size {ref.size} commits "
                f"to (the first bad entry of the log is {bad}; entries 0..{bad - 1} are proven)"
            )
        if bad is not None:
            return (
                f"EDITED: the entries are not what the checkpoint of size {ref.size} commits "
                "to and the log proves no prefix of them: the first bad entry of the log is 0, "
                "or its proofs are of another tree"
            )
    return None


def cmd_show(args: argparse.Namespace) -> int:
    with LogReader(args.url, args.ca) as reader:
        size = Checkpoint.from_text(note.parse(reader.checkpoint()).text).size
        start = max(0, size - args.last) if args.last is not None else args.start
        if start >= size:
            print(f"the log has {size} entries", file=sys.stderr)
            return 0
        for i, entry in enumerate(reader.entries(start, size), start):
            print(describe(i, entry))
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    with LogReader(args.url, args.ca) as reader:
        key = _log_key(args, reader)
        signed = reader.checkpoint()
        current = open_checkpoint(signed, key, _witnesses(args))
        trusted = _trusted(args, key)
        problem = None
        if trusted is None:
            _say("WARNING: no trusted checkpoint (--from): this history is trusted on first use")
        else:
            problem = _extends(reader, trusted, current)
        leaves: list[bytes] = []
        if problem is None or problem.startswith("FORK"):  # a fork: find the edited entry
            leaves = leaves_of(reader.entries(0, current.size)) if current.size else []
            refs = [c for c in (trusted, current) if c is not None and c.size <= len(leaves)]
            problem = (
                _kept_copy(args, trusted, leaves) or _bad_entry(reader, leaves, refs) or problem
            )
        if problem is not None:
            print(problem, flush=True)
            return 1
        if args.save:
            write_atomic(Path(args.save), signed.encode())
            kept = "".join(leaf.hex() + "\n" for leaf in leaves)
            write_atomic(Path(args.save + LEAVES), kept.encode())
    since = "" if trusted is None else f", consistent with the trusted size {trusted.size}"
    print(f"verified: {current.origin} has {current.size} entries{since}")
    return 0


def cmd_monitor(args: argparse.Namespace) -> int:
    with LogReader(args.url, args.ca) as reader:
        key = _log_key(args, reader)
        witnesses = _witnesses(args)
        last = _trusted(args, key)
        leaves: list[bytes] = []
        announced = False
        while True:
            try:
                new = open_checkpoint(reader.checkpoint(), key, witnesses)
                problem = _follow(reader, last, new, leaves, announced)
            except (Unavailable, NotCosigned) as exc:  # a KMS restarting; cosignatures due
                _say(f"{exc}; trying again")
                time.sleep(args.interval)
                continue
            if problem is not None:
                print(problem, flush=True)
                return 1
            announced = True
            last = new
            time.sleep(args.interval)


def _follow(
    reader: LogReader,
    last: Checkpoint | None,
    new: Checkpoint,
    leaves: list[bytes],
    announced: bool,
) -> str | None:
    """Check ``new`` against ``last`` and the entries, printing those after ``last``
    (``leaves``: those checked so far, extended here); what is wrong, or None."""
    problem = None if last is None else _extends(reader, last, new)
    if problem is not None:
        return problem
    start = len(leaves)
    fresh = reader.entries(start, new.size) if new.size > start else []
    leaves += leaves_of(fresh)
    problem = _bad_entry(reader, leaves, [c for c in (last, new) if c is not None])
    if problem is not None:
        return problem
    if not announced:
        print(f"following {new.origin} from size {(last or new).size}", flush=True)
    if last is not None:
        for i, entry in enumerate(fresh, start):
            if i >= last.size:
                print(describe(i, entry), flush=True)
    return None


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("url", help="the KMS's URL (its /v1/log routes), e.g. https://kms:8443")
    p.add_argument("--ca", type=Path, help="CA file for the KMS's TLS certificate")


def _checks(p: argparse.ArgumentParser) -> None:
    p.add_argument("--log-key", help="the log's verifier key (trustserve kms log-key)")
    p.add_argument("--witness", action="append", default=[], metavar="VKEY", help="a witness's key")
    p.add_argument("--quorum", type=int, help="how many --witness must cosign (default all)")
    p.add_argument(
        "--from",
        dest="from_file",
        metavar="CHECKPOINT_FILE",
        help="a checkpoint trusted from before (a signed note, e.g. a client's stored one)",
    )


def register(sub: Any) -> None:
    group = sub.add_parser("log", help="read, verify and follow a KMS's transparency log")
    commands = group.add_subparsers(dest="log_command", required=True)
    show = commands.add_parser("show", help="list the log's entries (unchecked)")
    _common(show)
    show.add_argument("--start", type=int, default=0, help="the first index listed")
    show.add_argument("--last", type=int, help="list only the last N entries")
    show.set_defaults(func=cmd_show)
    verify = commands.add_parser("verify", help="check the whole log; name its first bad entry")
    _common(verify)
    _checks(verify)
    verify.add_argument(
        "--save",
        metavar="FILE",
        help="write the verified checkpoint here, and FILE.leaves (its entries' leaf "
        "hashes, with which a later --from FILE names an edited entry)",
    )
    verify.set_defaults(func=cmd_verify)
    monitor = commands.add_parser("monitor", help="follow the log, print each new entry")
    _common(monitor)
    _checks(monitor)
    monitor.add_argument("--interval", type=float, default=5.0, help="seconds between polls")
    monitor.set_defaults(func=cmd_monitor)
