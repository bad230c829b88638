"""schemathesis against a real running stack: inference, management (with its token) and the
embedded KMS, each fuzzed from its own OpenAPI document (``GET /openapi.json``).

For a bounded number of generated requests per operation, valid by the document and not:
no answer is a 5xx, every answer conforms to the document (status, content type, body
schema), and afterwards the stack still answers a valid inference.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.support import RunningStack, start_stack, tiny_expected, write_tiny

EXAMPLES = int(os.environ.get("TRUSTSERVE_FUZZ_EXAMPLES", "12"))  # per operation and mode
# An encapsulated OHTTP request is opaque bytes to anyone but a worker: send what is generated
# as it is, as for application/octet-stream.
schemathesis.serializer.alias("message/ohttp-req", "application/octet-stream")
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    root = tmp_path_factory.mktemp("fuzz-stack")
    store = root / "store"
    store.mkdir()
    write_tiny(store)
    running = start_stack(root / "home", store, "--max-body-mb", "1")
    yield running
    running.stop()


def _fuzz(base_url: str, ca: Path, token: str | None) -> Counter[int]:
    """Fuzz every operation of the server at ``base_url``; the statuses it answered."""
    session = requests.Session()
    session.trust_env = False  # REQUESTS_CA_BUNDLE would replace the stack's own CA
    session.verify = str(ca)
    if token is not None:
        session.headers["Authorization"] = f"Bearer {token}"
    answer = session.get(f"{base_url}/openapi.json", timeout=30)
    assert answer.status_code == 200
    schema = schemathesis.openapi.from_dict(answer.json())
    operations = [result.ok() for result in schema.get_all_operations()]
    strategies = [
        op.as_strategy(generation_mode=mode)
        for op in operations
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    ]
    # random model names only meet 404s: as many again aimed at the served model (reading or
    # inferring only: unregistering or scaling it to 0 is the management API working)
    for op in operations:
        names = {p.name for p in op.path_parameters}
        aimed = op.method.upper() == "GET" or op.path.startswith(("/v2/", "/predictions/"))
        if "model" in names and aimed:
            fixed = {"model": "tiny", **({"version": "1"} if "version" in names else {})}
            strategies.append(op.as_strategy(path_parameters=fixed))
    strategy = st.one_of(strategies)

    @settings(
        max_examples=EXAMPLES * len(strategies),
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def run(case: schemathesis.Case) -> None:
        r = case.call_and_validate(
            base_url=base_url, session=session, checks=CHECKS, timeout=30, verify=str(ca)
        )
        seen[r.status_code] += 1

    seen: Counter[int] = Counter()
    run()
    print(base_url, sorted(seen.items()))
    # the requests reached the handlers: some were answered, some refused as the client's fault
    assert any(200 <= s < 300 for s in seen) and any(400 <= s < 500 for s in seen), seen
    return seen


def _still_answers(stack: RunningStack) -> None:
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    body = {
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 4], "data": x.ravel().tolist()}]
    }
    with stack.client() as c:
        r = c.post("/v2/models/tiny/infer", json=body)
    assert r.status_code == 200, r.text
    y = next(o for o in r.json()["outputs"] if o["name"] == "y")
    assert np.allclose(np.array(y["data"]).reshape(2, 4), tiny_expected(x)[0])


def test_inference_api(stack: RunningStack) -> None:
    _fuzz(stack.url, stack.ca, None)
    _still_answers(stack)


def test_management_api(stack: RunningStack) -> None:
    _fuzz(stack.management_url, stack.ca, stack.token)
    _still_answers(stack)


def test_kms_api(stack: RunningStack) -> None:
    token = (stack.home / "kms" / "admin.token").read_text().strip()
    _fuzz(f"https://127.0.0.1:{stack.kms_port}", stack.ca, token)
    _still_answers(stack)
