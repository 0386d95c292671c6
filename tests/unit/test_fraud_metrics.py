"""Detection metrics on small label/score vectors with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from abyssal.solutions.fraud.metrics import (
    best_threshold,
    macro_f1,
    ranking_metrics,
    recall_at_k,
    split_metrics,
)

Y = np.array([1, 0, 1, 0])
S = np.array([0.9, 0.8, 0.1, 0.0])


@pytest.mark.parametrize(("k", "expected"), [(None, 0.5), (1, 0.5), (2, 0.5), (3, 1.0), (4, 1.0)])
def test_recall_at_k(k, expected):
    assert recall_at_k(Y, S, k) == expected


def test_recall_at_k_without_positives_or_k_is_nan():
    assert math.isnan(recall_at_k(np.zeros(3, dtype=int), np.array([0.1, 0.2, 0.3])))
    assert math.isnan(recall_at_k(Y, S, 0))


def test_ranking_metrics_known_values():
    out = ranking_metrics(Y, S)
    # pairs (pos, neg): (0.9, 0.8) ok, (0.9, 0.0) ok, (0.1, 0.8) wrong, (0.1, 0.0) ok
    assert out["auroc"] == pytest.approx(0.75)
    # precision 1 at the first positive, 2/3 at the second
    assert out["auprc"] == pytest.approx((1.0 + 2 / 3) / 2)
    assert out["recall_at_k"] == 0.5


def test_ranking_metrics_single_class_is_nan():
    out = ranking_metrics(np.ones(3, dtype=int), np.array([0.1, 0.5, 0.9]))
    assert sorted(out) == ["auprc", "auroc", "recall_at_k"]
    assert all(math.isnan(v) for v in out.values())


def test_macro_f1_known_value():
    y = np.array([1, 1, 1, 0])
    score = np.array([0.9, 0.8, 0.1, 0.2])
    # prediction [1, 1, 0, 0]: F1 of class 1 = 0.8, of class 0 = 2/3
    assert macro_f1(y, score, 0.5) == pytest.approx((0.8 + 2 / 3) / 2)
    assert macro_f1(y, score, 0.1) == pytest.approx((6 / 7 + 0.0) / 2)  # all predicted 1


def test_best_threshold_separates_separable_data():
    y = np.array([0] * 8 + [1] * 2)
    score = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95])
    t = best_threshold(y, score)
    assert 0.8 < t <= 0.9
    assert macro_f1(y, score, t) == 1.0


def test_best_threshold_separates_when_positives_are_the_majority():
    y = np.array([0] * 3 + [1] * 7)
    score = np.linspace(0.05, 0.95, 10)
    assert macro_f1(y, score, best_threshold(y, score)) == 1.0


def test_best_threshold_of_constant_scores():
    assert best_threshold(np.array([0, 1]), np.array([0.3, 0.3])) == pytest.approx(0.3)


def masks_of(n: int, val: list[int], test: list[int]) -> dict[str, np.ndarray]:
    masks = {k: np.zeros(n, dtype=bool) for k in ("train", "val", "test")}
    masks["val"][val] = True
    masks["test"][test] = True
    return masks


def test_split_metrics_keys_and_val_fitted_threshold():
    y = np.array([0, 0, 0, 1, 0, 0, 0, 1, 0, 1])
    score = np.array([0.1, 0.2, 0.3, 0.9, 0.4, 0.5, 0.6, 0.55, 0.7, 0.95])
    masks = masks_of(10, val=[0, 1, 2, 3], test=[4, 5, 6, 7, 8, 9])
    out = split_metrics(y, score, masks, prefix="p_")
    splits = [f"p_{s}_{m}" for s in ("val", "test") for m in ("auroc", "auprc", "recall_at_k")]
    intervals = {"p_test_auprc_low", "p_test_auprc_high"}
    assert set(out) == {*splits, "p_val_macro_f1", "p_test_macro_f1", "p_threshold", *intervals}
    assert out["p_test_auprc_low"] <= out["p_test_auprc"] <= out["p_test_auprc_high"]
    assert out["p_test_auprc_high"] - out["p_test_auprc_low"] > 0.2  # 2 positives: very wide
    assert out["p_threshold"] == best_threshold(y[:4], score[:4])
    assert 0.3 < out["p_threshold"] <= 0.9  # separates val, so val is perfect
    assert out["p_val_auroc"] == 1.0 and out["p_val_macro_f1"] == 1.0
    test = masks["test"]
    assert out["p_test_macro_f1"] == macro_f1(y[test], score[test], out["p_threshold"])
    # the val threshold (just above 0.3) calls every test account fraud: F1 0.5 and 0.0
    assert out["p_test_macro_f1"] == pytest.approx(0.25)
    assert out["p_test_macro_f1"] < macro_f1(
        y[test], score[test], best_threshold(y[test], score[test])
    )
    assert out["p_test_auroc"] == pytest.approx(6 / 8)  # 0.55 ranks under 0.6 and 0.7
