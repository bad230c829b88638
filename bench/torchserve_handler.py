"""TorchServe handler for the peer benchmark: the same ONNX model through ONNX Runtime.

Each request body is one image as raw float32 bytes ([1, 3, 224, 224], the same
tensor trustserve receives); TorchServe batches them; the answer per request is
its top-5 (class index, logit), so the peer does no more work than it must.
"""

import json
import os

import numpy as np
import onnxruntime as ort


class OrtHandler:
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
        rows = []
        for item in data:
            body = item.get("body") or item.get("data")
            rows.append(np.frombuffer(bytes(body), dtype=np.float32).reshape(3, 224, 224))
        logits = self.session.run(None, {"input": np.stack(rows)})[0]
        out = []
        for row in logits:
            top = np.argsort(-row)[:5]
            out.append(json.dumps({str(int(i)): float(row[i]) for i in top}))
        return out


_service = OrtHandler()


def handle(data, context):
    if _service.session is None:
        _service.initialize(context)
    if data is None:
        return None
    return _service.handle(data, context)
