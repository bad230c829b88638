"""gRPC rank bomb: typed ``contents`` that cannot fit the model are refused before conversion.

Before (issue 21, item 4): the gRPC frontend turned every input's typed protobuf
contents into numpy, then raw bytes, and only then checked the request against the
model, so a wrong-rank request of tens of MiB cost its whole size again (and more)
in memory and a second of CPU before the 400. Now each input's name, datatype, rank,
dimensions and batch size are checked from the protobuf header first, as the REST
path does (tests/attacks/test_json_rank_bomb.py).

In process: the frontend's gRPC servicer over the inference API and the embedded
broker, no worker (the attack must be answered by the frontend itself).
"""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from tests.support import write_tiny
from trustserve.broker.embedded import EmbeddedBroker
from trustserve.errors import InvalidInput, Unavailable
from trustserve.frontend.dataplane import DataPlane
from trustserve.frontend.grpc_service import GrpcInference
from trustserve.frontend.grpc_v2 import grpc_predict_v2_pb2 as pb
from trustserve.frontend.metrics import Metrics
from trustserve.frontend.registry import ModelRegistry


def servicer(store: Path) -> GrpcInference:
    """The tiny model (x: FP32 [-1, 4], batch <= 8) behind the gRPC servicer."""
    store.mkdir(parents=True)
    write_tiny(store)
    registry = ModelRegistry(store)
    registry.register("tiny-1.tsm", 0)
    return GrpcInference(DataPlane(registry, EmbeddedBroker(), Metrics(), timeout_s=30.0))


def request(shape: list[int]) -> pb.ModelInferRequest:
    r = pb.ModelInferRequest(model_name="tiny")
    t = r.inputs.add(name="x", datatype="FP32", shape=shape)
    t.contents.fp32_contents.extend(np.full(int(np.prod(shape)), 1.5, np.float32))
    return r


async def test_wrong_rank_typed_contents_are_refused_before_conversion(tmp_path: Path) -> None:
    grpc = servicer(tmp_path / "store")
    bomb = request([1, 600_000, 4])  # rank 3 for a rank-2 model: 2.4 M floats, 9.2 MiB
    tracemalloc.start()
    try:
        with pytest.raises(InvalidInput, match=r"shape \[1, 600000, 4\] does not match"):
            await grpc.model_infer(bomb)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # converted, the values would be held at least twice more (array, then raw bytes)
    assert peak < 1 << 20, f"{peak / 2**20:.1f} MiB traced to refuse a wrong-rank request"


@pytest.mark.parametrize(
    ("shape", "named"),
    [([9, 4], "batch size 9"), ([2, 5], r"shape \[2, 5\] does not match")],
)
async def test_batch_and_dimensions_are_checked_from_the_header(
    tmp_path: Path, shape: list[int], named: str
) -> None:
    with pytest.raises(InvalidInput, match=named):
        await servicer(tmp_path / "store").model_infer(request(shape))


async def test_a_request_that_fits_passes_the_checks(tmp_path: Path) -> None:
    """The same path, a request the model takes: checked, then refused only for want of a
    worker (no worker runs here), so the header check refuses nothing that fits."""
    with pytest.raises(Unavailable, match="no worker ready"):
        await servicer(tmp_path / "store").model_infer(request([2, 4]))
