"""Tabular metrics against scikit-learn's on fixed arrays."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn import metrics as skm

from abyssal.solutions.tabular.metrics import (
    auroc,
    classification_metrics,
    prefixed,
    regression_metrics,
)

LABELS = np.array([0, 1, 1, 0, 1, 0, 0, 1])
P1 = np.array([0.1, 0.8, 0.35, 0.4, 0.9, 0.2, 0.6, 0.7])
BINARY = np.stack([1 - P1, P1], axis=1)
MULTI_LABELS = np.array([0, 1, 2, 2, 1, 0, 2, 1])
MULTI = np.array(
    [
        [0.7, 0.2, 0.1],
        [0.2, 0.5, 0.3],
        [0.1, 0.3, 0.6],
        [0.3, 0.3, 0.4],
        [0.4, 0.4, 0.2],
        [0.5, 0.1, 0.4],
        [0.2, 0.2, 0.6],
        [0.1, 0.8, 0.1],
    ]
)


def test_binary_metrics_match_scikit_learn() -> None:
    m = classification_metrics(LABELS, BINARY)
    predicted = (P1 >= 0.5).astype(int)
    assert m["auroc"] == pytest.approx(skm.roc_auc_score(LABELS, P1))
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(LABELS, predicted))
    assert m["macro_f1"] == pytest.approx(skm.f1_score(LABELS, predicted, average="macro"))
    assert m["log_loss"] == pytest.approx(skm.log_loss(LABELS, BINARY))
    assert (m["rows"], m["positives"]) == (8, 4)


def test_multiclass_metrics_match_scikit_learn() -> None:
    m = classification_metrics(MULTI_LABELS, MULTI)
    expected = skm.roc_auc_score(MULTI_LABELS, MULTI, multi_class="ovr", average="macro")
    assert m["auroc"] == pytest.approx(expected)
    assert m["macro_f1"] == pytest.approx(
        skm.f1_score(MULTI_LABELS, MULTI.argmax(1), average="macro")
    )
    assert m["log_loss"] == pytest.approx(skm.log_loss(MULTI_LABELS, MULTI))
    assert "positives" not in m


def test_auroc_is_nan_with_one_class_and_skips_absent_classes() -> None:
    assert math.isnan(auroc(np.zeros(4, dtype=int), BINARY[:4]))
    present = MULTI_LABELS != 2  # class 2 absent: the mean of the classes that can be ranked
    labels, probs = MULTI_LABELS[present], MULTI[present]
    expected = np.mean([skm.roc_auc_score(labels == c, probs[:, c]) for c in (0, 1)])
    assert auroc(labels, probs) == pytest.approx(expected)


def test_regression_metrics_match_scikit_learn() -> None:
    target = np.array([3.0, -0.5, 2.0, 7.0, 4.2])
    prediction = np.array([2.5, 0.0, 2.0, 8.0, 3.9])
    m = regression_metrics(target, prediction)
    assert m["rmse"] == pytest.approx(math.sqrt(skm.mean_squared_error(target, prediction)))
    assert m["mae"] == pytest.approx(skm.mean_absolute_error(target, prediction))
    assert m["r2"] == pytest.approx(skm.r2_score(target, prediction))
    assert m["rows"] == 5


def test_prefixed_names_metrics() -> None:
    assert prefixed({"auroc": 0.5}, "gbdt_test_") == {"gbdt_test_auroc": 0.5}
