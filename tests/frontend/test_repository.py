"""The model repository extension and model config, with the unmodified tritonclient[http].

A real stack over HTTPS: the model store holds ``tiny`` (loaded at start) and,
added after start, ``later`` (in the store, not loaded). Load and unload change
what the server runs, so they need the management token; the index and the
configuration are public, like model metadata.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import gevent.ssl
import numpy as np
import pytest
import tritonclient.http as triton

from tests.support import RunningStack, start_stack, tiny_expected, write_tiny


def client(stack: RunningStack) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(
        url=f"localhost:{stack.port}",
        ssl=True,
        ssl_options={"ca_certs": str(stack.ca)},
        ssl_context_factory=gevent.ssl.create_default_context,
    )


@pytest.fixture(scope="module")
def repo_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    root = tmp_path_factory.mktemp("repo-stack")
    store = root / "store"
    store.mkdir()
    write_tiny(store)
    stack = start_stack(root / "home", store, dev=False)
    write_tiny(store, "later", "3")  # after start: in the store, not loaded
    yield stack
    stack.stop()


def auth(stack: RunningStack) -> dict[str, str]:
    return {"Authorization": f"Bearer {stack.token}"}


def index(c: triton.InferenceServerClient) -> dict[str, dict[str, str]]:
    return {m["name"]: m for m in c.get_model_repository_index()}


def test_server_metadata_advertises_what_exists(repo_stack: RunningStack) -> None:
    c = client(repo_stack)
    try:
        assert "model_repository" in c.get_server_metadata()["extensions"]
        assert isinstance(c.get_model_repository_index(), list)
    finally:
        c.close()


def test_index_lists_loaded_and_unloaded_models(repo_stack: RunningStack) -> None:
    c = client(repo_stack)
    try:
        models = index(c)
        assert models["tiny"] == {"name": "tiny", "version": "1", "state": "READY", "reason": ""}
        assert models["later"]["version"] == "3"
        assert models["later"]["state"] == "UNAVAILABLE"
        assert models["later"]["reason"] == "unloaded"
    finally:
        c.close()
    with repo_stack.client() as h:
        ready = h.post("/v2/repository/index", json={"ready": True}).json()
        assert [m["name"] for m in ready] == ["tiny"]
        bad = h.post("/v2/repository/index", content=b"{not json")
        assert bad.status_code == 400 and "JSON" in bad.json()["error"]


def test_get_model_config(repo_stack: RunningStack) -> None:
    c = client(repo_stack)
    try:
        config = c.get_model_config("tiny")
        assert config["name"] == "tiny"
        assert config["max_batch_size"] == 8
        assert config["input"] == [{"name": "x", "data_type": "TYPE_FP32", "dims": [4]}]
        assert [o["name"] for o in config["output"]] == ["y", "s"]
        assert config["output"][1]["dims"] == [1]
        assert config["dynamic_batching"] == {"max_queue_delay_microseconds": 2000}
        assert c.get_model_config("tiny", "1")["name"] == "tiny"
        with pytest.raises(triton.InferenceServerException, match="unknown model 'nope'"):
            c.get_model_config("nope")
    finally:
        c.close()


def test_load_and_unload_need_the_management_token(repo_stack: RunningStack) -> None:
    """The attack: anyone who reaches the inference port stops or starts models."""
    c = client(repo_stack)
    wrong = {"Authorization": f"Bearer {secrets.token_urlsafe(32)}"}
    try:
        for headers in (None, wrong, {"Authorization": repo_stack.token}):  # last: no "Bearer"
            with pytest.raises(triton.InferenceServerException, match="management token"):
                c.unload_model("tiny", headers=headers)
            with pytest.raises(triton.InferenceServerException, match="management token"):
                c.load_model("later", headers=headers)
        assert index(c)["tiny"]["state"] == "READY"
        assert index(c)["later"]["state"] == "UNAVAILABLE"
        assert c.is_model_ready("tiny")
    finally:
        c.close()
    with repo_stack.client() as h:
        r = h.post("/v2/repository/models/tiny/unload")
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"


def test_load_serve_unload_with_the_token(repo_stack: RunningStack) -> None:
    c = client(repo_stack)
    try:
        c.load_model("later", headers=auth(repo_stack))  # answers once a worker serves it
        assert index(c)["later"]["state"] == "READY"
        assert c.is_model_ready("later")
        x = np.random.default_rng().standard_normal((3, 4)).astype(np.float32)
        inp = triton.InferInput("x", [3, 4], "FP32")
        inp.set_data_from_numpy(x)
        y, _ = tiny_expected(x)
        np.testing.assert_allclose(c.infer("later", [inp]).as_numpy("y"), y, rtol=1e-6)

        c.unload_model("later", headers=auth(repo_stack))
        assert index(c)["later"] == {
            "name": "later",
            "version": "3",
            "state": "UNAVAILABLE",
            "reason": "unloaded",
        }
        with pytest.raises(triton.InferenceServerException, match="unknown model 'later'"):
            c.infer("later", [inp])
        c.unload_model("later", headers=auth(repo_stack))  # already unloaded: fine
        with pytest.raises(triton.InferenceServerException, match="no archive of model"):
            c.load_model("nope", headers=auth(repo_stack))
        with pytest.raises(triton.InferenceServerException, match="not supported"):
            c.load_model("later", headers=auth(repo_stack), config='{"max_batch_size": 1}')
    finally:
        c.close()


def test_management_api_sees_a_load(repo_stack: RunningStack) -> None:
    """Load through the repository API registers the model as the management API does."""
    with repo_stack.client(headers=auth(repo_stack)) as h:
        assert h.post("/v2/repository/models/later/load").status_code == 200
        with repo_stack.management() as m:
            names = {x["modelName"] for x in m.get("/models").json()["models"]}
        assert "later" in names
        assert h.post("/v2/repository/models/later/unload", json={}).status_code == 200
        with repo_stack.management() as m:
            assert m.get("/models/later").status_code == 404
