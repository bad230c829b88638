"""The sealed request/response recipe: round trip, and every way of tampering fails."""

from __future__ import annotations

import pytest

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

ROUTE = Route("resnet50", "2", "kid-1")


def test_round_trip_and_fresh_keys_each_time() -> None:
    private, public = hpke.generate_keypair()
    body = bytes(range(256)) * 100
    sealed, reply = seal_request(public, ROUTE, body, 42)
    sealed2, reply2 = seal_request(public, ROUTE, body, 42)
    assert sealed != sealed2 and reply.key != reply2.key and reply.nonce != reply2.nonce
    assert body not in sealed
    opened = open_request(private, ROUTE, sealed)
    assert (opened.body, opened.header_length, opened.reply) == (body, 42, reply)
    answer = seal_response(opened.reply, ROUTE, b"outputs", None)
    assert open_response(reply, ROUTE, answer) == SealedAnswer(200, None, b"outputs", None)


@pytest.mark.parametrize(
    "other",
    [
        Route("digits", "2", "kid-1"),
        Route("resnet50", "1", "kid-1"),
        Route("resnet50", "2", "kid-2"),
    ],
)
def test_request_bound_to_model_version_and_key_id(other: Route) -> None:
    private, public = hpke.generate_keypair()
    sealed, _ = seal_request(public, ROUTE, b"x", None)
    with pytest.raises(CannotOpenSealed):
        open_request(private, other, sealed)


def test_any_flipped_byte_is_detected() -> None:
    private, public = hpke.generate_keypair()
    sealed, reply = seal_request(public, ROUTE, b"inputs" * 50, 3)
    for i in (0, 31, 32, len(sealed) // 2, len(sealed) - 1):
        bad = bytearray(sealed)
        bad[i] ^= 1
        with pytest.raises(CannotOpenSealed, match=r"^cannot open sealed request$"):
            open_request(private, ROUTE, bytes(bad))
    answer = bytearray(seal_response(reply, ROUTE, b"out", 1))
    answer[-1] ^= 0x80
    with pytest.raises(CannotOpenSealed):
        open_response(reply, ROUTE, bytes(answer))


def test_wrong_private_key_and_truncation_fail() -> None:
    _, public = hpke.generate_keypair()
    other_private, _ = hpke.generate_keypair()
    sealed, _ = seal_request(public, ROUTE, b"x" * 100, None)
    with pytest.raises(CannotOpenSealed):
        open_request(other_private, ROUTE, sealed)
    private, public = hpke.generate_keypair()
    sealed, _ = seal_request(public, ROUTE, b"x" * 100, None)
    with pytest.raises(CannotOpenSealed):
        open_request(private, ROUTE, sealed[:-1])


def test_a_response_cannot_answer_another_request() -> None:
    private, public = hpke.generate_keypair()
    _, reply_a = seal_request(public, ROUTE, b"a", None)
    sealed_b, _ = seal_request(public, ROUTE, b"b", None)
    opened_b = open_request(private, ROUTE, sealed_b)
    answer_b = seal_response(opened_b.reply, ROUTE, b"for b", None)
    with pytest.raises(CannotOpenSealed):
        open_response(reply_a, ROUTE, answer_b)
