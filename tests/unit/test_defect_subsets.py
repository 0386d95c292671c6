"""Few-shot and imbalanced training subsets: counts, nesting, seeds and errors."""

from __future__ import annotations

import numpy as np
import pytest

from abyssal.core.errors import DataError
from abyssal.solutions.defect.subsets import few_shot_rows, imbalanced_rows

LABELS = np.repeat(np.arange(3), 20)  # (60,) 20 rows of each of 3 classes
TRAIN = np.arange(0, 60, 2)[::-1]  # 10 rows per class, in no particular order


def test_few_shot_draws_k_per_class_from_the_given_rows() -> None:
    rows = few_shot_rows(LABELS, TRAIN, k=4, seed=1)
    assert np.bincount(LABELS[rows]).tolist() == [4, 4, 4]
    assert set(rows.tolist()) <= set(TRAIN.tolist())
    assert rows.tolist() == sorted(rows.tolist()) and rows.dtype == np.int64


def test_few_shot_draws_are_nested_and_seeded() -> None:
    for seed in range(5):
        draws = {k: set(few_shot_rows(LABELS, TRAIN, k, seed).tolist()) for k in (1, 2, 5, 10)}
        assert draws[1] <= draws[2] <= draws[5] <= draws[10]
        assert draws[10] == set(TRAIN.tolist())
    same = few_shot_rows(LABELS, TRAIN, 5, seed=7), few_shot_rows(LABELS, TRAIN[::-1], 5, seed=7)
    assert np.array_equal(*same)  # the order of the given rows does not matter
    others = {tuple(few_shot_rows(LABELS, TRAIN, 1, seed=s)) for s in range(10)}
    assert len(others) > 1  # the seed changes the draw


def test_few_shot_refuses_a_class_with_too_few_rows() -> None:
    rows = np.concatenate([np.arange(0, 10), np.arange(20, 23), np.arange(40, 50)])
    with pytest.raises(DataError, match="class 1 has 3 training images; a 4-shot draw needs 4"):
        few_shot_rows(LABELS, rows, k=4, seed=0)
    with pytest.raises(ValueError, match="k must be >= 1"):
        few_shot_rows(LABELS, rows, k=0, seed=0)


def test_imbalanced_keeps_the_others_and_cuts_the_minority() -> None:
    rows = imbalanced_rows(LABELS, TRAIN, minority=2, ratio=0.3, seed=0)
    assert np.bincount(LABELS[rows]).tolist() == [10, 10, 3]
    assert set(rows.tolist()) <= set(TRAIN.tolist()) and rows.tolist() == sorted(rows.tolist())
    tiny = imbalanced_rows(LABELS, TRAIN, minority=0, ratio=0.01, seed=0)
    assert np.bincount(LABELS[tiny]).tolist() == [1, 10, 10]  # at least one
    whole = imbalanced_rows(LABELS, TRAIN, minority=1, ratio=1.0, seed=0)
    assert np.array_equal(whole, np.sort(TRAIN))
    draws = {tuple(imbalanced_rows(LABELS, TRAIN, minority=2, ratio=0.3, seed=s)) for s in range(5)}
    assert len(draws) > 1


@pytest.mark.parametrize("ratio", [0.0, -0.5, 1.5])
def test_imbalanced_refuses_a_bad_ratio(ratio: float) -> None:
    with pytest.raises(ValueError, match=r"ratio must be in \(0, 1\]"):
        imbalanced_rows(LABELS, TRAIN, minority=0, ratio=ratio, seed=0)


def test_imbalanced_needs_the_minority_and_another_class() -> None:
    with pytest.raises(DataError, match="class 2 has no training images"):
        imbalanced_rows(LABELS, np.arange(40), minority=2, ratio=0.5, seed=0)
    with pytest.raises(DataError, match="only class"):
        imbalanced_rows(LABELS, np.arange(20), minority=0, ratio=0.5, seed=0)
