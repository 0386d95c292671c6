"""Classification metrics in numpy, shared by the solutions that classify (defect, text):
accuracy, macro-F1, per-class recall, the confusion matrix, and the nearest-neighbour accuracy of
embeddings.

Example:
    >>> import numpy as np
    >>> m = classification_metrics(np.array([0, 1, 1]), np.eye(2)[[0, 1, 0]], ["a", "b"])
    >>> m["accuracy"], m["recall_b"]
    (0.6666666666666666, 0.5)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def prefixed(metrics: Mapping[str, float], prefix: str) -> dict[str, float]:
    """``metrics`` with every key prefixed."""
    return {prefix + k: v for k, v in metrics.items()}


def confusion(labels: np.ndarray, predicted: np.ndarray, classes: int) -> np.ndarray:
    """(K, K) counts: row = true class, column = predicted class."""
    return np.bincount(labels * classes + predicted, minlength=classes * classes).reshape(
        classes, classes
    )


def classification_metrics(
    labels: Any, probabilities: Any, classes: Sequence[str], *, count: str = "images"
) -> dict[str, float]:
    """Accuracy, macro-F1 (unweighted over the classes present in ``labels`` or predicted),
    recall per class (``recall_<name>``; NaN for a class absent from ``labels``) and the number
    of items scored (under the key ``count``).

    Args:
        labels: (N,) class indices.
        probabilities: (N, K) class probabilities.
        classes: the K class names.
        count: the key of the item count (``images``, ``texts``).
    """
    labels = _numpy(labels).astype(np.int64)
    predicted = _numpy(probabilities).argmax(axis=1)
    k = len(classes)
    m = confusion(labels, predicted, k)
    true, pred, hit = m.sum(axis=1), m.sum(axis=0), np.diag(m)
    with np.errstate(divide="ignore", invalid="ignore"):
        recall = hit / true
        precision = hit / pred
        f1 = np.where(hit > 0, 2 * precision * recall / (precision + recall), 0.0)
    present = (true + pred) > 0
    out = {
        "accuracy": float(hit.sum() / max(1, len(labels))),
        "macro_f1": float(f1[present].mean()) if present.any() else float("nan"),
        count: len(labels),
    }
    for name, r in zip(classes, recall, strict=True):
        out[f"recall_{name}"] = float(r)
    return out


def knn_accuracy(embeddings: Any, labels: Any) -> float:
    """Leave-one-out 1-nearest-neighbour accuracy (cosine) of labelled embeddings; NaN when
    fewer than two are labelled."""
    z = _numpy(embeddings).astype(np.float64)
    y = _numpy(labels).astype(np.int64)
    keep = y >= 0
    z, y = z[keep], y[keep]
    if len(y) < 2:
        return float("nan")
    z = z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)
    sim = z @ z.T
    np.fill_diagonal(sim, -np.inf)
    return float((y[sim.argmax(axis=1)] == y).mean())


def _numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu()
        value = value.float() if value.is_floating_point() else value
        return value.numpy()
    return np.asarray(value)
