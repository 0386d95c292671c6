"""Training subsets for the few-shot and imbalanced variants of the defect solution.

Both draw from the training rows only (validation and test stay whole) and are seeded, so a run
names its subset by ``(k, seed)`` or ``(minority, ratio, seed)``.

Example:
    >>> labels = np.array([0, 0, 0, 1, 1, 1])
    >>> few_shot_rows(labels, np.arange(6), k=1, seed=0).shape
    (2,)
"""

from __future__ import annotations

import numpy as np

from abyssal.core.errors import DataError


def few_shot_rows(labels: np.ndarray, rows: np.ndarray, k: int, seed: int) -> np.ndarray:
    """``k`` rows of every class, drawn at random from ``rows``.

    Each class's rows (in ascending order) are permuted by one generator seeded with ``seed``,
    classes in ascending order, and the first ``k`` of each permutation are taken. The
    permutation does not depend on ``k``, so draws are nested: with the same seed, the k=5
    draw holds the k=1 draw, and adding shots only adds images.

    Args:
        labels: (N,) class indices of all rows.
        rows: the rows to draw from (e.g. the training split), indices into ``labels``.
        k: rows per class.
        seed: seed of the draw.

    Returns:
        The drawn rows, ascending (int64, ``k`` per class).

    Raises:
        DataError: a class (of ``labels``) has fewer than ``k`` rows in ``rows``.
        ValueError: ``k`` is below 1.

    Example:
        >>> labels = np.array([0] * 10 + [1] * 10)
        >>> one, five = (few_shot_rows(labels, np.arange(20), k, seed=3) for k in (1, 5))
        >>> set(one) <= set(five), len(five)
        (True, 10)
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    rng = np.random.default_rng(seed)
    rows = np.sort(np.asarray(rows, dtype=np.int64))
    drawn = []
    for c in np.unique(labels):
        members = rows[labels[rows] == c]
        if len(members) < k:
            raise DataError(
                f"class {int(c)} has {len(members)} training images; a {k}-shot draw needs {k} "
                "per class (lower data.shots, or add images of that class)"
            )
        drawn.append(rng.permutation(members)[:k])
    return np.sort(np.concatenate(drawn))


def imbalanced_rows(
    labels: np.ndarray, rows: np.ndarray, *, minority: int, ratio: float, seed: int
) -> np.ndarray:
    """``rows`` with class ``minority`` cut down to ``ratio`` of the other classes' mean count.

    Every row of the other classes is kept; ``max(1, round(ratio * mean))`` rows of the
    minority class are drawn at random (all of them if it has fewer), where ``mean`` is the
    mean number of rows per other class in ``rows``.

    Args:
        labels: (N,) class indices of all rows.
        rows: the rows to cut (e.g. the training split), indices into ``labels``.
        minority: the class index to make rare.
        ratio: the minority's size relative to the others' mean, in (0, 1].
        seed: seed of the draw.

    Returns:
        The kept rows, ascending (int64).

    Raises:
        ValueError: ``ratio`` is not in (0, 1].
        DataError: ``rows`` hold no row of the minority class, or no row of any other class.

    Example:
        >>> labels = np.array([0] * 20 + [1] * 20 + [2] * 20)
        >>> kept = imbalanced_rows(labels, np.arange(60), minority=1, ratio=0.1, seed=0)
        >>> np.bincount(labels[kept]).tolist()
        [20, 2, 20]
    """
    if not 0 < ratio <= 1:
        raise ValueError(f"ratio must be in (0, 1], got {ratio}")
    rows = np.sort(np.asarray(rows, dtype=np.int64))
    mine = labels[rows] == minority
    if not mine.any():
        raise DataError(f"class {minority} has no training images to make rare")
    others = rows[~mine]
    n_other_classes = len(np.unique(labels[others]))
    if n_other_classes == 0:
        raise DataError(f"class {minority} is the only class; imbalance needs others")
    n_keep = max(1, round(ratio * len(others) / n_other_classes))
    kept = np.random.default_rng(seed).permutation(rows[mine])[:n_keep]
    return np.sort(np.concatenate([others, kept]))
