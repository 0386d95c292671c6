"""The leakage guard: single-feature AUROC, NaN-safety, categories, refusing and allowing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from abyssal.core.errors import DataError
from abyssal.data.leakage import (
    MIN_PER_CLASS,
    LeakyFeature,
    check_leakage,
    leaky_features,
    single_feature_auroc,
)
from abyssal.solutions.tabular.config import TabularDataConfig
from abyssal.solutions.tabular.data import prepare_tabular_data

Y = np.repeat([0, 1], 20)


def test_auroc_matches_scikit_learn_with_ties() -> None:
    rng = np.random.default_rng(0)
    values = rng.integers(0, 5, size=len(Y)).astype(float) + Y  # ties on purpose
    assert single_feature_auroc(values, Y) == pytest.approx(roc_auc_score(Y, values))


def test_auroc_skips_missing_values_and_small_classes() -> None:
    values = Y.astype(float)
    values[:5] = np.nan  # five negatives without a value: the rest still separate perfectly
    assert single_feature_auroc(values, Y) == 1.0
    few = np.r_[np.zeros(30), np.ones(MIN_PER_CLASS - 1)].astype(int)
    assert np.isnan(single_feature_auroc(few.astype(float), few))
    assert np.isnan(single_feature_auroc(np.full(len(Y), np.nan), Y))


def test_both_directions_are_leaky_and_noise_is_not() -> None:
    rng = np.random.default_rng(1)
    features = {"copy": Y * 1.0, "flipped": -Y * 2.0, "noise": rng.normal(size=len(Y))}
    found = leaky_features(features, Y)
    assert [f.name for f in found] == ["copy", "flipped"]
    assert found[1].auroc == 0.0 and found[1].separation == 1.0


def test_categorical_features_score_by_category() -> None:
    words = np.where(Y == 1, "yes", "no").astype(object)
    assert single_feature_auroc(words, Y) == 1.0
    ids = np.array([f"id{i}" for i in range(len(Y))], dtype=object)  # unique per row
    assert np.isnan(single_feature_auroc(ids, Y))  # too few rows per category to judge
    words[[0, 1]] = None  # missing is a category of its own
    assert single_feature_auroc(words, Y) == pytest.approx(1.0)


def test_check_refuses_naming_feature_and_auroc_unless_allowed() -> None:
    features = {"amount": np.arange(len(Y)) % 7 * 1.0, "is_fraud_copy": Y * 1.0}
    with pytest.raises(DataError) as info:
        check_leakage(features, Y, where="nodes.csv")
    message = str(info.value)
    assert message.startswith("nodes.csv: leaky feature: 'is_fraud_copy' (AUROC 1.000)")
    assert "data.allow_leaky_features=[is_fraud_copy]" in message and "amount" not in message
    allowed = check_leakage(features, Y, allowed=["is_fraud_copy"])
    assert allowed == [LeakyFeature("is_fraud_copy", 1.0)]
    assert check_leakage({"amount": features["amount"]}, Y) == []


def test_threshold_is_configurable() -> None:
    values = Y * 1.0
    values[0] = 1.0  # one negative scores like the positives: AUROC 0.975
    assert leaky_features({"x": values}, Y, threshold=0.99) == []
    assert [f.name for f in leaky_features({"x": values}, Y, threshold=0.95)] == ["x"]


def _leaky_table(tmp_path: Path) -> Path:
    rng = np.random.default_rng(2)
    n = 80
    y = rng.integers(0, 2, n)
    frame = pd.DataFrame({"x": rng.normal(size=n), "outcome": y * 3 + 1, "y": y})
    path = tmp_path / "t.csv"
    frame.to_csv(path, index=False)
    return path


def test_tabular_guard_stops_by_default_and_lets_allowed_features_through(tmp_path: Path) -> None:
    path = _leaky_table(tmp_path)
    base = {"source": "file", "path": str(path), "target": "y"}
    with pytest.raises(DataError, match=r"leaky feature: 'outcome' \(AUROC 1.000\)"):
        prepare_tabular_data(TabularDataConfig(**base))
    allowed = TabularDataConfig(**base, allow_leaky_features=["outcome"])
    assert prepare_tabular_data(allowed).schema.numeric == ["x", "outcome"]
    unchecked = TabularDataConfig(**base, leakage_check=False)
    assert prepare_tabular_data(unchecked).schema.target == "y"


def test_bundled_breast_cancer_passes_the_guard() -> None:
    data = prepare_tabular_data(TabularDataConfig(source="breast_cancer", leakage_check=True))
    assert len(data.schema.numeric) == 30
