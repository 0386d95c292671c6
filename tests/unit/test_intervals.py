"""Bootstrap intervals: they cover the metric, shrink with more rows, repeat with a seed."""

from __future__ import annotations

import math

import numpy as np

from abyssal.core.intervals import bootstrap_interval


def _accuracy(truth: np.ndarray, prediction: np.ndarray) -> float:
    return float(np.mean(truth == prediction))


def test_interval_covers_the_metric_and_narrows_with_more_rows() -> None:
    rng = np.random.default_rng(1)
    widths = []
    for n in (40, 4000):
        truth = rng.integers(0, 2, n)
        prediction = np.where(rng.random(n) < 0.8, truth, 1 - truth)  # about 80% right
        low, high = bootstrap_interval(_accuracy, truth, prediction)
        assert low <= _accuracy(truth, prediction) <= high
        widths.append(high - low)
    assert widths[1] < widths[0] / 4  # about 1/sqrt(100) as wide


def test_interval_is_reproducible_and_skips_one_class_resamples() -> None:
    truth, prediction = np.array([0, 0, 0, 1]), np.array([0.1, 0.2, 0.3, 0.9])
    first = bootstrap_interval(_accuracy, truth, prediction, seed=3)
    assert first == bootstrap_interval(_accuracy, truth, prediction, seed=3)
    seen: list[int] = []

    def classes(t: np.ndarray, p: np.ndarray) -> float:
        seen.append(np.unique(t).size)
        return 0.0

    bootstrap_interval(classes, truth, prediction, needs_both_classes=True)
    assert seen and min(seen) == 2
    assert all(math.isnan(v) for v in bootstrap_interval(_accuracy, truth[:0], prediction[:0]))
