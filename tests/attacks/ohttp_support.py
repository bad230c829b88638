"""What the OHTTP attack tests share: a verified target, an encapsulated request, a post."""

from __future__ import annotations

import re

import httpx
import numpy as np

from tests.support import RunningStack
from trustserve.client import ClientPolicy, TrustserveClient
from trustserve.client.ohttp import encapsulate, gateway_path, inner_request
from trustserve.client.verify import ServingTarget
from trustserve.crypto import bhttp, ohttp
from trustserve.tensors import Tensor, encode_binary


def target(stack: RunningStack) -> ServingTarget:
    with TrustserveClient(stack.url, policy=ClientPolicy.development(stack.home), ca=stack.ca) as c:
        return c.verify()


def v2_body(x: np.ndarray) -> tuple[bytes, dict[str, str]]:
    body, head_len = encode_binary({}, "inputs", [Tensor("x", "FP32", x.shape, x)])
    headers = {
        "content-type": "application/octet-stream",
        "inference-header-content-length": str(head_len),
    }
    return body, headers


def encapsulated(
    stack: RunningStack, inner_path: str = "/v2/models/tiny/versions/1/infer"
) -> tuple[bytes, ohttp.ClientContext]:
    """A well-formed encapsulated v2 request for ``inner_path`` to the attested key config."""
    body, headers = v2_body(np.ones((1, 4), np.float32))
    request = inner_request(inner_path, body, headers)
    assert target(stack).ohttp_config is not None
    return encapsulate(target(stack).ohttp_config, request)


def post(
    stack: RunningStack,
    body: bytes,
    route: tuple[str, str] = ("tiny", "1"),
    content_type: str = ohttp.REQUEST_TYPE,
) -> httpx.Response:
    with stack.client() as c:
        return c.post(gateway_path(*route), content=body, headers={"Content-Type": content_type})


def opened(context: ohttp.ClientContext, response: httpx.Response) -> bhttp.Response:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == ohttp.RESPONSE_TYPE
    return bhttp.decode_response(context.open_response(response.content))


def answered(stack: RunningStack, status: str = r"\d+") -> float:
    """OHTTP requests the frontend counted, by the status it saw: a worker's answer is 200
    whatever happened inside (only the client reads the inner status, ``opened``); a
    refusal from before any worker opened the request has its own status."""
    url = f"https://127.0.0.1:{stack.metrics_port}/metrics"
    text = httpx.get(url, verify=str(stack.ca)).text
    pattern = rf'trustserve_requests_total\{{api="ohttp",[^}}]*status="{status}"[^}}]*\}} (\S+)'
    return sum(float(c) for c in re.findall(pattern, text))
