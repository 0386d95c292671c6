"""Bootstrap confidence intervals and paired significance tests over shared resamples.

Every model of a task is scored on the same items, so one set of resamples serves them all: each
metric's interval is the percentile interval over the resamples (Efron and Tibshirani, "An
Introduction to the Bootstrap", 1993, ch. 13), and the difference of two models on the same
resamples gives the paired test. When items come in groups (a patient's several nodules, a
customer's several transactions), whole groups are resampled (the cluster bootstrap, Davison and
Hinkley, "Bootstrap Methods and their Application", 1997, sec. 3.8), so correlated items do not
narrow the interval.

The paired test's p-value is the share of resampled differences at least as far from the
observed difference as the observed difference is from zero (the bootstrap distribution shifted
to the null, Efron and Tibshirani sec. 16.4), with the usual +1 so it is never 0; p-values of a
task's comparisons are adjusted by Holm's step-down method (Holm, 1979).

Example:
    >>> import numpy as np
    >>> rs = Resamples.draw(6, resamples=100, seed=0)
    >>> rs.rows.shape
    (100, 6)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from abyssal.core.errors import ConfigError


@dataclass(frozen=True)
class Resamples:
    """``rows[b]`` are the item rows of resample ``b`` (with replacement; all the same length
    only without groups)."""

    rows: list[np.ndarray] | np.ndarray

    @staticmethod
    def draw(
        n: int, *, resamples: int = 1000, seed: int = 0, groups: Sequence[object] | None = None
    ) -> Resamples:
        """``resamples`` draws of ``n`` items, or of as many groups as there are with all their
        items when ``groups`` (one key per item) is given."""
        if resamples < 1:
            raise ConfigError(f"resamples must be at least 1, not {resamples}")
        rng = np.random.default_rng(seed)
        if groups is None:
            return Resamples(rng.integers(0, n, size=(resamples, n)))
        if len(groups) != n:
            raise ConfigError(f"{len(groups)} group keys for {n} items")
        _, inverse = np.unique(np.asarray([str(g) for g in groups]), return_inverse=True)
        members = [np.flatnonzero(inverse == g) for g in range(int(inverse.max()) + 1)]
        draws = rng.integers(0, len(members), size=(resamples, len(members)))
        return Resamples([np.concatenate([members[g] for g in d]) for d in draws])

    def __len__(self) -> int:
        return len(self.rows)


@dataclass(frozen=True)
class Estimate:
    """A metric's value on all items and its percentile interval."""

    value: float
    low: float
    high: float
    samples: np.ndarray  # (resamples,) the metric on each resample; NaN where undefined

    def as_dict(self) -> dict[str, float | None]:
        return {"value": _clean(self.value), "low": _clean(self.low), "high": _clean(self.high)}


@dataclass(frozen=True)
class Comparison:
    """``a - b`` on the same resamples, its interval and the two-sided bootstrap p-value."""

    difference: float
    low: float
    high: float
    p_value: float
    p_adjusted: float | None = None

    def as_dict(self) -> dict[str, float | None]:
        return {
            "difference": _clean(self.difference),
            "low": _clean(self.low),
            "high": _clean(self.high),
            "p_value": _clean(self.p_value),
            "p_adjusted": _clean(self.p_adjusted),
        }


def _clean(value: float | None) -> float | None:
    return None if value is None or not np.isfinite(value) else float(value)


def _interval(samples: np.ndarray, confidence: float) -> tuple[float, float]:
    finite = samples[np.isfinite(samples)]
    if finite.size == 0:
        return float("nan"), float("nan")
    tail = (1.0 - confidence) / 2 * 100
    low, high = np.percentile(finite, [tail, 100 - tail])
    return float(low), float(high)


def estimate(
    fn: Callable[[np.ndarray], float],
    n: int,
    resamples: Resamples,
    *,
    confidence: float = 0.95,
) -> Estimate:
    """``fn(rows)`` on all ``n`` items and on every resample, with its percentile interval."""
    value = fn(np.arange(n))
    samples = np.array([fn(rows) for rows in resamples.rows], dtype=np.float64)
    low, high = _interval(samples, confidence)
    return Estimate(value, low, high, samples)


def compare(a: Estimate, b: Estimate, *, confidence: float = 0.95) -> Comparison:
    """The paired comparison of two estimates made on the same resamples."""
    if a.samples.shape != b.samples.shape:
        raise ConfigError("paired comparison of estimates made on different resamples")
    observed = a.value - b.value
    diffs = a.samples - b.samples
    diffs = diffs[np.isfinite(diffs)]
    if not np.isfinite(observed) or diffs.size == 0:
        nan = float("nan")
        return Comparison(observed, nan, nan, nan)
    low, high = _interval(diffs, confidence)
    extreme = np.abs(diffs - observed) >= abs(observed)
    p_value = (1 + int(extreme.sum())) / (1 + diffs.size)
    return Comparison(float(observed), low, high, float(min(1.0, p_value)))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment of a family of p-values (NaN stays NaN).

    Example:
        >>> [round(p, 3) for p in holm([0.01, 0.04, 0.03])]
        [0.03, 0.06, 0.06]
    """
    p = np.asarray(p_values, dtype=np.float64)
    out = np.full_like(p, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    m = ok.size
    running = 0.0
    for k, i in enumerate(ok[np.argsort(p[ok], kind="mergesort")]):
        running = max(running, min(1.0, (m - k) * p[i]))
        out[i] = running
    return out.tolist()
