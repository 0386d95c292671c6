"""Random train/validation/test splits, stratified by class when labels are given.

Every solution splits its items (table rows, images) the same way: each class gives
``round(size * frac)`` of its items to validation and to test and keeps at least one for training,
so a seed names the same split whatever solution asks for it.

Example:
    >>> labels = np.array([0] * 8 + [1] * 4)
    >>> splits = stratified_split(12, labels, val_frac=0.25, test_frac=0.25, seed=0, where="t")
    >>> [len(splits[s]) for s in SPLITS]
    [6, 3, 3]
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from abyssal.core.errors import DataError

SPLITS = ("train", "val", "test")
"""The split names, in the order they are reported."""


def stratified_split(
    n: int,
    labels: np.ndarray | None,
    *,
    val_frac: float,
    test_frac: float,
    seed: int,
    where: str,
    unit: str = "rows",
) -> dict[str, np.ndarray]:
    """Random train/validation/test items; stratified by class when ``labels`` are given.

    Each class (or, without labels, the whole set) gives ``round(size * frac)`` of its items to
    validation and to test, and keeps at least one for training. Classes are visited in
    ascending order and one generator seeded with ``seed`` permutes each in turn, so the same
    ``n``, labels, fractions and seed always give the same split.

    Args:
        n: number of items.
        labels: (n,) class indices, or ``None`` (no classes, e.g. regression).
        val_frac: share of each class for validation.
        test_frac: share of each class for testing; 0 asks for no test split (it is empty, for
            data whose test set comes from elsewhere).
        seed: seed of the random permutation.
        where: the data's name (file or folder), for messages.
        unit: what the items are called in messages (``rows``, ``images``).

    Returns:
        Ascending int64 item indices per split (``train``, ``val``, ``test``).

    Raises:
        DataError: a split would be empty (the test split only when ``test_frac`` > 0).

    Example:
        >>> s = stratified_split(10, None, val_frac=0.2, test_frac=0.2, seed=1, where="t")
        >>> sorted(np.concatenate(list(s.values())).tolist()) == list(range(10))
        True
    """
    rng = np.random.default_rng(seed)
    groups = [np.arange(n)]
    if labels is not None:
        groups = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    parts: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    for group in groups:
        for split, rows in _cut(rng.permutation(group), val_frac, test_frac).items():
            parts[split].append(rows)
    splits = {s: np.sort(np.concatenate(p)).astype(np.int64) for s, p in parts.items()}
    _check_split(splits, where, unit, test=test_frac > 0)
    return splits


def _cut(rows: np.ndarray, val_frac: float, test_frac: float) -> dict[str, np.ndarray]:
    """Cut one (already permuted) group: validation takes the first ``round(n * val_frac)``,
    test the next ``round(n * test_frac)``; the larger gives one back until one is left to train.
    """
    n = len(rows)
    n_val, n_test = round(n * val_frac), round(n * test_frac)
    while n - n_val - n_test < 1:  # keep one training item per class
        if n_val >= n_test:
            n_val -= 1
        else:
            n_test -= 1
    return {
        "val": rows[:n_val],
        "test": rows[n_val : n_val + n_test],
        "train": rows[n_val + n_test :],
    }


def _check_split(
    splits: dict[str, np.ndarray], where: str, unit: str = "rows", *, test: bool = True
) -> None:
    """Refuse a split with an empty part (the message names the data and each split's size);
    ``test=False``: the test split may be empty."""
    sizes = {s: len(r) for s, r in splits.items()}
    if min(n for s, n in sizes.items() if test or s != "test") < 1:
        raise DataError(
            f"too few {unit} for the split: {sum(sizes.values())} {unit} give {sizes['train']} "
            f"training, {sizes['val']} validation and {sizes['test']} test {unit}; each split "
            f"needs at least one (add {unit}, or change data.val_frac / data.test_frac)",
            path=where,
        )


def split_names(n: int, splits: Mapping[str, np.ndarray]) -> np.ndarray:
    """(n,) object array: each item's split name (``unused`` for items in none).

    Example:
        >>> split_names(3, {"train": np.array([0]), "val": np.array([2]), "test": np.array([])})
        array(['train', 'unused', 'val'], dtype=object)
    """
    where = np.full(n, "unused", dtype=object)
    for name in SPLITS:
        where[np.asarray(splits.get(name, []), dtype=np.int64)] = name
    return where


def split_file(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> dict[str, str]:
    """``{"split.csv": text}``: the header and rows as CSV, the run file every solution writes
    with its data's split."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return {"split.csv": out.getvalue()}


def sample_rows(n: int, limit: int, seed: int = 0) -> np.ndarray:
    """At most ``limit`` of the row indices ``0..n-1``, drawn without replacement (seeded) and
    returned in order; all of them when ``n <= limit``.

    Example:
        >>> sample_rows(5, 10).tolist()
        [0, 1, 2, 3, 4]
        >>> len(sample_rows(100, 10))
        10
    """
    if n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False))
