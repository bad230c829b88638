"""The sealed envelope and answer: exact round trips; anything else is CannotOpenSealed (400)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tests.properties.own_errors import refused_cleanly
from trustserve.crypto import hpke
from trustserve.crypto.sealing import (
    Route,
    SealedAnswer,
    open_request,
    open_response,
    seal_request,
    seal_response,
)
from trustserve.errors import CannotOpenSealed

PRIVATE, PUBLIC = hpke.generate_keypair()
routes = st.builds(Route, st.text(max_size=12), st.text(max_size=4), st.text(max_size=12))
lengths = st.none() | st.integers(0, 2**32 - 2)


@given(
    routes,
    st.binary(max_size=300),
    lengths,
    st.sampled_from(["v2", "torchserve"]),
    st.sampled_from([200, 400, 409, 503]),
    st.none() | st.text(max_size=20),
)
def test_request_and_answer_round_trip(
    route: Route, body: bytes, hl: int | None, kind: str, status: int, code: str | None
) -> None:
    sealed, reply = seal_request(PUBLIC, route, body, hl, now=1.5, kind=kind)
    opened = open_request(PRIVATE, route, sealed)
    assert (opened.body, opened.header_length, opened.kind, opened.issued_at) == (
        body,
        hl,
        kind,
        1.5,
    )
    assert opened.reply == reply
    answer = seal_response(opened.reply, route, body[::-1], hl, status, code)
    assert open_response(reply, route, answer) == SealedAnswer(status, code, body[::-1], hl)


@given(st.binary(max_size=300))
def test_any_bytes_are_cannot_open(data: bytes) -> None:
    route = Route("m", "", "k")
    error = refused_cleanly(lambda: open_request(PRIVATE, route, data))
    assert isinstance(error, CannotOpenSealed)
    _, reply = seal_request(PUBLIC, route, b"body", None)
    assert isinstance(refused_cleanly(lambda: open_response(reply, route, data)), CannotOpenSealed)


@given(st.data())
def test_any_damage_or_other_route_is_cannot_open(data: st.DataObject) -> None:
    route = Route("m", "1", "k")
    sealed, reply = seal_request(PUBLIC, route, b'{"inputs": []}', None, now=1.0)
    raw = bytearray(sealed)
    index = data.draw(st.integers(0, len(raw) - 1))
    raw[index] ^= data.draw(st.integers(1, 255))
    assert isinstance(
        refused_cleanly(lambda: open_request(PRIVATE, route, bytes(raw))), CannotOpenSealed
    )
    other = Route("m", "2", "k")
    assert isinstance(
        refused_cleanly(lambda: open_request(PRIVATE, other, sealed)), CannotOpenSealed
    )
    answer = bytearray(seal_response(reply, route, b"out", 3))
    answer[data.draw(st.integers(0, len(answer) - 1))] ^= 1
    assert isinstance(
        refused_cleanly(lambda: open_response(reply, route, bytes(answer))), CannotOpenSealed
    )
