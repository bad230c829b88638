"""Budgets for bundles made for a client's nonce (server side): the TEE work is metered.

Each client (``trustserve.kms.peers``) has a token bucket of its own
(``per_client_rate`` a second, bursts of ``per_client_burst``; past it: 429);
anonymous clients together share a total (``total_rate``, bursts of twice that;
past it: 503), and requesters from reserved networks (frontends, which coalesce
their clients' nonces) a bucket of the same size that anonymous clients cannot
touch. The per-client table holds at most ``max_clients`` buckets; to make room
only a bucket that has refilled to its burst is dropped (a new one starts full,
so dropping it changes nothing): filling the table cannot reset anyone's
spending. While it holds only busy clients, new clients share one overflow bucket.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from trustserve.errors import ConfigError, TooManyRequests, Unavailable
from trustserve.kms.peers import Requester

OVERFLOW = "(overflow)"


class TokenBucket:
    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate, self.burst = rate, burst
        self._tokens, self._at = burst, now

    def tokens(self, now: float) -> float:
        return min(self.burst, self._tokens + max(0.0, now - self._at) * self.rate)

    def take(self, now: float) -> bool:
        tokens = self.tokens(now)
        self._at = now
        if tokens < 1.0:
            self._tokens = tokens
            return False
        self._tokens = tokens - 1.0
        return True

    def wait(self, now: float) -> int:
        """Whole seconds until one token is back (Retry-After)."""
        return max(1, math.ceil((1.0 - self.tokens(now)) / self.rate))


@dataclass(frozen=True)
class FreshEvidenceOptions:
    per_client_rate: float = 2.0
    per_client_burst: int = 10
    total_rate: float = 20.0
    max_clients: int = 10_000

    def __post_init__(self) -> None:
        for name in ("per_client_rate", "per_client_burst", "total_rate", "max_clients"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and 0 < value < math.inf):
                raise ConfigError(f"fresh-bundle budget {name} must be a positive number")


@dataclass
class FreshEvidenceBudgets:
    """``what`` is metered (its name in the refusals), and ``advice`` for a client past
    its own budget. Replica joins (evidence verified) are metered the same way."""

    options: FreshEvidenceOptions = field(default_factory=FreshEvidenceOptions)
    clock: Callable[[], float] = time.monotonic
    what: str = "fresh bundles"
    advice: str = ", or ask without a nonce"

    def __post_init__(self) -> None:
        o, now = self.options, self.clock()
        self._total = TokenBucket(o.total_rate, 2 * o.total_rate, now)
        self._reserved = TokenBucket(o.total_rate, 2 * o.total_rate, now)
        self._clients: OrderedDict[str, TokenBucket] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, requester: Requester) -> None:
        """Return if ``requester`` may have one more fresh bundle now; else 429 (its own
        budget is spent) or 503 (all anonymous clients' is)."""
        with self._lock:
            now = self.clock()
            if requester.reserved:
                if not self._reserved.take(now):
                    raise Unavailable(
                        f"the reserved networks' {self.what} are spent for now; retry",
                        self._reserved.wait(now),
                    )
                return
            bucket = self._bucket(requester.key, now)
            if not bucket.take(now):
                raise TooManyRequests(
                    f"too many {self.what} for this client (at most "
                    f"{self.options.per_client_rate:g} a second): retry later{self.advice}",
                    bucket.wait(now),
                )
            if not self._total.take(now):
                raise Unavailable(
                    f"too many {self.what} asked for by all clients; retry",
                    self._total.wait(now),
                )

    def _bucket(self, key: str, now: float) -> TokenBucket:
        bucket = self._clients.get(key)
        if bucket is not None:
            self._clients.move_to_end(key)
            return bucket
        if len(self._clients) >= self.options.max_clients:
            oldest, idle = next(iter(self._clients.items()))
            if oldest == OVERFLOW or idle.tokens(now) < idle.burst:
                return self._overflow(now)
            del self._clients[oldest]
        o = self.options
        bucket = self._clients[key] = TokenBucket(o.per_client_rate, o.per_client_burst, now)
        return bucket

    def _overflow(self, now: float) -> TokenBucket:
        bucket = self._clients.pop(OVERFLOW, None)
        if bucket is None:
            o = self.options
            bucket = TokenBucket(o.per_client_rate, o.per_client_burst, now)
        self._clients[OVERFLOW] = bucket  # kept, newest: never the one dropped
        return bucket
