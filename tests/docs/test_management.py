"""docs/management.md's shell helper, run as written against a real stack (only the
documented defaults, ``~/.trustserve`` and port 8081, replaced by the test stack's)."""

from __future__ import annotations

import json

import httpx

from tests.docs.blocks import ROOT, DocShell, json_documents, marked_blocks
from tests.support import RunningStack


def test_the_management_helper_works_as_written(tiny_stack: RunningStack) -> None:
    block = marked_blocks(ROOT / "docs" / "management.md")["management"]
    shell = DocShell(
        cwd=tiny_stack.home.parent,
        home=tiny_stack.home,
        substitutions={
            "~/.trustserve": str(tiny_stack.home),
            "127.0.0.1:8081": f"127.0.0.1:{tiny_stack.management_port}",
        },
    )
    listed, described, scaled = json_documents(shell.run(block))
    assert {m["modelName"] for m in listed["models"]} == {"tiny", "colour"}  # type: ignore[index]
    assert described[0]["modelName"] == "tiny"  # type: ignore[index]
    assert scaled  # the scale call answered 200 (--fail-with-body would have failed)
    with tiny_stack.management() as m:
        back = m.put("/models/tiny", params={"min_worker": "1"})
        assert back.status_code == 200, back.text
    tiny_stack.wait_model_ready("tiny")


def test_a_401_says_where_the_token_is_never_what_it_is(tiny_stack: RunningStack) -> None:
    r = httpx.get(f"{tiny_stack.management_url}/models", verify=str(tiny_stack.ca))
    assert r.status_code == 401
    error = r.json()["error"]
    assert str(tiny_stack.home / "management.token") in error and "Bearer" in error
    assert tiny_stack.token not in json.dumps(r.json())
