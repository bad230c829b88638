"""The KMS's witnesses: after each append the KMS submits its checkpoint to each one
(C2SP ``tlog-witness`` ``add-checkpoint``) and keeps the cosignatures in its state; at
start-up it asks them whether they cosigned more of its log than it holds (a rollback).

A witness is configured as ``URL=VKEY`` (``kms serve --witness``): the base URL its
``/add-checkpoint`` route lives under, and its verifier key. The KMS trusts no witness: a
cosignature it keeps is one that verifies under the named key, and a witness that is down
only means fewer cosignatures (said in the log). What the KMS remembers per witness is
the size it cosigned last (the ``old`` of the next submission); on 409 it takes the size
the witness names and tries once more.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from trustserve.errors import ConfigError, TransparencyRefused
from trustserve.kms.state import KmsState
from trustserve.transparency import log as tlog
from trustserve.transparency import note
from trustserve.transparency.note import Signer, Verifier
from trustserve.transparency.witness import submission

log = logging.getLogger("trustserve.kms")
TIMEOUT = 10.0


@dataclass(frozen=True)
class WitnessConfig:
    url: str  # base URL: the KMS posts to url + "/add-checkpoint"
    verifier: Verifier

    @classmethod
    def parse(cls, text: str) -> WitnessConfig:
        url, sep, vkey = text.partition("=")
        if not sep or not url.startswith(("http://", "https://")):
            raise ConfigError(f"--witness takes URL=VKEY (an http(s) URL), not {text[:120]!r}")
        try:
            verifier = Verifier.from_vkey(vkey)
        except TransparencyRefused as exc:
            raise ConfigError(f"--witness {url}: {exc}") from None
        if verifier.kind != note.COSIGNATURE_V1:
            raise ConfigError(f"--witness {url}: not a witness (cosignature/v1) key")
        return cls(url.rstrip("/"), verifier)


@dataclass
class Outcome:
    """What one submission came to: a cosignature, a witness ahead of the log, or a refusal."""

    witness: str
    cosigned: bool = False
    ahead: int | None = None  # the size the witness cosigned, when larger than the log
    refused: str | None = None  # why not cosigned (status and the witness's words)


@dataclass
class Witnesses:
    configs: list[WitnessConfig]
    quorum: int
    verify: Any = True  # httpx verify= for https witnesses
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        names = [c.verifier.name for c in self.configs]
        if len(set(names)) != len(names):
            raise ConfigError("two --witness entries name the same witness")
        if not 0 <= self.quorum <= len(self.configs):
            raise ConfigError(
                f"--witness-quorum {self.quorum}: between 0 and the {len(self.configs)} witnesses"
            )

    @classmethod
    def from_args(cls, args: Any) -> Witnesses:
        """From ``kms serve --witness URL=VKEY ... --witness-quorum K``."""
        configs = [WitnessConfig.parse(w) for w in args.witness]
        quorum = len(configs) if args.witness_quorum is None else args.witness_quorum
        return cls(configs, quorum)

    def publish(self, state: KmsState, signer: Signer) -> list[Outcome]:
        """Submit the current checkpoint to every witness; keep what they cosign."""
        if not self.configs:
            return []
        with self._lock:  # one round at a time: each round's ``old`` is the last one's size
            outcomes = [self._submit(state, signer, c) for c in self.configs]
        got = sum(o.cosigned for o in outcomes)
        if got < self.quorum:
            log.warning(
                "transparency log: %d of %d witnesses cosigned (quorum %d): %s",
                got,
                len(self.configs),
                self.quorum,
                "; ".join(f"{o.witness}: {o.refused}" for o in outcomes if o.refused),
            )
        return outcomes

    def _submit(self, state: KmsState, signer: Signer, config: WitnessConfig) -> Outcome:
        import httpx  # only when a witness is asked: the KMS app starts without it

        name = config.verifier.name
        view = state.log_view()
        old = view.witnesses.get(name, 0)
        outcome = Outcome(name)
        for _ in range(2):
            if old > view.size:
                outcome.ahead = old
                return outcome
            proof = view.consistency(old, view.size) if 0 < old < view.size else []
            signed = view.signed(signer)
            try:
                answer = httpx.post(
                    f"{config.url}/add-checkpoint",
                    content=submission(old, proof, signed),
                    timeout=TIMEOUT,
                    verify=self.verify,
                )
            except httpx.HTTPError as exc:
                outcome.refused = f"unreachable ({type(exc).__name__})"
                return outcome
            if answer.status_code == 409 and answer.text.strip().isdigit():
                old = int(answer.text.strip())
                continue
            if answer.status_code != 200:
                outcome.refused = f"{answer.status_code} {answer.text.strip()[:200]}"
                return outcome
            line = answer.text
            try:
                cosigned = note.verified_by(note.parse(signed + line), [config.verifier])
            except TransparencyRefused as exc:
                cosigned, outcome.refused = [], f"a bad cosignature: {exc}"
            if not cosigned:
                outcome.refused = outcome.refused or "answered without its cosignature"
                return outcome
            _keep(state, name, view.size, view.checkpoint().root, line)
            outcome.cosigned = True
            return outcome
        outcome.refused = f"409 twice (it names size {old})"
        return outcome

    def check_startup(self, state: KmsState, signer: Signer, recovered: bool) -> None:
        """Refuse to start on a log smaller than a witness cosigned, or forked from it."""
        if not self.configs:
            return
        size = state.log_view().size
        problems = []
        for o in self.publish(state, signer):
            if o.ahead is not None:
                problems.append(f"witness {o.witness} cosigned {o.ahead}")
            elif o.refused is not None and o.refused.startswith("422"):
                problems.append(f"witness {o.witness} refused it as a fork ({o.refused})")
        if not problems:
            return
        what = f"KMS state rolled back: log size {size}, " + "; ".join(problems)
        if not recovered:
            raise ConfigError(
                f"{what}. Refusing to start on an old or forked state (restore the newest "
                "state; if it is lost, start with --recovered-from-rollback)"
            )
        bar = "!" * 78
        log.error(
            "%s\n!!! %s\n!!! started anyway (--recovered-from-rollback): these witnesses will "
            "not cosign this log again and clients that saw the larger log refuse it.\n%s",
            bar,
            what,
            bar,
        )


def _keep(state: KmsState, name: str, size: int, root: bytes, line: str) -> None:
    now = time.time()
    state.update(lambda s: tlog.record_cosignature(s, name, size, root, line, now))


def add_witness_arguments(serve: Any) -> None:
    """``kms serve``'s transparency options (witnesses, the audit head, recovery)."""
    serve.add_argument(
        "--witness",
        action="append",
        default=[],
        metavar="URL=VKEY",
        help="a witness of the transparency log: the base URL of its add-checkpoint route "
        "and its verifier key (`trustserve witness init` prints it), repeatable",
    )
    serve.add_argument(
        "--witness-quorum",
        type=int,
        metavar="K",
        help="how many witnesses should cosign each checkpoint; fewer is warned of (default: all)",
    )
    serve.add_argument(
        "--audit-head-interval",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="log the audit log's head in the transparency log this often, when it changed "
        "(0: never; default %(default)s)",
    )
    serve.add_argument(
        "--recovered-from-rollback",
        action="store_true",
        help="start although a witness cosigned a larger log than this state holds (the "
        "state was rolled back or lost; clients that saw the larger log refuse this one)",
    )


class LogKeeper(Protocol):
    """What ``start_transparency`` needs of the KMS (``KmsService``)."""

    def start_log(self, recovered_from_rollback: bool = False) -> None: ...

    def commit_audit_heads(self, interval: float, stop: threading.Event) -> None: ...


def start_transparency(service: LogKeeper, args: Any) -> None:
    """``kms serve``: the start-up check against the witnesses, the release policy, and
    the audit head committed every ``--audit-head-interval`` seconds (a daemon thread)."""
    service.start_log(args.recovered_from_rollback)
    if not args.witness:
        log.warning(
            "no --witness: nobody cosigns this KMS's transparency log, and a rollback of "
            "its state to an earlier copy is not detected (docs/transparency.md)"
        )
    if args.audit_head_interval > 0:
        heads = (args.audit_head_interval, threading.Event())
        threading.Thread(target=service.commit_audit_heads, args=heads, daemon=True).start()
