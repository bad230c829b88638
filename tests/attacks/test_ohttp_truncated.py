"""Issue 24: a truncated or tampered encapsulated request gets a clear 4xx (or, once open,
an inner refusal) and nothing is answered for it; the frontend never decapsulates."""

from __future__ import annotations

import pytest

from tests.attacks.ohttp_support import answered, encapsulated, post
from tests.support import RunningStack
from trustserve.crypto import ohttp


def flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]


@pytest.mark.parametrize(
    "damage",
    [
        lambda b: b[:-1],  # the tag cut short
        lambda b: b[: len(b) // 2],
        lambda b: flip(b, len(b) - 3),  # the ciphertext
        lambda b: flip(b, 10),  # the enc
        lambda b: b + b"\x00",
    ],
    ids=["tag-cut", "half", "ciphertext-flipped", "enc-flipped", "byte-appended"],
)
def test_a_damaged_request_is_a_clear_400(tiny_stack: RunningStack, damage: object) -> None:
    body, _ = encapsulated(tiny_stack)
    served = answered(tiny_stack, "200")
    r = post(tiny_stack, damage(body))  # type: ignore[operator]
    assert r.status_code == 400, r.text
    assert r.json()["code"] == "cannot_open_sealed"
    assert answered(tiny_stack, "200") == served


@pytest.mark.parametrize("size", [0, 1, 6])
def test_too_short_for_a_header_is_refused_by_the_frontend(
    tiny_stack: RunningStack, size: int
) -> None:
    body, _ = encapsulated(tiny_stack)
    r = post(tiny_stack, body[:size])
    assert r.status_code == 400 and r.json()["code"] == "bad_request", r.text
    assert "encapsulated" in r.json()["error"] or "empty" in r.json()["error"]


def test_another_suite_is_refused_by_the_frontend(tiny_stack: RunningStack) -> None:
    body, _ = encapsulated(tiny_stack)
    r = post(tiny_stack, body[:1] + b"\x00\x10" + body[3:])  # KEM P-256
    assert r.status_code == 400 and r.json()["code"] == "bad_request", r.text


def test_an_unknown_key_id_says_to_fetch_the_keys_again(tiny_stack: RunningStack) -> None:
    body, _ = encapsulated(tiny_stack)
    r = post(tiny_stack, bytes([(body[0] + 128) % 256]) + body[1:])
    assert r.status_code == 400, r.text
    assert r.json()["code"] == "unknown_ohttp_key"
    assert "/.well-known/ohttp-gateway" in r.json()["error"]


def test_another_media_type_is_415(tiny_stack: RunningStack) -> None:
    body, _ = encapsulated(tiny_stack)
    r = post(tiny_stack, body, content_type="application/octet-stream")
    assert r.status_code == 415, r.text
    assert r.json()["code"] == "unsupported_media_type"
    assert ohttp.REQUEST_TYPE in r.json()["error"]


def test_an_oversized_request_is_413_before_any_work(tiny_stack: RunningStack) -> None:
    body, _ = encapsulated(tiny_stack)
    r = post(tiny_stack, body + bytes(2 << 20))  # over the stack's 1 MiB limit
    assert r.status_code == 413, r.text
