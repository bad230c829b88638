"""PyTorch models imported with the CLI, served by a real stack, answers compared with torch's.

Three archives, made here from models built in the test, each converted with
``--trust-model-code``: a TorchServe ``.mar`` with a TorchScript classifier
(``import-mar``), a ``.mar`` with an eager model (``import-mar --trust-mar-code``,
the flag's older name), and a two-output TorchScript model (``model pack
--from-torch``). The stack is the real one (HTTPS, worker processes, the embedded
KMS with simulated attestation, encrypted broker payloads). Tolerance:
|served - torch| <= 1e-4 absolute (FP32; measured differences are around 1e-7).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch

from tests.models.torch_models import (
    EAGER_SOURCE,
    LABELS,
    TwoHeads,
    classifier,
    state_dict_bytes,
    torchscript_bytes,
    write_mar,
)
from tests.support import RunningStack, png, start_stack
from trustserve import archive
from trustserve.cli import main
from trustserve.imaging import preprocess_image

ATOL = 1e-4


@dataclass
class Served:
    stack: RunningStack
    scripted: torch.nn.Module
    eager: torch.nn.Module
    heads: torch.nn.Module


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("torch-stack")
    store = root / "store"
    store.mkdir()
    seed = int(np.random.default_rng().integers(1 << 31))
    scripted, eager, heads = classifier(seed), classifier(seed + 1), TwoHeads().eval()
    labels = {str(i): [f"n0{i}", name] for i, name in enumerate(LABELS)}

    mar = write_mar(root / "tinycls.mar", torchscript_bytes(scripted), labels=labels)
    argv = ["model", "import-mar", str(mar), "-o", str(store / "tinycls.tsm"), "--trust-model-code"]
    assert main(argv) == 0

    source = EAGER_SOURCE.format(marker=str(root / "eager-code-ran"))
    mar = write_mar(root / "eager.mar", state_dict_bytes(eager), model_file=source, labels=labels)
    out = str(store / "eager.tsm")
    argv = ["model", "import-mar", str(mar), "-o", out, "--trust-mar-code", "--name", "eagercls"]
    assert main(argv) == 0

    pt = root / "twoheads.pt"
    pt.write_bytes(torchscript_bytes(heads))
    manifest = root / "twoheads.json"
    manifest.write_text(
        json.dumps(
            {
                "name": "twoheads",
                "version": "1",
                "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
                "outputs": [
                    {"name": "y", "datatype": "FP32", "shape": [-1, 2]},
                    {"name": "s", "datatype": "FP32", "shape": [-1, 1]},
                ],
            }
        )
    )
    argv = ["model", "pack", "--from-torch", str(pt), "--manifest", str(manifest)]
    argv.append("--trust-model-code")
    assert main([*argv, "-o", str(store / "twoheads.tsm")]) == 0

    stack = start_stack(root / "home", store)
    yield Served(stack, scripted, eager, heads)
    stack.stop()


def v2_infer(stack: RunningStack, model: str, inputs: dict[str, np.ndarray]) -> dict[str, Any]:
    body = {
        "inputs": [
            {"name": n, "datatype": "FP32", "shape": list(a.shape), "data": a.ravel().tolist()}
            for n, a in inputs.items()
        ]
    }
    with stack.client() as c:
        r = c.post(f"/v2/models/{model}/infer", json=body)
    assert r.status_code == 200, r.text
    return {
        o["name"]: np.array(o["data"], np.float32).reshape(o["shape"]) for o in r.json()["outputs"]
    }


@pytest.mark.parametrize("model", ["tinycls", "eagercls"])
def test_imported_mar_answers_as_torch(served: Served, model: str) -> None:
    net = served.scripted if model == "tinycls" else served.eager
    x = np.random.default_rng().standard_normal((3, 3, 224, 224)).astype(np.float32)
    got = v2_infer(served.stack, model, {"input": x})["logits"]
    with torch.no_grad():
        want = net(torch.from_numpy(x)).numpy()
    print(f"{model}: max |served - torch| = {np.abs(got - want).max():.2g}")
    np.testing.assert_allclose(got, want, atol=ATOL, rtol=0)
    assert not np.allclose(want[0], want[1])  # the inputs matter: a real comparison


def test_predictions_like_the_stock_image_classifier(served: Served) -> None:
    """An image to /predictions: softmax probabilities by the labels of index_to_name.json."""
    stack = served.stack
    with stack.client() as c:
        meta = c.get("/v2/models/tinycls").json()
        assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 3, 224, 224]}]
        image = png((200, 40, 90), size=300)
        r = c.post("/predictions/tinycls", content=image)
    assert r.status_code == 200, r.text
    answer = r.json()
    assert set(answer) == set(LABELS)
    x = preprocess_image(image, archive.ImagePreprocessing())
    with torch.no_grad():
        want = torch.softmax(served.scripted(torch.from_numpy(x[None])), dim=1)[0].numpy()
    for i, label in enumerate(LABELS):
        assert answer[label] == pytest.approx(float(want[i]), abs=ATOL)


def test_pack_from_torch_answers_as_torch(served: Served) -> None:
    x = np.random.default_rng().standard_normal((5, 4)).astype(np.float32)
    got = v2_infer(served.stack, "twoheads", {"x": x})
    with torch.no_grad():
        y, s = served.heads(torch.from_numpy(x))
    np.testing.assert_allclose(got["y"], y.numpy(), atol=ATOL, rtol=0)
    np.testing.assert_allclose(got["s"], s.numpy(), atol=ATOL, rtol=0)


def test_imported_manifest_carries_the_stock_handler(served: Served) -> None:
    head = archive.read_header(served.stack.store / "eager.tsm")
    m = head.manifest
    assert m.name == "eagercls" and m.version == "1.0"
    assert m.labels == tuple(LABELS)
    assert m.extra["mar_model"] == "eager" and m.extra["mar_handler"] == "image_classifier"
