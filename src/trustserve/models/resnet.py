"""The ``resnet50`` demo model: ResNet-50 v1.5 with deterministic synthetic weights.

The topology is torchvision's ``resnet50`` (v1.5: the stride-2 of a
downsampling bottleneck sits on its 3x3 convolution), built node by node with
the ``onnx`` helper API, batch normalisation folded into the convolutions.
The weights come from a seeded generator, scaled so that activations stay in
a stable range through all 16 bottlenecks (He initialisation; the residual
branch of each bottleneck scaled down). The classifier is then fitted to the
pooled features of synthetic images (the main directions in which they vary)
so that its 1000 logits spread across inputs: the predictions mean nothing,
but they differ from image to image, which makes FP32-vs-INT8 top-1
agreement a meaningful figure (docs/models.md quotes what the build records).
Every draw is seeded, so two builds give the same bytes.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from trustserve.archive import ImagePreprocessing, Manifest, TensorSpec
from trustserve.models.calibration import synthetic_image_batch

NAME = "resnet50"
OPSET = 17
IR_VERSION = 8
# The synthetic weights come from numpy Generators seeded with constants (this seed, the
# synthetic images' seeds): they are not secrets, and a fixed seed makes the demo build
# deterministic, byte for byte and in the figures docs/models.md quotes.
SEED = 50
STAGES = ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2))  # width, blocks, stride
EXPANSION = 4
NUM_CLASSES = 1000
RESIDUAL_SCALE = 0.5
LOGIT_SCALE = 4.0
COMPONENTS = 8
# Seeds of the synthetic images the classifier is standardised on (disjoint from evaluation).
FEATURE_SEEDS = range(100_000, 100_048)


class _Builder:
    """Accumulates nodes and initializers; every conv gets the next weights from the RNG."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.count = 0

    def _name(self, kind: str) -> str:
        self.count += 1
        return f"{kind}_{self.count}"

    def conv(
        self, x: str, cin: int, cout: int, k: int, stride: int, *, relu: bool, gain: float = 2.0
    ) -> str:
        name = self._name("conv")
        fan_in = cin * k * k
        w = self.rng.standard_normal((cout, cin, k, k), dtype=np.float32)
        w *= np.float32(np.sqrt(gain / fan_in))
        b = (self.rng.standard_normal(cout, dtype=np.float32) * np.float32(0.05)).astype(np.float32)
        self.inits += [numpy_helper.from_array(w, f"{name}.weight")]
        self.inits += [numpy_helper.from_array(b, f"{name}.bias")]
        pad = k // 2
        self.nodes.append(
            helper.make_node(
                "Conv",
                [x, f"{name}.weight", f"{name}.bias"],
                [name],
                name=name,
                kernel_shape=[k, k],
                strides=[stride, stride],
                pads=[pad, pad, pad, pad],
            )
        )
        return self.relu(name) if relu else name

    def relu(self, x: str) -> str:
        name = self._name("relu")
        self.nodes.append(helper.make_node("Relu", [x], [name], name=name))
        return name

    def add(self, a: str, b: str) -> str:
        name = self._name("add")
        self.nodes.append(helper.make_node("Add", [a, b], [name], name=name))
        return name

    def bottleneck(self, x: str, cin: int, width: int, stride: int) -> str:
        cout = width * EXPANSION
        y = self.conv(x, cin, width, 1, 1, relu=True)
        y = self.conv(y, width, width, 3, stride, relu=True)  # v1.5: stride on the 3x3
        y = self.conv(y, width, cout, 1, 1, relu=False, gain=RESIDUAL_SCALE**2)
        shortcut = x
        if stride != 1 or cin != cout:
            shortcut = self.conv(x, cin, cout, 1, stride, relu=False, gain=1.0)
        return self.relu(self.add(y, shortcut))


def _trunk(seed: int) -> tuple[_Builder, str]:
    """The convolutional trunk up to the pooled 2048 features (``features`` [N,2048])."""
    b = _Builder(seed)
    x = b.conv("input", 3, 64, 7, 2, relu=True)
    b.nodes.append(
        helper.make_node(
            "MaxPool",
            [x],
            ["pool1"],
            name="pool1",
            kernel_shape=[3, 3],
            strides=[2, 2],
            pads=[1, 1, 1, 1],
        )
    )
    x, cin = "pool1", 64
    for width, blocks, stride in STAGES:
        for i in range(blocks):
            x = b.bottleneck(x, cin, width, stride if i == 0 else 1)
            cin = width * EXPANSION
    b.nodes.append(helper.make_node("GlobalAveragePool", [x], ["gap"], name="gap"))
    b.nodes.append(helper.make_node("Flatten", ["gap"], ["features"], name="flatten", axis=1))
    return b, "features"


def _model(b: _Builder, outputs: list[onnx.ValueInfoProto]) -> onnx.ModelProto:
    graph = helper.make_graph(
        b.nodes,
        NAME,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 224, 224])],
        outputs,
        initializer=b.inits,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="trustserve",
        doc_string="ResNet-50 v1.5 with deterministic synthetic weights (demo model)",
    )
    model.ir_version = IR_VERSION
    return model


def build_resnet50(seed: int = SEED, *, threads: int = 2) -> onnx.ModelProto:
    """ResNet-50 v1.5, input ``input`` FP32 [N,3,224,224], output ``logits`` FP32 [N,1000]."""
    b, features = _trunk(seed)
    trunk = _model(b, [helper.make_tensor_value_info(features, TensorProto.FLOAT, ["N", 2048])])
    feats = _run(trunk, synthetic_image_batch(ImagePreprocessing(), FEATURE_SEEDS), threads)
    w, bias = _classifier(feats, b.rng)
    b.inits += [numpy_helper.from_array(w, "fc.weight"), numpy_helper.from_array(bias, "fc.bias")]
    b.nodes.append(
        helper.make_node("Gemm", [features, "fc.weight", "fc.bias"], ["logits"], name="fc")
    )
    model = _model(
        b, [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", NUM_CLASSES])]
    )
    onnx.checker.check_model(model)
    return model


def _classifier(
    feats: npt.NDArray[np.float32], rng: np.random.Generator
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """Random logits over the main directions in which pooled features vary between images.

    The features are centred and projected on their top principal components,
    each scaled to unit spread: every logit then moves with the image, and
    along directions where the signal is far above 8-bit quantization noise.
    """
    mean = feats.mean(axis=0)
    _, sv, vt = np.linalg.svd(feats - mean, full_matrices=False)
    spread = sv[:COMPONENTS] / np.sqrt(len(feats))
    mix = rng.standard_normal((COMPONENTS, NUM_CLASSES)).astype(np.float32)
    mix *= np.float32(LOGIT_SCALE / np.sqrt(COMPONENTS))
    w = (vt[:COMPONENTS].T @ (mix / spread[:, None])).astype(np.float32)
    return w, (-(mean @ w)).astype(np.float32)


def _run(
    model: onnx.ModelProto, x: npt.NDArray[np.float32], threads: int
) -> npt.NDArray[np.float32]:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    out = np.concatenate(
        [sess.run(None, {"input": x[i : i + 16]})[0] for i in range(0, len(x), 16)]
    )
    return np.asarray(out, dtype=np.float32)


def resnet50_manifest(version: str, *, precision: str, default: bool) -> Manifest:
    return Manifest(
        name=NAME,
        version=version,
        inputs=(TensorSpec("input", "FP32", (-1, 3, 224, 224)),),
        outputs=(TensorSpec("logits", "FP32", (-1, NUM_CLASSES)),),
        max_batch_size=16,
        max_batch_delay_ms=5.0,
        preprocessing=ImagePreprocessing(),
        labels=tuple(f"class_{i}" for i in range(NUM_CLASSES)),
        description=(
            f"ResNet-50 v1.5, {precision.upper()}, deterministic synthetic weights: the "
            "labels class_0..class_999 are placeholders and predictions carry no meaning"
        ),
        extra={"precision": precision, "default_version": default, "synthetic_weights": True},
    )
