"""The unmodified tritonclient[grpc] client against the gRPC port of a real stack, over TLS.

One stack (embedded KMS, broker payloads encrypted, digits and resnet50 workers, a
1 MiB message limit) serves the whole module; answers are compared with the HTTP
API's for the same input.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton
from tritonclient.grpc import service_pb2, service_pb2_grpc

from tests.support import RunningStack, start_stack
from trustserve.errors import InvalidInput
from trustserve.frontend.grpc_service import infer_request
from trustserve.frontend.grpc_v2 import generate
from trustserve.frontend.grpc_v2 import grpc_predict_v2_pb2 as pb
from trustserve.stack.banner import banner
from trustserve.stack.config import Settings


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, demo_store: dict[str, Path]
) -> Iterator[RunningStack]:
    root = tmp_path_factory.mktemp("grpc-stack")
    store = root / "store"
    store.mkdir()
    for name in ("digits", "resnet50"):
        shutil.copy(demo_store[name], store / demo_store[name].name)
    running = start_stack(root / "home", store, "--max-body-mb", "1")
    for model in ("digits", "resnet50"):  # ready means one model; a request waits for no worker
        running.wait_model_ready(model, timeout=180)
    yield running
    running.stop()


@pytest.fixture
def client(stack: RunningStack) -> Iterator[triton.InferenceServerClient]:
    c = triton.InferenceServerClient(
        f"localhost:{stack.grpc_port}", ssl=True, root_certificates=str(stack.ca)
    )
    yield c
    c.close()


def rows(client: triton.InferenceServerClient, model: str, batch: int) -> np.ndarray:
    """A random batch for ``model``, shaped from its gRPC metadata."""
    spec = client.get_model_metadata(model).inputs[0]
    shape = [batch if d < 0 else d for d in spec.shape]
    return np.random.default_rng().uniform(0, 16, shape).astype(np.float32)


def http_answer(stack: RunningStack, model: str, name: str, x: np.ndarray) -> np.ndarray:
    """The REST API's answer for ``x`` (binary tensor data: resnet50's JSON is over 1 MiB)."""
    head = json.dumps(
        {"inputs": [{"name": name, "datatype": "FP32", "shape": list(x.shape),
                     "parameters": {"binary_data_size": x.nbytes}}]}
    ).encode()  # fmt: skip
    with stack.client() as c:
        r = c.post(
            f"/v2/models/{model}/infer",
            content=head + x.tobytes(),
            headers={"Inference-Header-Content-Length": str(len(head))},
        )
    assert r.status_code == 200, r.text
    out = r.json()["outputs"][0]
    return np.asarray(out["data"], np.float32).reshape(out["shape"])


def test_health_and_metadata(stack: RunningStack, client: triton.InferenceServerClient) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("digits") and client.is_model_ready("resnet50", "int8")
    server = client.get_server_metadata()
    assert server.name == "trustserve" and server.version
    with stack.client() as c:
        rest = c.get("/v2/models/resnet50").json()
    meta = client.get_model_metadata("resnet50")
    assert (meta.name, meta.platform, list(meta.versions)) == (
        rest["name"], rest["platform"], rest["versions"]
    )  # fmt: skip
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [
        (t["name"], t["datatype"], t["shape"]) for t in rest["inputs"]
    ]


@pytest.mark.parametrize("model", ["digits", "resnet50"])
def test_infer_answers_what_http_answers(
    stack: RunningStack, client: triton.InferenceServerClient, model: str
) -> None:
    meta = client.get_model_metadata(model)
    name, output = meta.inputs[0].name, meta.outputs[0].name
    x = rows(client, model, 2 if model == "digits" else 1)  # resnet50: 0.6 of the 1 MiB
    inp = triton.InferInput(name, list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    result = client.infer(model, [inp], outputs=[triton.InferRequestedOutput(output)],
                          request_id="r-7")  # fmt: skip
    assert result.get_response().id == "r-7" and result.get_response().model_name == model
    np.testing.assert_allclose(
        result.as_numpy(output), http_answer(stack, model, name, x), rtol=1e-5, atol=1e-5
    )


def test_typed_contents_answer_as_raw_contents(
    stack: RunningStack, client: triton.InferenceServerClient
) -> None:
    """tritonclient's own messages and stub, with the data in ``contents.fp32_contents``."""
    x = rows(client, "digits", 2)
    with grpc.secure_channel(
        f"localhost:{stack.grpc_port}", grpc.ssl_channel_credentials(stack.ca.read_bytes())
    ) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        req = service_pb2.ModelInferRequest(model_name="digits")
        tensor = req.inputs.add(name="input", datatype="FP32", shape=list(x.shape))
        tensor.contents.fp32_contents.extend(x.reshape(-1).tolist())
        answer = stub.ModelInfer(req, timeout=60)
        out = answer.outputs[0]
        got = np.frombuffer(answer.raw_output_contents[0], np.float32).reshape(out.shape)
        np.testing.assert_allclose(got, http_answer(stack, "digits", "input", x), rtol=1e-5)

        del tensor.contents.fp32_contents[-1]  # one value short of the shape
        with pytest.raises(grpc.RpcError) as info:
            stub.ModelInfer(req, timeout=60)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "fp32_contents has 127 values but shape [2, 64] needs 128" in info.value.details()
    assert ("trustserve-error-code", "invalid_input") in info.value.trailing_metadata()


def test_bad_shape_unknown_model_and_oversize_get_their_status(
    stack: RunningStack, client: triton.InferenceServerClient
) -> None:
    inp = triton.InferInput("input", [1, 63], "FP32")
    inp.set_data_from_numpy(np.ones((1, 63), np.float32))
    with pytest.raises(triton.InferenceServerException) as info:
        client.infer("digits", [inp])
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "input 'input': shape [1, 63] does not match model shape [-1, 64]" in str(info.value)

    with pytest.raises(triton.InferenceServerException) as info:
        client.infer("no-such-model", [inp])
    assert info.value.status() == "StatusCode.NOT_FOUND"
    assert "unknown model 'no-such-model'" in str(info.value)

    big = np.zeros((2, 3, 224, 224), np.float32)  # 1.2 MB: over the 1 MiB limit
    inp = triton.InferInput("input", list(big.shape), "FP32")
    inp.set_data_from_numpy(big)
    with pytest.raises(triton.InferenceServerException) as info:
        client.infer("resnet50", [inp])
    assert info.value.status() == "StatusCode.RESOURCE_EXHAUSTED"
    assert client.is_server_live()  # refused, nothing broken

    metrics = httpx.get(
        f"https://127.0.0.1:{stack.metrics_port}/metrics", verify=str(stack.ca)
    ).text
    counted = [line for line in metrics.splitlines() if line.startswith("trustserve_requests")]
    assert any('model="digits"' in c and 'api="grpc"' in c and 'status="400"' in c
               for c in counted), counted  # fmt: skip


def test_plaintext_connection_is_refused(stack: RunningStack) -> None:
    plain = triton.InferenceServerClient(f"localhost:{stack.grpc_port}")
    try:
        with pytest.raises(triton.InferenceServerException) as info:
            plain.is_server_live(client_timeout=10)
        assert info.value.status() in ("StatusCode.UNAVAILABLE", "StatusCode.DEADLINE_EXCEEDED")
    finally:
        plain.close()


def test_the_committed_generated_module_matches_the_proto(tmp_path: Path) -> None:
    """``make grpc-gen`` was run after the last change to grpc_predict_v2.proto."""
    generate.generate(tmp_path)
    for name in ("grpc_predict_v2_pb2.py", "grpc_predict_v2_pb2.pyi"):
        committed = (generate.HERE / name).read_text()
        assert (tmp_path / name).read_text() == committed, f"{name} is stale: make grpc-gen"


def test_requests_become_tensors_with_every_input_checked() -> None:
    """Two typed inputs, and each mistake in raw contents named (no stack needed)."""
    req = pb.ModelInferRequest(model_name="m", id="7")
    a = req.inputs.add(name="a", datatype="INT8", shape=[1, 2])
    a.contents.int_contents.extend([-3, 4])
    b = req.inputs.add(name="b", datatype="FP32", shape=[1, 1])
    b.contents.fp32_contents.append(0.5)
    parsed = infer_request(req)
    assert parsed.id == "7"
    assert parsed.inputs[0].data.tolist() == [[-3, 4]] and parsed.inputs[1].data.tolist() == [[0.5]]

    a.contents.int_contents[0] = 300  # no INT8 value: refused, not wrapped
    with pytest.raises(InvalidInput, match="input 'a'"):
        infer_request(req)
    req = pb.ModelInferRequest(model_name="m", raw_input_contents=[b"\0" * 7])
    req.inputs.add(name="a", datatype="FP32", shape=[1, 2])
    with pytest.raises(InvalidInput, match=r"raw_input_contents\[0\] has 7 bytes, .* needs 8"):
        infer_request(req)
    req.raw_input_contents.append(b"")
    with pytest.raises(InvalidInput, match="has 2 entries for 1 inputs"):
        infer_request(req)


def test_a_message_that_is_not_protobuf_is_invalid_argument(stack: RunningStack) -> None:
    with grpc.secure_channel(
        f"localhost:{stack.grpc_port}", grpc.ssl_channel_credentials(stack.ca.read_bytes())
    ) as channel:
        infer = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        with pytest.raises(grpc.RpcError) as info:
            infer(b"\xff\xff\xff", timeout=30)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid ModelInferRequest message" in info.value.details()


def test_the_banner_names_the_grpc_address_unless_it_is_off(tmp_path: Path) -> None:
    on = banner(Settings(home=tmp_path, grpc_port=9184), ["digits"], [])
    assert (
        f"grpc        localhost:9184  (Open Inference Protocol v2 over gRPC, TLS: CA {tmp_path}"
        in on
    )
    assert "grpc " not in banner(Settings(home=tmp_path, grpc_port=0), ["digits"], [])
