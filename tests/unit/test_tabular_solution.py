"""The tabular solution on real bundled data: evaluation, boosted trees, samples, metric layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from abyssal.contracts.task import Shard
from abyssal.solutions.tabular.config import TabularConfig, TabularDataConfig, TabularSampleConfig
from abyssal.solutions.tabular.data import TabularData
from abyssal.solutions.tabular.solution import TabularSolution

SOLUTION = TabularSolution()


@pytest.fixture(scope="module")
def cancer() -> tuple[TabularConfig, TabularData]:
    # one-time imports (scikit-learn; torch's compiler, on the first optimizer) belong to setup
    import sklearn.ensemble
    import sklearn.metrics  # noqa: F401

    torch.optim.Adam([torch.zeros(1, requires_grad=True)])

    cfg = TabularConfig(data=TabularDataConfig(source="breast_cancer"))
    return cfg, SOLUTION.prepare(cfg)


def trained(cfg: TabularConfig, data: TabularData, epochs: int = 8) -> torch.nn.Module:
    """A plain loop over the task's batches (the trainer has its own tests)."""
    task = SOLUTION.task(cfg, data)
    torch.manual_seed(0)
    model = task.build_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for epoch in range(epochs):
        for batch in task.train_batches(epoch, Shard()):
            optimizer.zero_grad()
            task.training_loss(model, batch).backward()
            optimizer.step()
    return model.eval()


def test_network_ranks_breast_cancer_well(cancer) -> None:
    cfg, data = cancer
    assert data.schema.task == "classification" and len(data.schema.numeric) == 30
    metrics = SOLUTION.evaluate(cfg, trained(cfg, data), data)
    assert metrics["test_auroc"] > 0.95 and metrics["val_auroc"] > 0.95
    assert metrics["test_rows"] == 113 and metrics["test_positives"] == 42  # malignant
    assert metrics["train_rows"] == 343


def test_boosted_trees_rank_breast_cancer_well(cancer) -> None:
    cfg, data = cancer
    trees = SOLUTION.baselines(cfg, data)
    assert trees["gbdt_test_auroc"] > 0.95 and 1 <= trees["gbdt_rounds"] <= 300
    assert SOLUTION.baselines(TabularConfig(baselines=False), data) == {}


def test_metric_layout_shows_both_models(cancer) -> None:
    metrics = {"test_auroc": 0.99, "gbdt_test_auroc": 0.98, "gbdt_val_rmse": None}
    rows = SOLUTION.metric_layout.rows(metrics)
    assert [r[:3] for r in rows] == [["network", "test", 0.99], ["boosted trees", "test", 0.98]]
    assert SOLUTION.metric_layout.headline == "test_auroc"


def test_evaluating_on_another_table_uses_the_models_own_encoders(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "x": np.r_[np.arange(30.0), [np.nan] * 2],
            "c": ["a", "b"] * 16,
            "y": ["p", "q"] * 16,
        }
    )
    frame.to_csv(tmp_path / "a.csv", index=False)
    cfg = TabularConfig(
        data=TabularDataConfig(
            source="file", path=str(tmp_path / "a.csv"), target="y", leakage_check=False
        )
    )
    data = SOLUTION.prepare(cfg)
    model = trained(cfg, data, epochs=1)
    other = frame.assign(x=frame["x"] * 10).fillna({"x": 3.0}).assign(c="z")  # no missing x
    other.to_csv(tmp_path / "b.csv", index=False)
    cfg_b = TabularConfig(
        data=TabularDataConfig(
            source="file", path=str(tmp_path / "b.csv"), target="y", leakage_check=False
        )
    )
    data_b = SOLUTION.prepare(cfg_b)
    assert data_b.preprocessor.numeric_width == 1  # its own encoders would not fit the model
    metrics = SOLUTION.evaluate(cfg_b, model, data_b)
    assert metrics["test_rows"] == len(data_b.rows("test"))
    unknown = frame.assign(y=["p", "r"] * 16)
    unknown.to_csv(tmp_path / "c.csv", index=False)
    cfg_c = TabularConfig(
        data=TabularDataConfig(
            source="file", path=str(tmp_path / "c.csv"), target="y", leakage_check=False
        )
    )
    with pytest.raises(Exception, match="class 'r' is not one the model knows"):
        SOLUTION.evaluate(cfg_c, model, SOLUTION.prepare(cfg_c))


@pytest.mark.parametrize(
    ("dataset", "target", "band"),
    [("breast_cancer", "diagnosis", "size_band"), ("diabetes", "progression", "age_band")],
)
def test_sample_writes_real_rows_with_blanks_and_held_out_rows(
    tmp_path: Path, dataset: str, target: str, band: str
) -> None:
    options = TabularSampleConfig(dataset=dataset, new_frac=0.1, missing_frac=0.05, seed=1)
    lines = SOLUTION.generate_sample(options, tmp_path)
    train = pd.read_csv(tmp_path / "train.csv")
    new = pd.read_csv(tmp_path / "new_rows.csv")
    total = {"breast_cancer": 569, "diabetes": 442}[dataset]
    assert len(train) + len(new) == total and len(new) == round(total * 0.1)
    assert target in train.columns and target not in new.columns
    assert train[target].notna().all() and band in train.columns
    features = train.drop(columns=["id", target])
    assert 0.03 < features.isna().to_numpy().mean() < 0.07
    assert set(train["id"]).isdisjoint(new["id"])
    assert "train.csv" in lines[0] and "new_rows.csv" in lines[1]


def test_sample_band_is_derived_from_its_column(tmp_path: Path) -> None:
    SOLUTION.generate_sample(TabularSampleConfig(missing_frac=0.0), tmp_path)
    train = pd.read_csv(tmp_path / "train.csv")
    order = ["small", "medium", "large", "very large"]
    rank = train["size_band"].map(order.index)
    area = train.groupby(rank)["mean area"]
    assert (area.max().to_numpy()[:-1] <= area.min().to_numpy()[1:]).all()  # bands don't overlap
