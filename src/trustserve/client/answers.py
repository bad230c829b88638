"""What ``predict`` and ``batch`` share about inputs and answers: which files are images,
what a ``.npy`` array is sent as, and how an answer is shown (``--top-k``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from trustserve.client.sdk import TrustserveClient

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}


def top_k(outputs: dict[str, Any], k: int) -> dict[str, Any]:
    shown: dict[str, Any] = {}
    for name, array in outputs.items():
        a = np.asarray(array)
        if a.ndim == 2 and a.shape[1] > k:
            shown[name] = [
                {str(int(i)): round(float(row[i]), 6) for i in np.argsort(-row)[:k]} for row in a
            ]
        else:
            shown[name] = a.tolist()
    return shown


def top_labels(answer: Any, k: int) -> Any:
    """``--top-k`` on a TorchServe-style answer: label -> probability objects (one per
    instance, or one object) keep their ``k`` best; raw outputs by name go through
    ``top_k``. The server sends at most its top 5 labels: a larger ``k`` shows those."""
    if isinstance(answer, list):
        return [top_labels(a, k) for a in answer]
    if not isinstance(answer, dict):
        return answer
    values = list(answer.values())
    if values and all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        best = sorted(answer.items(), key=lambda item: -float(item[1]))[:k]
        return dict(best)
    if values and all(isinstance(v, list) for v in values):
        return {name: _best(np.asarray(v), k) for name, v in answer.items()}
    return answer


def _best(a: np.ndarray, k: int) -> Any:
    """One instance's output: its ``k`` largest entries by index when it has more."""
    if a.ndim == 1 and a.size > k and np.issubdtype(a.dtype, np.number):
        return {str(int(i)): round(float(a[i]), 6) for i in np.argsort(-a)[:k]}
    if a.ndim == 2 and np.issubdtype(a.dtype, np.number):
        return top_k({"_": a}, k)["_"]
    return a.tolist()


def input_name(client: TrustserveClient, model: str) -> str:
    """The model's first input, which a .npy array is sent as."""
    meta = client._http.get(f"/v2/models/{model}").json()
    return str(meta["inputs"][0]["name"])
