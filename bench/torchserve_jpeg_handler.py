"""TorchServe handler for the JPEG peer benchmark (issue 25): JPEG bytes in, top-5 out.

Each request body is one encoded image, as TorchServe's image_classifier takes it.
It is decoded with PIL and preprocessed as torchvision's ImageNet transform does
(short side to 256, bilinear; center crop 224; scale to [0, 1]; normalize), which is
also what trustserve's worker does (``trustserve.imaging``), then the batch runs in
ONNX Runtime on the same INT8 model. TorchServe's own ``VisionHandler`` would need
torchvision, which the peer's venv does not have (and it runs PyTorch models, not ORT).
"""

import io
import json
import os

import numpy as np
import onnxruntime as ort
from PIL import Image

MEAN = np.asarray([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.asarray([0.229, 0.224, 0.225], dtype=np.float32)


def preprocess(body):
    img = Image.open(io.BytesIO(body)).convert("RGB")
    w, h = img.size
    size = (256, max(1, int(256 * h / w))) if w <= h else (max(1, int(256 * w / h)), 256)
    img = img.resize(size, Image.Resampling.BILINEAR)
    left, top = round((size[0] - 224) / 2.0), round((size[1] - 224) / 2.0)
    img = img.crop((left, top, left + 224, top + 224))
    arr = (np.asarray(img, dtype=np.float32) / np.float32(255.0) - MEAN) / STD
    return arr.transpose(2, 0, 1)


class OrtJpegHandler:
    def __init__(self):
        self.session = None

    def initialize(self, context):
        model_dir = context.system_properties.get("model_dir")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(os.environ.get("BENCH_THREADS", "2"))
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(
            os.path.join(model_dir, "model.onnx"), opts, providers=["CPUExecutionProvider"]
        )

    def handle(self, data, context):
        rows = [preprocess(bytes(item.get("body") or item.get("data"))) for item in data]
        logits = self.session.run(None, {"input": np.stack(rows)})[0]
        out = []
        for row in logits:
            top = np.argsort(-row)[:5]
            out.append(json.dumps({str(int(i)): float(row[i]) for i in top}))
        return out


_service = OrtJpegHandler()


def handle(data, context):
    if _service.session is None:
        _service.initialize(context)
    if data is None:
        return None
    return _service.handle(data, context)
