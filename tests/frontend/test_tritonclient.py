"""The unmodified tritonclient[http] client, over HTTPS, in JSON and in binary mode."""

from __future__ import annotations

import gevent.ssl
import numpy as np
import pytest
import tritonclient.http as triton

from tests.support import RunningStack, tiny_expected


def client(stack: RunningStack) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(
        url=f"localhost:{stack.port}",
        ssl=True,
        ssl_options={"ca_certs": str(stack.ca)},
        ssl_context_factory=gevent.ssl.create_default_context,
    )


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_tritonclient_infer(tiny_stack: RunningStack, binary: bool) -> None:
    c = client(tiny_stack)
    try:
        assert c.is_server_live() and c.is_server_ready() and c.is_model_ready("tiny")
        meta = c.get_model_metadata("tiny")
        assert meta["inputs"][0]["name"] == "x"
        x = np.random.default_rng().standard_normal((5, 4)).astype(np.float32)
        inp = triton.InferInput("x", list(x.shape), "FP32")
        inp.set_data_from_numpy(x, binary_data=binary)
        outs = [
            triton.InferRequestedOutput("y", binary_data=binary),
            triton.InferRequestedOutput("s", binary_data=binary),
        ]
        result = c.infer("tiny", [inp], outputs=outs, request_id="42")
        y, s = tiny_expected(x)
        np.testing.assert_allclose(result.as_numpy("y"), y, rtol=1e-6)
        np.testing.assert_allclose(result.as_numpy("s"), s, rtol=1e-5)
        assert result.get_response()["id"] == "42"
    finally:
        c.close()


def test_tritonclient_sees_server_errors(tiny_stack: RunningStack) -> None:
    c = client(tiny_stack)
    try:
        inp = triton.InferInput("x", [1, 3], "FP32")
        inp.set_data_from_numpy(np.ones((1, 3), np.float32))
        with pytest.raises(triton.InferenceServerException, match="does not match model shape"):
            c.infer("tiny", [inp])
    finally:
        c.close()
