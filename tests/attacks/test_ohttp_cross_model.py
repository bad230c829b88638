"""Issue 24 item 3: a request encapsulated for one model is refused by another's worker.

The frontend routes on the clear gateway URL, which it (or a relay) may change; the worker
reads the model and version from the authenticated inner request and refuses any that are
not its own, before it runs anything.
"""

from __future__ import annotations

from tests.attacks.ohttp_support import answered, encapsulated, opened, post
from tests.support import RunningStack

ERROR = r"[45]\d\d"


def test_posted_to_another_models_gateway_route(tiny_stack: RunningStack) -> None:
    body, context = encapsulated(tiny_stack)  # for tiny version 1
    counted, refused = answered(tiny_stack, "200"), answered(tiny_stack, ERROR)
    inner = opened(context, post(tiny_stack, body, ("colour", "1")))  # the client reads why
    assert inner.status == 400, inner.body
    assert b"wrong_model_version" in inner.body and b"tiny" in inner.body
    # colour's worker refused it inside; the frontend counts one more 200 and learns no more
    assert (answered(tiny_stack, "200"), answered(tiny_stack, ERROR)) == (counted + 1, refused)


def test_an_inner_path_naming_another_model(tiny_stack: RunningStack) -> None:
    body, context = encapsulated(tiny_stack, "/v2/models/colour/versions/1/infer")
    inner = opened(context, post(tiny_stack, body, ("tiny", "1")))
    assert inner.status == 400 and b"colour" in inner.body, inner.body


def test_an_inner_path_naming_another_version_or_none(tiny_stack: RunningStack) -> None:
    for path in ("/v2/models/tiny/versions/2/infer", "/v2/models/tiny/infer"):
        body, context = encapsulated(tiny_stack, path)
        inner = opened(context, post(tiny_stack, body, ("tiny", "1")))
        assert inner.status == 400 and b"wrong_model_version" in inner.body, (path, inner.body)


def test_an_inner_path_that_is_no_inference(tiny_stack: RunningStack) -> None:
    body, context = encapsulated(tiny_stack, "/v2/models/tiny/versions/1/ready")
    inner = opened(context, post(tiny_stack, body, ("tiny", "1")))
    assert inner.status == 404 and b"/infer" in inner.body, inner.body
