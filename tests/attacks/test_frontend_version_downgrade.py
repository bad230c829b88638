"""Issue 11 item 10 (request side): the frontend routes a sealed request to another version.

A real stack serves ``tiny`` version 1 and version 2. The frontend is untrusted and
chooses the queue: here version 1's archive claims to be the default (a manifest
marker, which only the frontend reads), so an unversioned request lands at the
version 1 worker. A client that did not name a version used to be served by
whichever version the frontend picked. Now the client seals the version it
resolved from the attestation bundle (2, the greatest the KMS holds a key for) and
the version 1 worker refuses it, whichever route the frontend takes.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.support import RunningStack, start_stack, tiny_manifest, tiny_onnx
from trustserve import archive
from trustserve.client import ClientPolicy, TrustserveClient
from trustserve.client.sdk import prepare
from trustserve.files import write_atomic


@pytest.fixture(scope="module")
def two_versions(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    root = tmp_path_factory.mktemp("two-versions")
    store = root / "store"
    store.mkdir()
    old = tiny_manifest("tiny", "1", extra={"default_version": True})
    write_atomic(store / "tiny-1.tsm", archive.pack(old, tiny_onnx()))
    write_atomic(store / "tiny-2.tsm", archive.pack(tiny_manifest("tiny", "2"), tiny_onnx()))
    stack = start_stack(root / "home", store)
    stack.wait_model_ready("tiny", "1")
    stack.wait_model_ready("tiny", "2")
    yield stack
    stack.stop()


def post(stack: RunningStack, path: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
    with stack.client() as c:
        return c.post(path, content=body, headers=headers)


def sealed_request(stack: RunningStack) -> tuple[str, bytes, dict[str, str]]:
    policy = ClientPolicy.development(Path(stack.home))
    with TrustserveClient(stack.url, policy=policy, ca=stack.ca) as c:
        target = c.verify()
    p = prepare("tiny", None, {"x": np.ones((1, 4), np.float32)}, None, target)
    return p.path, p.body, p.headers


def test_the_frontend_cannot_route_a_sealed_request_to_another_version(
    two_versions: RunningStack,
) -> None:
    _, body, headers = sealed_request(two_versions)
    # the frontend's "default": version 1, which the client did not resolve
    r = post(two_versions, "/v2/models/tiny/infer", body, headers)
    assert r.status_code == 400, r.text
    assert "version" in r.json()["error"]
    # or straight to version 1's queue, claiming the version it has
    _, body, headers = sealed_request(two_versions)
    r = post(two_versions, "/v2/models/tiny/versions/1/infer", body, headers)
    assert r.status_code == 400 and r.json()["error"] == "cannot open sealed request"


def test_the_version_the_client_resolved_answers(two_versions: RunningStack) -> None:
    path, body, headers = sealed_request(two_versions)
    assert path == "/v2/models/tiny/versions/2/infer"
    r = post(two_versions, path, body, headers)
    assert r.status_code == 200, r.text
