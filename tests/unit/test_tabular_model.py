"""The tabular network and its training task: shapes, sharding, losses, gathered validation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from abyssal.contracts.task import Shard, TrainTask
from abyssal.solutions.tabular.config import TabularConfig, TabularDataConfig
from abyssal.solutions.tabular.data import TabularData
from abyssal.solutions.tabular.model import TabularMLP
from abyssal.solutions.tabular.solution import TabularSolution
from abyssal.solutions.tabular.task import (
    TabularTask,
    balanced_batches,
    make_batch,
    network_outputs,
    outputs_metrics,
)


def small_config(tmp_path: Path, task: str = "classification", n: int = 61) -> TabularConfig:
    rng = np.random.default_rng(1)
    x = rng.normal(size=n)
    frame = pd.DataFrame(
        {
            "x": np.where(np.arange(n) % 7 == 0, np.nan, x),
            "colour": rng.choice(["red", "blue", "green"], n),
            "y": np.where(x > 0, "big", "small") if task == "classification" else 3 * x + 1,
        }
    )
    frame.to_csv(tmp_path / "t.csv", index=False)
    data = TabularDataConfig(  # y is a function of x here: no leakage check on toy data
        source="file",
        path=str(tmp_path / "t.csv"),
        target="y",
        batch_size=8,
        task=task,
        leakage_check=False,
    )
    return TabularConfig(data=data)


def task_of(cfg: TabularConfig) -> tuple[TabularTask, TabularData]:
    solution = TabularSolution()
    data = solution.prepare(cfg)
    return solution.task(cfg, data), data


@pytest.mark.parametrize(("cardinalities", "outputs"), [([4, 2], 3), ([], 1), ([5], 2)])
def test_model_output_shapes(cardinalities: list[int], outputs: int) -> None:
    model = TabularMLP(3, cardinalities, outputs, hidden=8, layers=3, embedding_dim=4)
    codes = torch.zeros(5, len(cardinalities), dtype=torch.long)
    assert model(torch.randn(5, 3), codes).shape == (5, outputs)


def test_model_without_numeric_columns_and_zero_code_starts_at_zero() -> None:
    model = TabularMLP(0, [3], 2, hidden=4)
    assert model(torch.zeros(2, 0), torch.tensor([[0], [2]])).shape == (2, 2)
    assert torch.count_nonzero(model.embeddings[0].weight[0]) == 0
    with pytest.raises(ValueError, match="at least one numeric or categorical input"):
        TabularMLP(0, [], 2)


def test_task_satisfies_the_protocol_and_example_inputs_run(tmp_path: Path) -> None:
    cfg = small_config(tmp_path)
    task, data = task_of(cfg)
    assert isinstance(task, TrainTask)
    solution = TabularSolution()
    spec = solution.model_spec(cfg, data)
    model = solution.build_model(cfg, spec)
    numeric, categorical = solution.example_inputs(cfg, spec)
    assert model(numeric, categorical).shape == (2, 2)


def test_ranks_draw_disjoint_parts_that_cover_the_training_split(tmp_path: Path) -> None:
    task, data = task_of(small_config(tmp_path))
    epoch_rows = []
    for epoch in (0, 1):
        parts = [list(task.train_batches(epoch, Shard(rank, 3))) for rank in range(3)]
        assert len({len(p) for p in parts}) == 1  # every rank steps the same number of times
        rows = [r for p in parts for b in p for r in b.rows.tolist()]
        assert len(rows) == len(set(rows))
        assert sorted(rows) == data.rows("train").tolist()
        epoch_rows.append(rows)
    assert epoch_rows[0] != epoch_rows[1]  # reshuffled per epoch
    again = [r for b in task.train_batches(1, Shard(0, 3)) for r in b.rows.tolist()]
    assert again == epoch_rows[1][: len(again)]  # and reproducible


def test_balanced_batches_give_every_rank_the_same_count() -> None:
    counts = {len(balanced_batches(Shard(r, 2).take(11), 11, Shard(r, 2), 4)) for r in (0, 1)}
    assert counts == {2}
    assert len(balanced_batches(np.arange(3), 3, Shard(), 64)) == 1


@pytest.mark.parametrize("kind", ["classification", "regression"])
def test_gathered_validation_outputs_give_the_direct_metrics(tmp_path: Path, kind: str) -> None:
    task, data = task_of(small_config(tmp_path, kind))
    torch.manual_seed(0)
    model = task.build_model().eval()
    with torch.no_grad():
        parts: dict[str, list[np.ndarray]] = {}
        for rank in (0, 1):
            for batch in task.val_batches(Shard(rank, 2)):
                for k, v in task.validation_step(model, batch).items():
                    parts.setdefault(k, []).append(v.numpy())
        gathered = task.validation_metrics({k: np.concatenate(v) for k, v in parts.items()})
        whole = network_outputs(model, make_batch(data, data.rows("val")), task.target)
    direct = outputs_metrics(whole, task.target)
    assert gathered.keys() == {f"val_{k}" for k in direct}
    for key, value in direct.items():
        assert gathered[f"val_{key}"] == pytest.approx(value, rel=1e-5)


def test_training_loss_is_a_scalar_with_gradients(tmp_path: Path) -> None:
    cfg = small_config(tmp_path)
    cfg.model.class_weight = "balanced"
    task, data = task_of(cfg)
    train_labels = data.target[data.rows("train")]
    counts = np.bincount(train_labels)
    expected = len(train_labels) / (2 * counts)
    np.testing.assert_allclose(task.class_weight.numpy(), expected, rtol=1e-6)
    model = task.build_model()
    loss = task.training_loss(model, next(iter(task.train_batches(0, Shard()))))
    loss.backward()
    assert loss.shape == () and model.head.weight.grad is not None


def test_regression_outputs_are_in_the_targets_units(tmp_path: Path) -> None:
    task, data = task_of(small_config(tmp_path, "regression"))
    batch = make_batch(data, data.rows("val"))
    out = network_outputs(task.build_model().eval(), batch, task.target)
    np.testing.assert_allclose(out["target"].numpy(), data.target[data.rows("val")], rtol=1e-5)


def test_monitor_follows_the_task_and_the_config(tmp_path: Path) -> None:
    solution = TabularSolution()
    cfg = small_config(tmp_path, "regression")
    _, data = task_of(cfg)
    assert solution.monitor(cfg, data) == ("val_rmse", "min")
    cfg.train.early_stopping_metric = "val_r2"
    assert solution.monitor(cfg, data) == ("val_r2", "max")
    cfg = small_config(tmp_path)
    assert solution.monitor(cfg, task_of(cfg)[1]) == ("val_auroc", "max")
