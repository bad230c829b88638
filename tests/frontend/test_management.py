"""The management API: token required, register from the store only, scale, unregister."""

from __future__ import annotations

import httpx
import pytest

from tests.support import RunningStack, write_tiny


def test_management_requires_the_token(tiny_stack: RunningStack) -> None:
    with httpx.Client(base_url=tiny_stack.management_url, verify=str(tiny_stack.ca)) as c:
        assert c.get("/models").status_code == 401
        r = c.get("/models", headers={"Authorization": "Bearer not-the-token"})
        assert r.status_code == 401 and "token" in r.json()["error"]


def test_management_listens_on_127_0_0_1_only(tiny_stack: RunningStack) -> None:
    """Bound to 127.0.0.1, not to every address: 127.0.0.2 (also this machine) is refused."""
    import socket

    with socket.socket() as s:
        s.settimeout(2)
        assert s.connect_ex(("127.0.0.1", tiny_stack.management_port)) == 0
    with socket.socket() as s:
        s.settimeout(2)
        assert s.connect_ex(("127.0.0.2", tiny_stack.management_port)) != 0


def test_token_file_is_private(tiny_stack: RunningStack) -> None:
    assert (tiny_stack.home / "management.token").stat().st_mode & 0o077 == 0


def test_list_and_describe(tiny_stack: RunningStack) -> None:
    with tiny_stack.management() as m:
        names = {x["modelName"] for x in m.get("/models").json()["models"]}
        assert {"tiny", "colour"} <= names
        d = m.get("/models/tiny").json()[0]
        assert d["modelVersion"] == "1" and d["batchSize"] == 8 and d["readyWorkers"] >= 1
        assert len(d["workers"]) == 1 and d["encrypted"] is True


@pytest.mark.parametrize(
    ("url", "status"),
    [
        ("../outside.tsm", 400),
        ("/etc/passwd", 400),
        ("https://example.com/model.tsm", 400),
        ("file:///etc/passwd", 400),
        ("missing.tsm", 404),
    ],
)
def test_register_refuses_anything_outside_the_store(
    tiny_stack: RunningStack, url: str, status: int
) -> None:
    (tiny_stack.store.parent / "outside.tsm").write_bytes(b"x")
    with tiny_stack.management() as m:
        r = m.post("/models", params={"url": url})
    assert r.status_code == status, r.text
    assert "error" in r.json()


def test_register_symlink_escaping_the_store_is_refused(tiny_stack: RunningStack) -> None:
    target = write_tiny(tiny_stack.store.parent, "escape", "1")
    (tiny_stack.store / "link.tsm").symlink_to(target)
    with tiny_stack.management() as m:
        r = m.post("/models", params={"url": "link.tsm"})
    assert r.status_code == 400 and "outside the model store" in r.json()["error"]


def test_register_scale_unregister(tiny_stack: RunningStack) -> None:
    write_tiny(tiny_stack.store, "tiny", "2", home=tiny_stack.home)
    with tiny_stack.management() as m:
        r = m.post("/models", params={"url": "tiny-2.tsm", "initial_workers": "1"})
        assert r.status_code == 200, r.text
        assert m.post("/models", params={"url": "tiny-2.tsm"}).status_code == 409
        tiny_stack.wait_model_ready("tiny", "2")
        with tiny_stack.client() as c:
            assert c.get("/v2/models/tiny").json()["versions"] == ["1", "2"]
            body = {
                "inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [0, 0, 0, 1]}]
            }
            r = c.post("/v2/models/tiny/infer", json=body)
            assert r.json()["model_version"] == "2"  # the greatest numeric version is the default

        assert m.put("/models/tiny/2", params={"min_worker": "2"}).status_code == 200
        assert len(m.get("/models/tiny/2").json()[0]["workers"]) == 2
        assert m.put("/models/tiny/2", params={"min_worker": "many"}).status_code == 400

        assert m.delete("/models/tiny/2").status_code == 200
        assert m.get("/models/tiny/2").status_code == 404
        with tiny_stack.client() as c:
            assert c.get("/v2/models/tiny").json()["versions"] == ["1"]


def test_all_versions_and_set_default(tiny_stack: RunningStack) -> None:
    """TorchServe's /models/{m}/all and PUT /models/{m}/{v}/set-default (on a model of its own,
    registered and unregistered here, so the module's other tests see the stack unchanged)."""
    for version in ("1", "3"):
        write_tiny(tiny_stack.store, "versioned", version, home=tiny_stack.home)
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [0, 0, 0, 1]}]}
    infer = "/v2/models/versioned/infer"
    with tiny_stack.management() as m, tiny_stack.client() as c:
        for version in ("1", "3"):
            r = m.post(
                "/models", params={"url": f"versioned-{version}.tsm", "initial_workers": "1"}
            )
            assert r.is_success, r.text
            tiny_stack.wait_model_ready("versioned", version)
        described = m.get("/models/versioned/all").json()
        assert [(d["modelVersion"], d["default"]) for d in described] == [("1", False), ("3", True)]
        assert c.post(infer, json=body).json()["model_version"] == "3"
        r = m.put("/models/versioned/1/set-default")
        assert r.status_code == 200 and '"versioned" to "1"' in r.json()["status"]
        assert c.post(infer, json=body).json()["model_version"] == "1"
        assert m.put("/models/versioned/9/set-default").status_code == 404
        assert m.get("/models/nothing/all").status_code == 404
        assert m.delete("/models/versioned/1").status_code == 200  # back to the rule
        assert c.post(infer, json=body).json()["model_version"] == "3"
        assert m.delete("/models/versioned/3").status_code == 200
