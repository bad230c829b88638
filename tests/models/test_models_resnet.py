"""The resnet50 demo model: v1.5 topology, FP32 and INT8 archives, finite and spread logits."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from trustserve import archive
from trustserve.archive import ImagePreprocessing
from trustserve.models.calibration import synthetic_image_batch
from trustserve.models.quantize import is_quantized, session

IMAGES = range(300_000, 300_008)  # seeds disjoint from calibration and build-time checks


def conv_layout(model: onnx.ModelProto) -> Counter[tuple[int, int]]:
    """(kernel size, stride) of every convolution."""
    out: Counter[tuple[int, int]] = Counter()
    for node in model.graph.node:
        if node.op_type == "Conv":
            attrs = {a.name: list(a.ints) for a in node.attribute}
            out[(attrs["kernel_shape"][0], attrs["strides"][0])] += 1
    return out


def test_fp32_graph_is_resnet50_v1_5(demo_store: dict[str, Path]) -> None:
    model = onnx.load(str(demo_store["onnx/resnet50-fp32"]))
    inp, out = model.graph.input[0], model.graph.output[0]
    assert inp.name == "input" and out.name == "logits"
    assert [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim] == [
        "N",
        3,
        224,
        224,
    ]
    assert [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim] == ["N", 1000]
    # 53 convolutions; stride 2 on the 7x7 stem, on three 3x3s (v1.5) and three 1x1 projections.
    layout = conv_layout(model)
    assert sum(layout.values()) == 53
    assert {k: v for k, v in layout.items() if k[1] == 2} == {(7, 2): 1, (3, 2): 3, (1, 2): 3}
    params = sum(numpy_helper.to_array(t).size for t in model.graph.initializer)
    assert 25_400_000 < params < 25_700_000  # torchvision's resnet50: 25,557,032


def test_fp32_and_int8_archives(demo_store: dict[str, Path]) -> None:
    fp32 = archive.load(demo_store["resnet50-fp32"])
    int8 = archive.load(demo_store["resnet50"])
    assert demo_store["resnet50-int8"] == demo_store["resnet50"]
    assert (fp32.manifest.name, fp32.manifest.version) == ("resnet50", "fp32")
    assert (int8.manifest.name, int8.manifest.version) == ("resnet50", "int8")
    assert int8.manifest.extra["default_version"] is True
    assert fp32.manifest.extra["default_version"] is False
    for m in (fp32.manifest, int8.manifest):
        assert m.inputs[0].shape == (-1, 3, 224, 224) and m.outputs[0].shape == (-1, 1000)
        assert m.preprocessing == ImagePreprocessing()
        assert m.labels is not None and m.labels[0] == "class_0" and len(m.labels) == 1000
        assert m.max_batch_size == 16
    assert 95e6 < len(fp32.payload) < 110e6
    assert len(int8.payload) < len(fp32.payload) / 3
    assert not is_quantized(onnx.load_from_string(fp32.payload))
    assert is_quantized(onnx.load_from_string(int8.payload))


def test_logits_are_finite_and_vary_between_images(demo_store: dict[str, Path]) -> None:
    x = synthetic_image_batch(ImagePreprocessing(), IMAGES)
    top1 = {}
    for key in ("resnet50-fp32", "resnet50"):
        sess = session(archive.load(demo_store[key]).payload)
        logits = sess.run(None, {"input": x})[0]
        assert logits.shape == (len(x), 1000) and logits.dtype == np.float32
        assert np.isfinite(logits).all()
        assert logits.std(axis=1).min() > 1.0  # spread over the classes ...
        top1[key] = logits.argmax(axis=1)
        assert len(set(top1[key].tolist())) >= 4  # ... and different winners for different images
    agreement = float(np.mean(top1["resnet50-fp32"] == top1["resnet50"]))
    print(f"resnet50 FP32/INT8 top-1 agreement on {len(x)} images: {100 * agreement:.0f}%")
    assert agreement >= 0.5
