"""The property every parser must hold on input it cannot use: it raises only trustserve's
own errors (never a bare ValueError, KeyError, struct.error ...), and those that can come
from a request map to a 4xx status."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hypothesis import strategies as st

from trustserve.errors import TrustserveError


def refused_cleanly(
    call: Callable[[], Any], *, client_fault: bool = True
) -> TrustserveError | None:
    """Run ``call``; None if it accepted the input, else its (own) error. A foreign exception
    propagates and fails the test; ``client_fault``: the error must be a 4xx."""
    try:
        call()
    except TrustserveError as exc:
        if client_fault:
            assert 400 <= exc.status < 500, f"{type(exc).__name__} maps to {exc.status}"
        return exc
    return None


# JSON values of every kind, nested
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5)
    ),
    max_leaves=25,
)
