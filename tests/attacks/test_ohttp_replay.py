"""Issue 24 item 3: an encapsulated request captured on the way (by the relay, the frontend,
the broker) and sent again is refused by the worker: its HPKE ``enc`` is the nonce the
replay guard holds, inside the freshness window its ``date`` header sets."""

from __future__ import annotations

from tests.attacks.ohttp_support import answered, encapsulated, opened, post
from tests.support import RunningStack

ERROR = r"[45]\d\d"


def test_the_same_encapsulated_request_twice_is_answered_once(tiny_stack: RunningStack) -> None:
    body, context = encapsulated(tiny_stack)
    first = opened(context, post(tiny_stack, body))
    assert first.status == 200, first.body
    counted, refused = answered(tiny_stack, "200"), answered(tiny_stack, ERROR)
    again = opened(context, post(tiny_stack, body))  # the inner answer (the client's) says why
    assert again.status == 409, again.body
    assert b'"replayed"' in again.body and b"replay" in again.body
    # the frontend relayed one more answer and cannot tell it was a refused replay
    assert (answered(tiny_stack, "200"), answered(tiny_stack, ERROR)) == (counted + 1, refused)


def test_a_replay_to_another_version_route_is_refused_too(tiny_stack: RunningStack) -> None:
    body, context = encapsulated(tiny_stack)
    assert opened(context, post(tiny_stack, body)).status == 200
    r = post(tiny_stack, body, ("tiny", "2"))  # no such version here: the frontend says so
    assert r.status_code == 404 and "version" in r.json()["error"]
