"""Reading, validating and splitting tables for the tabular solution."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from abyssal.core.config import load_config
from abyssal.core.errors import ConfigError, DataError
from abyssal.solutions.tabular.config import TabularConfig, TabularDataConfig
from abyssal.solutions.tabular.data import prepare_tabular_data, split_rows

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "tabular"


def people(n: int = 30) -> pd.DataFrame:
    """A small table: an id, numbers (some missing, one column with an 'NA' marker), a city, a
    yes/no target."""
    rng = np.random.default_rng(0)
    age = rng.integers(18, 80, n).astype(float)
    age[[2, 5]] = np.nan
    return pd.DataFrame(
        {
            "id": [f"P{i:03d}" for i in range(n)],
            "age": age,
            "income": np.round(rng.normal(50, 10, n), 2),
            "visits": [str(v) if i != 3 else "NA" for i, v in enumerate(rng.integers(0, 9, n))],
            "city": rng.choice(["Oslo", "Rome", "Lima"], n),
            "churn": np.where(np.arange(n) % 3 == 0, "yes", "no"),
        }
    )


def write(frame: pd.DataFrame, path: Path) -> Path:
    frame.to_csv(path, index=False) if path.suffix == ".csv" else frame.to_parquet(path)
    return path


def config(path: Path, **data: object) -> TabularDataConfig:
    target = data.pop("target", "churn")
    return TabularDataConfig(source="file", path=str(path), target=target, **data)


def test_columns_kinds_and_task_are_detected(tmp_path: Path) -> None:
    data = prepare_tabular_data(config(write(people(), tmp_path / "t.csv"), ignore=["id"]))
    s = data.schema
    assert s.numeric == ["age", "income", "visits"]  # numbers read as text, "NA" is missing
    assert s.categorical == ["city"]
    assert s.task == "classification" and data.preprocessor.target.classes == ["no", "yes"]
    assert np.isnan(data.numeric[3, 2]) and np.isnan(data.numeric[2, 0])
    assert s.keep == ["id", "churn"]
    assert "binary classification (no, yes) of 'churn'" in data.description


def test_integer_target_with_few_values_is_classification_else_regression(
    tmp_path: Path,
) -> None:
    frame = people().assign(churn=lambda f: (f["age"].fillna(0) > 40).astype(int))
    assert prepare_tabular_data(config(write(frame, tmp_path / "a.csv"))).schema.task == (
        "classification"
    )
    frame = frame.assign(churn=np.linspace(0, 1, len(frame)))
    data = prepare_tabular_data(config(write(frame, tmp_path / "b.csv")))
    assert data.schema.task == "regression"
    assert data.preprocessor.target.mean == pytest.approx(data.target[data.rows("train")].mean())


def test_numeric_classes_sort_as_numbers(tmp_path: Path) -> None:
    frame = people().assign(churn=[str(i % 3 * 5) for i in range(30)])  # 0, 5, 10
    data = prepare_tabular_data(config(write(frame, tmp_path / "t.csv")))
    assert data.preprocessor.target.classes == ["0", "5", "10"]


def test_declared_categorical_makes_the_rest_numeric(tmp_path: Path) -> None:
    path = write(people(), tmp_path / "t.csv")
    data = prepare_tabular_data(config(path, ignore=["id"], categorical=["city", "age"]))
    assert data.schema.categorical == ["age", "city"]
    assert data.schema.numeric == ["income", "visits"]


def test_features_list_selects_columns(tmp_path: Path) -> None:
    data = prepare_tabular_data(config(write(people(), tmp_path / "t.csv"), features=["city"]))
    assert data.schema.features == ["city"] and data.numeric.shape == (30, 0)


@pytest.mark.parametrize(
    ("mutate", "options", "message"),
    [
        (lambda f: f, {"target": "label"}, "no target column 'label'; the columns are: id, age"),
        (lambda f: f.assign(churn=f["churn"].where(f.index != 6)), {}, "row 7, column 'churn'"),
        (lambda f: f.assign(churn="yes"), {}, "the target has one class ('yes')"),
        (
            lambda f: f.assign(income=f["income"].astype(object).where(f.index != 4, "12k")),
            {"numeric": ["income"]},
            "row 5, column 'income': expected a number, got '12k'",
        ),
        (
            lambda f: f.assign(income=f["income"].astype(object).where(f.index != 4, "12k")),
            {"categorical": ["city"], "ignore": ["id"]},
            "row 5, column 'income'",
        ),
        (lambda f: f, {"features": ["age", "agee"]}, "data.features names 'agee', which is not"),
        (lambda f: f, {"ignore": ["ID"]}, "data.ignore names 'ID', which is not a column"),
        (lambda f: f, {"categorical": ["town"]}, "the columns are: id, age, income"),
        (lambda f: f, {"features": ["churn"]}, "data.features names the target column"),
        (lambda f: f.head(2), {}, "too few rows for the split: 2 rows give"),
        (
            lambda f: f.assign(churn=["x", *["1.5"] * 29]),
            {"task": "regression"},
            "row 1, column 'churn': expected a number (data.task=regression), got 'x'",
        ),
        (lambda f: f.assign(churn=1.0), {"task": "regression"}, "the target is constant"),
    ],
)
def test_bad_tables_name_file_row_and_column(tmp_path, mutate, options, message) -> None:
    path = write(mutate(people()), tmp_path / "bad.csv")
    with pytest.raises(DataError) as err:
        prepare_tabular_data(config(path, **options))
    assert message in str(err.value) and str(path) in str(err.value)


def test_a_text_cell_makes_an_undeclared_column_categorical(tmp_path: Path) -> None:
    frame = people().assign(income=lambda f: f["income"].astype(object).where(f.index != 4, "12k"))
    data = prepare_tabular_data(config(write(frame, tmp_path / "t.csv")))
    assert "income" in data.schema.categorical


def test_csv_and_parquet_give_the_same_fingerprint(tmp_path: Path) -> None:
    frame = people()
    frame["visits"] = pd.to_numeric(frame["visits"], errors="coerce")  # Parquet keeps the numbers
    a = prepare_tabular_data(config(write(frame, tmp_path / "t.csv")))
    b = prepare_tabular_data(config(write(frame, tmp_path / "t.parquet")))
    assert a.fingerprint == b.fingerprint and a.fingerprint.startswith("sha256:")
    c = prepare_tabular_data(config(tmp_path / "t.csv", split_seed=1))
    assert c.fingerprint != a.fingerprint  # the split is part of it


def test_stratified_split_is_disjoint_complete_and_reproducible() -> None:
    labels = np.array([0] * 80 + [1] * 20)
    cfg = TabularDataConfig(source="breast_cancer", val_frac=0.2, test_frac=0.1, split_seed=3)
    splits = split_rows(100, labels, cfg, "t")
    rows = np.concatenate(list(splits.values()))
    assert sorted(rows.tolist()) == list(range(100))
    assert [len(splits[s]) for s in ("train", "val", "test")] == [70, 20, 10]
    assert labels[splits["val"]].sum() == 4 and labels[splits["test"]].sum() == 2
    again = split_rows(100, labels, cfg, "t")
    assert all(np.array_equal(splits[s], again[s]) for s in splits)


def test_config_checks_its_values() -> None:
    with pytest.raises(ConfigError, match=r"data\.path is required"):
        TabularDataConfig(source="file", target="y")
    with pytest.raises(ConfigError, match=r"data\.target is required"):
        TabularDataConfig(source="file", path="t.csv")
    with pytest.raises(ConfigError, match="must leave rows for training"):
        TabularDataConfig(source="diabetes", val_frac=0.5, test_frac=0.5)
    with pytest.raises(ConfigError, match=r"data\.max_categories must be <= 250"):
        TabularDataConfig(source="diabetes", max_categories=1000)


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_loads(path: Path) -> None:
    cfg = load_config(TabularConfig, path)
    assert cfg.train.epochs >= 1 and cfg.baselines


def test_shipped_configs_exist() -> None:
    assert {p.name for p in CONFIGS.glob("*.yaml")} >= {"quickstart.yaml", "diabetes.yaml"}
