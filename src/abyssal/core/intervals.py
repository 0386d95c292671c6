"""Bootstrap confidence intervals of a metric over the rows of one evaluation split.

A test split with a handful of positives gives a metric that looks as solid as any; the interval
says how much it would move with another draw of the same size (percentile bootstrap: Efron and
Tibshirani, "An Introduction to the Bootstrap", 1993).

Example:
    >>> import numpy as np
    >>> y, s = np.array([0, 0, 1, 1, 0, 1]), np.array([0.1, 0.4, 0.35, 0.8, 0.2, 0.9])
    >>> low, high = bootstrap_interval(lambda a, b: float(np.mean(a == (b > 0.5))), y, s)
    >>> 0.0 <= low <= high <= 1.0
    True
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

RESAMPLES = 200
"""Resamples per interval: enough for a 95% percentile interval to two decimals."""


def bootstrap_interval(
    metric: Callable[[np.ndarray, np.ndarray], float],
    truth: np.ndarray,
    prediction: np.ndarray,
    *,
    resamples: int = RESAMPLES,
    level: float = 0.95,
    seed: int = 0,
    needs_both_classes: bool = False,
) -> tuple[float, float]:
    """The ``level`` percentile-bootstrap interval of ``metric(truth, prediction)``.

    Args:
        metric: maps (truth, prediction) rows to a number.
        truth: (N, ...) labels or targets.
        prediction: (N, ...) scores, probabilities or predictions, row-aligned with ``truth``.
        resamples: how many resamples of N rows with replacement.
        level: the interval's coverage, in (0, 1).
        seed: the resampling seed (the interval is reproducible).
        needs_both_classes: skip resamples whose ``truth`` holds one value (AUROC, AUPRC).

    Returns:
        ``(low, high)``; ``(nan, nan)`` when there are no rows or no usable resample.
    """
    truth, prediction = np.asarray(truth), np.asarray(prediction)
    n = len(truth)
    if n == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(resamples):
        rows = rng.integers(0, n, n)
        if needs_both_classes and np.unique(truth[rows]).size < 2:
            continue
        values.append(metric(truth[rows], prediction[rows]))
    if not values:
        return float("nan"), float("nan")
    tail = (1.0 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)
