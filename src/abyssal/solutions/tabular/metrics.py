"""Metrics of the tabular solution, computed with scikit-learn.

- classification: accuracy, macro-F1, AUROC (binary: of the second class's probability;
  multi-class: the unweighted mean of one-vs-rest AUROCs over the classes present, as
  ``roc_auc_score(multi_class="ovr", average="macro")``), log-loss;
- regression: RMSE, MAE, R², in the target's own units.

A metric that the data cannot define (AUROC with one class present) is NaN.

Example:
    >>> import numpy as np
    >>> m = classification_metrics(np.array([0, 1]), np.array([[0.8, 0.2], [0.3, 0.7]]))
    >>> m["accuracy"], m["auroc"]
    (1.0, 1.0)
"""

from __future__ import annotations

from types import ModuleType

import numpy as np

from abyssal.core.intervals import bootstrap_interval
from abyssal.core.optional import require


def _metrics_module() -> ModuleType:
    return require("sklearn.metrics", extra="tabular", purpose="tabular metrics")


def classification_metrics(labels: np.ndarray, probabilities: np.ndarray) -> dict[str, float]:
    """Accuracy, macro-F1, AUROC and log-loss, plus the row count (and positives if binary).

    Args:
        labels: (N,) class indices.
        probabilities: (N, C) class probabilities (rows sum to 1).

    Returns:
        ``accuracy``, ``macro_f1``, ``auroc``, ``log_loss``, ``rows`` and, for two classes,
        ``positives`` (rows of the second class).
    """
    skm = _metrics_module()
    labels = np.asarray(labels, dtype=np.int64)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    probabilities = probabilities / probabilities.sum(axis=1, keepdims=True)  # float32 softmax
    classes = probabilities.shape[1]
    predicted = probabilities.argmax(axis=1)
    out = {
        "accuracy": float(skm.accuracy_score(labels, predicted)),
        "macro_f1": float(skm.f1_score(labels, predicted, average="macro", zero_division=0)),
        "auroc": auroc(labels, probabilities),
        "log_loss": float(skm.log_loss(labels, probabilities, labels=list(range(classes)))),
        "rows": len(labels),
    }
    if classes == 2:
        out["positives"] = int(np.sum(labels == 1))
    return out


def auroc(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """Binary AUROC, or the macro mean of one-vs-rest AUROCs; NaN if no class can be ranked.

    Shapes:
        labels: (N,) class indices; probabilities: (N, C).
    """
    skm = _metrics_module()
    if probabilities.shape[1] == 2:
        if len(np.unique(labels)) < 2:
            return float("nan")
        return float(skm.roc_auc_score(labels, probabilities[:, 1]))
    scores = [
        skm.roc_auc_score(labels == c, probabilities[:, c])
        for c in range(probabilities.shape[1])
        if 0 < np.sum(labels == c) < len(labels)
    ]
    return float(np.mean(scores)) if scores else float("nan")


def regression_metrics(target: np.ndarray, prediction: np.ndarray) -> dict[str, float]:
    """RMSE, MAE and R² of ``prediction`` against ``target`` (both (N,)), plus the row count."""
    skm = _metrics_module()
    target = np.asarray(target, dtype=np.float64)
    prediction = np.asarray(prediction, dtype=np.float64)
    r2 = float(skm.r2_score(target, prediction)) if len(target) > 1 else float("nan")
    return {
        "rmse": float(np.sqrt(skm.mean_squared_error(target, prediction))),
        "mae": float(skm.mean_absolute_error(target, prediction)),
        "r2": r2,
        "rows": len(target),
    }


def test_interval(truth: np.ndarray, prediction: np.ndarray, task: str) -> dict[str, float]:
    """The 95% bootstrap interval of the headline test metric: ``auroc_low`` / ``auroc_high``
    (classification: labels and (N, C) probabilities) or ``rmse_low`` / ``rmse_high``
    (regression); nothing where it is undefined. Prefix the keys with ``test_``."""
    if task == "classification":
        name, metric, both = "auroc", auroc, True
    else:
        name, both = "rmse", False

        def metric(t: np.ndarray, p: np.ndarray) -> float:
            return float(np.sqrt(np.mean((np.asarray(t, float) - np.asarray(p, float)) ** 2)))

    low, high = bootstrap_interval(metric, truth, prediction, needs_both_classes=both)
    return {f"{name}_low": low, f"{name}_high": high} if np.isfinite([low, high]).all() else {}


def prefixed(metrics: dict[str, float], prefix: str) -> dict[str, float]:
    """``{"auroc": x}`` -> ``{prefix + "auroc": x}``."""
    return {f"{prefix}{k}": v for k, v in metrics.items()}
