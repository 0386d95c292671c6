"""Drift: PSI, KS and embedding MMD on seeded samples; bad inputs refused by name."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from abyssal.core.errors import ConfigError, DataError
from abyssal.data.drift import (
    PSI_MAJOR,
    categorical_psi,
    embedding_drift,
    ks_test,
    numeric_psi,
    psi_level,
    table_drift,
)


def normal(seed: int, n: int, loc: float = 0.0) -> np.ndarray:
    return np.random.default_rng(seed).normal(loc, 1.0, n)


def test_numeric_psi_is_near_zero_for_one_distribution_and_large_for_a_shift() -> None:
    assert numeric_psi(normal(0, 5000), normal(1, 5000)) < 0.01
    assert numeric_psi(normal(0, 5000), normal(1, 5000, loc=1.0)) > 0.5
    assert numeric_psi(np.arange(100.0), np.arange(100.0)) == 0.0


def test_numeric_psi_by_hand_with_ties_and_values_outside_the_reference() -> None:
    reference = np.array([0.0] * 8 + [1.0, 2.0])  # deciles 0 (x8), 1: bins <=0, (0, 1], >1
    current = np.array([0.0] * 5 + [3.0] * 5)
    psi = numeric_psi(reference, current, epsilon=1e-4)
    expected = (0.5 - 0.8) * math.log(0.5 / 0.8)  # the zeros' bin
    expected += (1e-4 - 0.1) * math.log(1e-4 / 0.1)  # the bin of 1, now empty
    expected += (0.5 - 0.1) * math.log(0.5 / 0.1)  # 2 and above: the 3s outside the reference
    assert psi == pytest.approx(expected)
    nan_and_inf = np.r_[reference, np.nan, np.inf]
    assert numeric_psi(nan_and_inf, current) == pytest.approx(psi)  # left out


def test_categorical_psi_counts_unseen_categories() -> None:
    psi, unseen = categorical_psi(["a", "b"] * 50, ["a", "b"] * 45 + ["c"] * 6 + ["d"] * 4)
    assert unseen == 10
    expected = 2 * (0.45 - 0.5) * math.log(0.45 / 0.5) + (0.1 - 1e-4) * math.log(0.1 / 1e-4)
    assert psi == pytest.approx(expected)
    same, none = categorical_psi(["a", "b", None] * 20, ["b", "a"] * 30)
    assert (same, none) == (0.0, 0)


def test_ks_detects_a_shift_and_not_a_resample() -> None:
    d, p = ks_test(normal(0, 400), normal(1, 400, loc=0.5))
    assert d > 0.15 and p < 1e-6
    d, p = ks_test(normal(2, 400), normal(3, 400))
    assert d < 0.1 and p > 0.05
    assert ks_test(np.arange(10.0), np.arange(10.0)) == (0.0, 1.0)


def test_ks_p_value_agrees_with_scipy() -> None:
    stats = pytest.importorskip("scipy.stats")
    for loc in (0.0, 0.1, 0.2, 0.3):
        reference, current = normal(4, 300), normal(5, 250, loc=loc)
        d, p = ks_test(reference, current)
        expected = stats.ks_2samp(reference, current)
        assert d == pytest.approx(expected.statistic)
        assert p == pytest.approx(expected.pvalue, abs=0.02)  # asymptotic against exact


def test_table_drift_flags_shifted_features_only() -> None:
    n = 600
    rng = np.random.default_rng(7)
    reference = pd.DataFrame(
        {
            "amount": rng.normal(50, 10, n),
            "age": rng.integers(18, 80, n),
            "shop": rng.choice(["a", "b", "c"], n),
        }
    )
    current = pd.DataFrame(
        {
            "amount": rng.normal(65, 10, n),  # shifted by 1.5 standard deviations
            "age": rng.integers(18, 80, n),
            "shop": rng.choice(["a", "b", "c", "new"], n, p=[0.3, 0.3, 0.3, 0.1]),
        }
    )
    report = table_drift(reference, current)
    assert report.drifted == ["amount", "shop"]
    amount, age, shop = report.features
    assert amount.kind == "numeric" and amount.psi > 1.0 and amount.p_value < 1e-12
    assert age.psi < 0.1 and age.p_value > 0.01 and age.level == "none"
    assert (
        shop.kind == "categorical"
        and shop.ks is None
        and shop.unseen == int((current.shop == "new").sum())
    )
    assert report.feature("amount").level == "major"
    plain = json.loads(json.dumps(report.to_dict()))
    assert plain["drifted"] == ["amount", "shop"] and plain["features"][0]["feature"] == "amount"
    assert report.summary().splitlines()[0].startswith("2 of 3 features drifted (psi >= 0.25")


def test_table_drift_thresholds_are_configurable() -> None:
    reference = pd.DataFrame({"x": normal(0, 2000)})
    current = pd.DataFrame({"x": normal(1, 2000, loc=0.35)})  # a small shift
    psi = table_drift(reference, current).feature("x").psi
    assert 0.05 < psi < PSI_MAJOR
    assert table_drift(reference, current, alpha=0.0).drifted == []  # PSI only
    assert table_drift(reference, current, alpha=0.0, psi_threshold=psi / 2).drifted == ["x"]
    assert table_drift(reference, current).drifted == ["x"]  # KS: p tiny, statistic >= 0.1


def test_table_drift_skips_one_sided_date_time_and_id_like_columns() -> None:
    n = 100
    reference = pd.DataFrame(
        {
            "x": np.arange(n, dtype=float),
            "day": pd.date_range("2026-01-01", periods=n, freq="h"),
            "tx_id": [f"t{i}" for i in range(n)],
            "old": 1.0,
        }
    )
    current = reference.drop(columns=["old"]).assign(new=2.0)
    report = table_drift(reference, current)
    assert [f.feature for f in report.features] == ["x"]
    assert list(report.skipped) == ["old", "new", "day", "tx_id"]
    assert report.skipped["tx_id"].startswith("text with 100 distinct values (id-like)")
    named = table_drift(reference, current.assign(day=current.day + pd.Timedelta(days=30)), ["day"])
    assert named.drifted == ["day"] and named.feature("day").kind == "numeric"


def test_text_columns_from_csv_and_forced_categories() -> None:
    reference = pd.DataFrame({"n": ["1", "2", "3", ""] * 25, "code": ["10", "20"] * 50})
    current = pd.DataFrame({"n": [1.0, 2.0, 3.0, np.nan] * 25, "code": [10, 30] * 50})
    report = table_drift(reference, current, categorical=["code"])
    n, code = report.features
    assert (n.kind, n.psi, n.n_reference, n.n_current) == ("numeric", 0.0, 75, 75)
    assert code.kind == "categorical" and code.unseen == 50 and report.drifted == ["code"]


def test_embedding_mmd_detects_a_mean_shift_and_not_a_resample() -> None:
    rng = np.random.default_rng(11)
    reference = rng.normal(size=(300, 16))
    resample = rng.normal(size=(300, 16))
    shifted = rng.normal(size=(300, 16)) + 0.3
    same = embedding_drift(reference, resample, permutations=100, seed=1)
    moved = embedding_drift(reference, shifted, permutations=100, seed=1)
    assert not same.drifted and same.p_value > 0.05 and abs(same.mmd2) < 0.005
    assert moved.drifted and moved.p_value == pytest.approx(1 / 101) and moved.mmd2 > 0.015
    assert embedding_drift(reference, shifted, permutations=100, seed=1) == moved  # seeded
    assert "drifted" in moved.summary() and json.dumps(moved.to_dict())


def test_embedding_cosine_distance_and_subsample_bound() -> None:
    rng = np.random.default_rng(3)
    reference = rng.normal(size=(500, 4)) + np.array([5.0, 0.0, 0.0, 0.0])
    current = rng.normal(size=(400, 4)) + np.array([0.0, 5.0, 0.0, 0.0])  # a right angle
    result = embedding_drift(reference, current, max_rows=100, permutations=20)
    assert (result.n_reference, result.n_current, result.permutations) == (100, 100, 20)
    assert result.cosine_distance == pytest.approx(1.0, abs=0.05)
    assert result.bandwidth > 0


def test_bad_inputs_raise_data_error_naming_what_was_wrong() -> None:
    frame = pd.DataFrame({"x": [1.0, 2.0], "y": ["a", "b"]})
    with pytest.raises(DataError, match="the current sample is empty"):
        table_drift(frame, frame.iloc[:0])
    with pytest.raises(DataError, match="column 'z': not in the reference sample"):
        table_drift(frame, frame.assign(z=1.0), ["x", "z"])
    with pytest.raises(DataError, match="column 'x': no finite number in the current sample"):
        table_drift(frame, frame.assign(x=np.nan))
    with pytest.raises(DataError, match="column 'y': no value in the reference sample"):
        table_drift(frame.assign(y=None), frame)
    with pytest.raises(DataError, match=r"row 2, column 'x': 'abc' in the current sample"):
        table_drift(frame, pd.DataFrame({"x": ["1", "abc"], "y": ["a", "b"]}))
    with pytest.raises(DataError, match=r"embedding widths differ: .* 8 values, the current's 6"):
        embedding_drift(np.zeros((5, 8)), np.zeros((5, 6)))
    with pytest.raises(DataError, match=r"current embeddings have shape \(5,\); expected a 2-D"):
        embedding_drift(np.zeros((5, 8)), np.zeros(5))
    with pytest.raises(DataError, match="reference embeddings have 1 rows; expected at least 2"):
        embedding_drift(np.zeros((1, 8)), np.zeros((5, 8)))
    bad = np.zeros((5, 8))
    bad[3, 2] = np.nan
    with pytest.raises(DataError, match="row 4: the current embeddings have a non-finite value"):
        embedding_drift(np.ones((5, 8)), bad)
    with pytest.raises(DataError, match="the reference sample has no finite value"):
        numeric_psi([np.nan], [1.0])
    with pytest.raises(ConfigError, match="bins must be 2 or more"):
        numeric_psi([1.0], [1.0], bins=1)


def test_psi_levels() -> None:
    assert [psi_level(v) for v in (0.0, 0.099, 0.1, 0.249, 0.25)] == [
        "none", "none", "moderate", "moderate", "major",
    ]  # fmt: skip
