"""The ``digits`` demo model: a real classifier trained at build time on scikit-learn's digits.

The data set (1797 8x8 greyscale digits, pixel values 0..16, flattened to 64
features) ships with scikit-learn, so nothing is downloaded. A stratified 20%
split is held out; a standard scaler and a one-hidden-layer MLP are trained on
the rest and exported with skl2onnx. The graph is cut before its softmax and
label branch, so it has one plain output: ``logits`` FP32 [N,10].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import onnx
from onnx import helper
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from trustserve.archive import Manifest, TensorSpec

NAME = "digits"
SEED = 0
TEST_SIZE = 0.2
OPSET = 17
IR_VERSION = 8
LABELS = tuple(str(i) for i in range(10))


@dataclass(frozen=True)
class DigitsSplit:
    x_train: npt.NDArray[np.float32]
    y_train: npt.NDArray[np.int64]
    x_test: npt.NDArray[np.float32]
    y_test: npt.NDArray[np.int64]


@dataclass(frozen=True)
class DigitsModel:
    model: onnx.ModelProto
    split: DigitsSplit
    accuracy: float  # of the trained scikit-learn pipeline on the held-out split


def digits_split(seed: int = SEED) -> DigitsSplit:
    """The fixed train / held-out split (stratified, 20% held out)."""
    x, y = load_digits(return_X_y=True)
    x_tr, x_te, y_tr, y_te = train_test_split(
        np.asarray(x, dtype=np.float32),
        np.asarray(y, dtype=np.int64),
        test_size=TEST_SIZE,
        random_state=seed,
        stratify=y,
    )
    return DigitsSplit(x_tr, y_tr, x_te, y_te)


def train_digits(seed: int = SEED) -> DigitsModel:
    """Train the classifier and export it to ONNX (input ``input`` [N,64], output ``logits``)."""
    from skl2onnx import convert_sklearn  # heavy import, only needed at build time
    from skl2onnx.common.data_types import FloatTensorType

    split = digits_split(seed)
    pipe: Pipeline = make_pipeline(
        StandardScaler(),
        MLPClassifier(hidden_layer_sizes=(128,), alpha=1e-3, max_iter=500, random_state=seed),
    )
    pipe.fit(split.x_train, split.y_train)
    accuracy = float(pipe.score(split.x_test, split.y_test))
    exported = convert_sklearn(
        pipe,
        initial_types=[("input", FloatTensorType([None, 64]))],
        options={id(pipe): {"zipmap": False}},
        target_opset={"": OPSET, "ai.onnx.ml": 1},
    )
    return DigitsModel(_logits_only(exported), split, accuracy)


def _logits_only(model: onnx.ModelProto) -> onnx.ModelProto:
    """Keep the nodes up to the softmax's input and expose that tensor as ``logits`` [N,10]."""
    graph = model.graph
    softmax = [n for n in graph.node if n.op_type == "Softmax"]
    if len(softmax) != 1:
        raise RuntimeError("unexpected skl2onnx graph: no single Softmax node")
    needed = {softmax[0].input[0]}
    kept: list[onnx.NodeProto] = []
    for node in reversed(graph.node):
        if any(o in needed for o in node.output):
            kept.append(node)
            needed.update(node.input)
    kept.reverse()
    kept.append(helper.make_node("Identity", [softmax[0].input[0]], ["logits"], name="logits"))
    inits = [i for i in graph.initializer if i.name in needed]
    new_graph = helper.make_graph(
        kept,
        NAME,
        [helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, ["N", 64])],
        [helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["N", 10])],
        initializer=inits,
    )
    out = helper.make_model(
        new_graph,
        opset_imports=list(model.opset_import),
        producer_name="trustserve",
        doc_string="MLP trained on scikit-learn's 8x8 digits (demo model)",
    )
    out.ir_version = IR_VERSION
    onnx.checker.check_model(out)
    return out


def digits_manifest(version: str = "1", *, accuracy: float | None = None) -> Manifest:
    extra: dict[str, object] = {"precision": "fp32", "default_version": True}
    if accuracy is not None:
        extra["held_out_accuracy"] = round(accuracy, 4)
    return Manifest(
        name=NAME,
        version=version,
        inputs=(TensorSpec("input", "FP32", (-1, 64)),),
        outputs=(TensorSpec("logits", "FP32", (-1, 10)),),
        max_batch_size=64,
        max_batch_delay_ms=2.0,
        labels=LABELS,
        description=(
            "MLP on scikit-learn's 8x8 digits: 64 pixel values 0..16 (row-major) in, "
            "10 class logits out (softmax for probabilities)"
        ),
        extra=extra,
    )
