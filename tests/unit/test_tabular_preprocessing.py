"""Encoders fitted on the training split: imputation, indicators, scaling, vocabularies, JSON."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from abyssal.core.errors import StoreError
from abyssal.solutions.tabular.cells import CellReader
from abyssal.solutions.tabular.config import TabularDataConfig
from abyssal.solutions.tabular.data import prepare_tabular_data
from abyssal.solutions.tabular.preprocessing import TablePreprocessor, TargetEncoding
from abyssal.solutions.tabular.schema import TableSchema
from abyssal.solutions.tabular.task import table_spec

NAN = np.nan


def fitted(max_categories: int = 2) -> TablePreprocessor:
    numeric = np.array([[1.0, 5.0], [NAN, 5.0], [3.0, 5.0], [8.0, 5.0]])  # column 2 constant
    categorical = np.array([["a"], ["b"], ["a"], ["c"]], dtype=object)
    target = TargetEncoding("classification", classes=["no", "yes"])
    return TablePreprocessor.fit(
        ["x", "k"], numeric, ["c"], categorical, target, max_categories=max_categories
    )


def test_numeric_median_indicator_and_standardisation() -> None:
    pre = fitted()
    x, k = pre.numeric
    assert (x.median, x.mean, x.indicator) == (3.0, 4.0, True)
    assert x.std == pytest.approx(np.std([1.0, 3.0, 8.0]))
    assert (k.std, k.indicator) == (1.0, False)  # constant: std 1, no missing -> no indicator
    out = pre.encode_numeric(np.array([[NAN, 5.0], [4.0, NAN]]))
    assert out.shape == (2, 3) and out.dtype == np.float32  # x, k, x's indicator
    np.testing.assert_allclose(out[0], [(3.0 - 4.0) / x.std, 0.0, 1.0], rtol=1e-6)
    np.testing.assert_allclose(out[1], [0.0, 0.0, 0.0], atol=1e-7)  # k was never missing in train


def test_categories_keep_the_most_frequent_and_code_the_rest_zero() -> None:
    pre = fitted(max_categories=2)
    assert pre.categorical[0].vocabulary == ["a", "b"]  # a twice; b and c once: b first by value
    codes = pre.encode_categorical(np.array([["a"], ["b"], ["c"], [None], ["never"]], dtype=object))
    assert codes.ravel().tolist() == [1, 2, 0, 0, 0]
    assert pre.cardinalities == [3]


def test_json_round_trip_encodes_the_same() -> None:
    pre = fitted()
    again = TablePreprocessor.from_dict(json.loads(json.dumps(pre.to_dict())))
    assert again == pre
    rows = np.array([[NAN, 1.0], [2.0, 9.0]])
    np.testing.assert_array_equal(again.encode_numeric(rows), pre.encode_numeric(rows))
    with pytest.raises(StoreError, match="not a tabular preprocessing spec"):
        TablePreprocessor.from_dict({"numeric": []})


def test_regression_target_is_standardised_and_restored() -> None:
    target = TargetEncoding("regression", mean=10.0, std=2.0)
    np.testing.assert_allclose(target.standardise(np.array([12.0, 8.0])), [1.0, -1.0])
    np.testing.assert_allclose(target.restore(np.array([1.0, -1.0])), [12.0, 8.0])
    assert target.outputs == 1 and TargetEncoding("classification", ["a", "b", "c"]).outputs == 3


def test_encoders_see_only_training_rows(tmp_path: Path) -> None:
    n = 40
    frame = pd.DataFrame(
        {
            "x": np.arange(n, dtype=float),
            "c": ["seen"] * n,
            "y": ["a", "b"] * (n // 2),
        }
    )
    cfg = TabularDataConfig(source="file", path=str(tmp_path / "t.csv"), target="y")
    frame.to_csv(cfg.path, index=False)
    first = prepare_tabular_data(cfg)
    test_row = int(first.rows("test")[0])
    frame.loc[test_row, "x"] = 1e9  # changes a test row only
    frame.loc[test_row, "c"] = "only in test"
    frame.to_csv(cfg.path, index=False)
    data = prepare_tabular_data(cfg)
    assert data.preprocessor == first.preprocessor
    assert data.encoded["categorical"][test_row, 0] == 0  # unseen in training -> code 0


def test_spec_of_a_prepared_table_is_json() -> None:
    data = prepare_tabular_data(TabularDataConfig(source="diabetes"))
    spec = table_spec(data)
    assert json.loads(json.dumps(spec, allow_nan=False)) == spec
    assert TableSchema.from_dict(spec["schema"]) == data.schema
    assert spec["preprocessing"]["target"]["task"] == "regression"


@pytest.mark.parametrize(
    ("cell", "number", "category"),
    [
        (" 2.50 ", 2.5, "2.50"),
        (3.0, 3.0, "3"),
        (7, 7.0, "7"),
        ("NA", NAN, None),
        ("", NAN, None),
        (None, NAN, None),
        (float("nan"), NAN, None),
    ],
)
def test_cells_read_the_same_from_text_numbers_and_json(cell, number, category) -> None:
    cells = CellReader(["NA"])
    assert cells.category(cell) == category
    np.testing.assert_equal(cells.number(cell), number)


@pytest.mark.parametrize("cell", ["abc", "inf", True, [1]])
def test_cells_refuse_non_numbers(cell) -> None:
    with pytest.raises(ValueError, match="expected a"):
        CellReader([]).number(cell)
