"""Gradient-boosted trees on the same features and splits as the network, in the same run.

scikit-learn's histogram gradient boosting (``HistGradientBoostingClassifier`` /
``HistGradientBoostingRegressor``, after LightGBM: Ke et al., NeurIPS 2017) takes the numeric
columns as read (missing values handled natively, no imputation) and the categorical columns as
the network's category codes with native categorical splits (code 0, missing or rare, is given as
missing). The trees grow on the training rows; the number of boosting rounds is the one with the
lowest validation loss (log-loss, or squared error), the same way the network keeps its best
epoch. Metrics are prefixed ``gbdt_``.

Example:
    >>> metrics = gbdt_metrics(data, seed=0)  # doctest: +SKIP
    >>> metrics["gbdt_test_auroc"]  # doctest: +SKIP
    0.99
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from abyssal.core.optional import require
from abyssal.solutions.tabular.data import TabularData
from abyssal.solutions.tabular.metrics import (
    classification_metrics,
    prefixed,
    regression_metrics,
    test_interval,
)

MAX_ROUNDS = 300
LEARNING_RATE = 0.05


def tree_features(data: TabularData) -> tuple[np.ndarray, np.ndarray]:
    """The trees' inputs: numeric columns as read, then category codes (NaN = missing or rare).

    Returns:
        ``(features (N, Fn + Fc) float64, categorical (Fn + Fc,) bool mask)``.
    """
    codes = data.encoded["categorical"].astype(np.float64) - 1.0  # code 0 -> -1 -> missing
    codes[codes < 0] = np.nan
    features = np.concatenate([data.numeric, codes], axis=1)
    mask = np.array([False] * data.numeric.shape[1] + [True] * codes.shape[1])
    return features, mask


def gbdt_metrics(data: TabularData, seed: int = 0) -> dict[str, float]:
    """Validation and test metrics of boosted trees fitted on the training rows.

    Args:
        data: the prepared table.
        seed: the trees' random state.

    Returns:
        ``gbdt_val_*`` and ``gbdt_test_*`` metrics and ``gbdt_rounds`` (rounds kept).
    """
    features, mask = tree_features(data)
    x = {s: features[data.rows(s)] for s in ("train", "val", "test")}
    y = {s: data.target[data.rows(s)] for s in ("train", "val", "test")}
    model = _booster(data.schema.task, mask, seed)
    model.fit(x["train"], y["train"])
    if data.schema.task == "classification":
        stages, loss = model.staged_predict_proba, _log_loss
        score = classification_metrics
    else:
        stages, loss = model.staged_predict, _squared_error
        score = regression_metrics
    best = int(np.argmin([loss(y["val"], p) for p in stages(x["val"])]))
    out = {"gbdt_rounds": best + 1}
    for split in ("val", "test"):
        predicted = _nth(stages(x[split]), best)
        out.update(prefixed(score(y[split], predicted), f"gbdt_{split}_"))
    out.update(prefixed(test_interval(y["test"], predicted, data.schema.task), "gbdt_test_"))
    return out


def _booster(task: str, mask: np.ndarray, seed: int) -> Any:
    ensemble = require("sklearn.ensemble", extra="tabular", purpose="the boosted-tree baseline")
    cls = (
        ensemble.HistGradientBoostingClassifier
        if task == "classification"
        else ensemble.HistGradientBoostingRegressor
    )
    return cls(
        max_iter=MAX_ROUNDS,
        learning_rate=LEARNING_RATE,
        early_stopping=False,
        categorical_features=mask if mask.any() else None,
        random_state=seed,
    )


def _nth(stages: Iterable[np.ndarray], n: int) -> np.ndarray:
    for i, prediction in enumerate(stages):
        if i == n:
            return prediction
    raise IndexError(n)


def _log_loss(labels: np.ndarray, probabilities: np.ndarray) -> float:
    picked = probabilities[np.arange(len(labels)), labels]
    return float(-np.mean(np.log(np.clip(picked, 1e-15, 1.0))))


def _squared_error(target: np.ndarray, prediction: np.ndarray) -> float:
    return float(np.mean((target - prediction) ** 2))
