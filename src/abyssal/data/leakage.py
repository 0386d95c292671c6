"""A guard against target leakage: features that alone give the training labels away.

A column that separates the training labels almost perfectly on its own (the label copied under
another name, an outcome recorded after the fact, an id that encodes the class) makes every model
look perfect and fails in production. :func:`check_leakage` measures each feature's single-feature
AUROC on the training rows (the rank statistic of Mann and Whitney, 1947; either direction counts,
so an AUROC of 0.005 is as leaky as 0.995) and stops with a :class:`DataError` naming every
feature above the threshold, unless the user allowed it by name or turned the check off.

- Numeric features: rows where the value is missing (NaN) are left out (NaN-safe); ties share
  their average rank.
- Categorical features (text, object arrays): each row scores its category's share of positives
  on the training rows (missing is a category of its own). This is judged only when there are at
  least :data:`MIN_ROWS_PER_CATEGORY` rows per category on average, so that an id-like column is
  not flagged for being unique per row.
- A feature is judged only when at least :data:`MIN_PER_CLASS` rows of each class have a value:
  with fewer, a perfect split happens by chance too often to mean anything.

Example:
    >>> labels = np.array([0, 1] * 10)
    >>> features = {"copy": labels * 1.0, "noise": np.arange(20.0) % 3}
    >>> [(f.name, round(f.auroc, 3)) for f in leaky_features(features, labels)]
    [('copy', 1.0)]
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from abyssal.core.config import field
from abyssal.core.errors import ConfigError, DataError

DEFAULT_THRESHOLD = 0.99
"""Single-feature AUROC (either direction) above which a feature counts as leaky."""
MIN_PER_CLASS = 10
"""Rows of each class (with a value) a feature needs to be judged."""
MIN_ROWS_PER_CATEGORY = 10
"""Average rows per category a categorical feature needs to be judged."""


@dataclass
class LeakageOptions:
    """The leakage guard's settings, shared by the data configs of every solution (a base class:
    its keys sit in the solution's ``data`` section)."""

    leakage_check: bool = field(
        True,
        help="refuse to train when a feature alone separates the training labels "
        "(single-feature AUROC above data.leakage_threshold); false: no check",
    )
    allow_leaky_features: list[str] = field(
        default_factory=list, help="features the leakage check lets through, by name"
    )
    leakage_threshold: float = field(
        0.99, help="single-feature AUROC (either direction) above which a feature is leaky"
    )

    def __post_init__(self) -> None:
        if not 0.5 < self.leakage_threshold <= 1.0:
            raise ConfigError(
                f"data.leakage_threshold must be in (0.5, 1], got {self.leakage_threshold}"
            )


@dataclass(frozen=True)
class LeakyFeature:
    """A feature that alone separates the training labels.

    Attributes:
        name: the feature (column) name.
        auroc: its single-feature AUROC on the training rows, in [0, 1]; below 0.5 means that
            lower values go with the positive class.
    """

    name: str
    auroc: float

    @property
    def separation(self) -> float:
        """``max(auroc, 1 - auroc)``: how well it separates, whichever the direction."""
        return max(self.auroc, 1.0 - self.auroc)


def single_feature_auroc(values: np.ndarray, labels: np.ndarray) -> float:
    """AUROC of one feature used as the score for 0/1 labels, or NaN when it cannot be judged.

    Args:
        values: (n,) numbers (NaN = missing) or text / objects (categories; ``None`` = missing).
        labels: (n,) 0/1 labels of the same rows.

    Returns:
        The AUROC in [0, 1]; NaN with fewer than :data:`MIN_PER_CLASS` rows of either class
        having a value, or a categorical feature with too few rows per category.

    Example:
        >>> single_feature_auroc(np.arange(20.0), np.repeat([0, 1], 10))
        1.0
    """
    labels = np.asarray(labels).astype(np.int64)
    values = np.asarray(values)
    if values.dtype.kind in "biuf":
        scores = values.astype(np.float64)
        present = ~np.isnan(scores)
        return _auroc(scores[present], labels[present])
    return _categorical_auroc(values, labels)


def _categorical_auroc(values: np.ndarray, labels: np.ndarray) -> float:
    categories = pd.Series(values, dtype=object).fillna("\x00missing").astype(str)
    if len(categories) < MIN_ROWS_PER_CATEGORY * categories.nunique():
        return float("nan")
    positive_share = pd.Series(labels).groupby(categories.to_numpy()).transform("mean")
    return _auroc(positive_share.to_numpy(dtype=np.float64), labels)


def _auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    positives = int(labels.sum())
    if min(positives, len(labels) - positives) < MIN_PER_CLASS:
        return float("nan")
    return rank_auroc(scores, labels)


def rank_auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """AUROC of ``scores`` for 0/1 ``labels`` from average ranks (Mann-Whitney U; a tie counts
    half); NaN without both classes.

    Example:
        >>> rank_auroc(np.array([0.1, 0.6, 0.4, 0.9]), np.array([0, 0, 1, 1]))
        0.75
    """
    labels = np.asarray(labels).astype(np.int64)
    positives = int(labels.sum())
    negatives = len(labels) - positives
    if positives == 0 or negatives == 0:
        return float("nan")
    ranks = pd.Series(np.asarray(scores, dtype=np.float64)).rank(method="average").to_numpy()
    rank_sum = float(ranks[labels == 1].sum())
    return float((rank_sum - positives * (positives + 1) / 2) / (positives * negatives))


def leaky_features(
    features: Mapping[str, np.ndarray],
    labels: np.ndarray,
    threshold: float = DEFAULT_THRESHOLD,
) -> list[LeakyFeature]:
    """Every feature whose single-feature AUROC (either direction) is above ``threshold``.

    Args:
        features: name -> (n,) values on the training rows (numbers or categories).
        labels: (n,) 0/1 training labels.
        threshold: in (0.5, 1].

    Returns:
        The leaky features, most separating first.

    Example:
        >>> y = np.repeat([0, 1], 10)
        >>> leaky_features({"flipped": 1.0 - y}, y)
        [LeakyFeature(name='flipped', auroc=0.0)]
    """
    found = []
    for name, values in features.items():
        auroc = single_feature_auroc(values, labels)
        if not np.isnan(auroc) and max(auroc, 1.0 - auroc) > threshold:
            found.append(LeakyFeature(str(name), float(auroc)))
    return sorted(found, key=lambda f: -f.separation)


def check_leakage(
    features: Mapping[str, np.ndarray],
    labels: np.ndarray,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    allowed: Iterable[str] = (),
    where: str | None = None,
    settings: str = "data.allow_leaky_features",
    switch: str = "data.leakage_check=false",
) -> list[LeakyFeature]:
    """Stop training when a feature alone separates the training labels, unless allowed.

    Args:
        features: name -> (n,) values on the **training rows only**.
        labels: (n,) 0/1 training labels.
        threshold: single-feature AUROC (either direction) above which a feature is leaky.
        allowed: names the user allowed explicitly; they are returned, not refused.
        where: the data's name (a file), for the message.
        settings: the config key that allows features by name, for the message.
        switch: the override that turns the check off, for the message.

    Returns:
        The leaky features that were allowed (empty when there were none).

    Raises:
        DataError: names each refused feature and its AUROC, and how to allow it.

    Example:
        >>> y = np.repeat([0, 1], 10)
        >>> check_leakage({"is_fraud_copy": y * 1.0}, y, allowed=["is_fraud_copy"])
        [LeakyFeature(name='is_fraud_copy', auroc=1.0)]
    """
    allowed = set(allowed)
    found = leaky_features(features, labels, threshold)
    refused = [f for f in found if f.name not in allowed]
    if refused:
        listed = ", ".join(f"'{f.name}' (AUROC {f.auroc:.3f})" for f in refused)
        names = ", ".join(f.name for f in refused)
        raise DataError(
            f"leaky feature: {listed} alone separates the training labels (single-feature AUROC "
            f"above {threshold} or below {1 - threshold:.2g}); it is probably the label under "
            f"another name or known only after the fact. Drop it, or allow it explicitly with "
            f"{settings}=[{names}] (or {switch})",
            path=where,
        )
    return found


__all__ = [
    "DEFAULT_THRESHOLD",
    "LeakyFeature",
    "check_leakage",
    "leaky_features",
    "single_feature_auroc",
]
