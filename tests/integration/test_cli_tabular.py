"""The tabular solution end to end through the CLI, on the real breast-cancer table that
`abyssal generate tabular` writes, its bad input, and two gloo processes sharing its data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import torch

from abyssal.cli.main import main
from abyssal.contracts.task import Shard
from abyssal.core.devices import seed_everything
from abyssal.core.runs import Run, list_runs
from abyssal.core.store import ModelStore
from abyssal.solutions import get_solution
from abyssal.solutions.tabular.task import RowBatches, TabularTask
from abyssal.train.strategy import LocalStrategy
from abyssal.train.trainer import validate_task

QUICKSTART = Path(__file__).resolve().parents[2] / "configs" / "tabular" / "quickstart.yaml"
FAST = ["train.epochs=4", "train.progress=false", "model.hidden=16"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo-tabular")
    assert main(["generate", "tabular", "--out", str(out), "missing_frac=0.05", "seed=0"]) == 0
    return out


def _train(demo: Path, *extra: str, table: Path | None = None) -> int:
    data = f"data.path={table or demo / 'train.csv'}"
    return main(["train", "tabular", "--config", str(QUICKSTART), data, *FAST, *extra])


def test_generate_writes_real_rows_and_new_rows(demo: Path) -> None:
    train = pd.read_csv(demo / "train.csv")
    new = pd.read_csv(demo / "new_rows.csv")
    assert len(train) + len(new) == 569  # the Wisconsin breast-cancer data set
    assert set(train["diagnosis"]) == {"benign", "malignant"} and "diagnosis" not in new
    assert train.drop(columns=["id", "diagnosis"]).isna().any().any()


def test_train_evaluate_alias_predict(demo: Path, tmp_path: Path, capsys) -> None:
    assert _train(demo, "--alias", "candidate") == 0
    out = capsys.readouterr().out
    assert "registered tabular:1" in out and "boosted trees" in out and "AUROC" in out
    mv = ModelStore().resolve("tabular:candidate")
    assert mv.version == 1 and 0.5 < mv.metrics["test_auroc"] <= 1.0
    assert 0.5 < mv.metrics["gbdt_test_auroc"] <= 1.0
    assert mv.lineage["data_fingerprint"].startswith("sha256:")
    assert main(["evaluate", "tabular:candidate", "--json"]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["metrics"]["test_auroc"] == pytest.approx(mv.metrics["test_auroc"], abs=1e-6)
    assert main(["evaluate", "tabular:candidate", "data.split_seed=1"]) == 0
    assert "tabular:1 on" in capsys.readouterr().out
    assert main(["models", "alias", "tabular:1", "production"]) == 0
    scores = tmp_path / "scores.csv"
    new = demo / "new_rows.csv"
    assert main(["predict", "tabular", "--input", str(new), "--out", str(scores)]) == 0
    printed = capsys.readouterr().out
    assert "tabular:1: predicted 57 rows" in printed and f"written to {scores}" in printed
    table = pd.read_csv(scores)
    assert table.columns.tolist() == ["id", "prediction", "probability", "p_malignant"]
    assert table["id"].tolist() == pd.read_csv(new)["id"].tolist()
    assert table["probability"].between(0.5, 1).all()


def test_models_list_show_compare_and_runs(demo: Path, capsys) -> None:
    assert _train(demo, "baselines=false") == 0
    assert _train(demo, "baselines=false", "train.seed=1", "--name", "cancer") == 0
    capsys.readouterr()
    assert main(["models", "list"]) == 0
    listing = capsys.readouterr().out
    assert "tabular:1" in listing and "cancer:1" in listing
    assert main(["models", "show", "cancer:1"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["config"]["solution_config"]["train"]["seed"] == 1
    assert shown["config"]["model_spec"]["schema"]["target"] == "diagnosis"
    assert main(["models", "compare", "tabular:1", "cancer:1"]) == 0
    assert "train.seed: 0 -> 1" in capsys.readouterr().out
    assert main(["runs"]) == 0
    runs = capsys.readouterr().out
    assert "tabular:1" in runs and "cancer:1" in runs


def test_a_stopped_run_resumes_to_the_same_model(demo: Path, monkeypatch, capsys) -> None:
    assert _train(demo, "baselines=false") == 0
    reference = ModelStore().resolve("tabular:1").metrics
    batches = TabularTask.train_batches

    def stop_at_epoch_two(self: TabularTask, epoch: int, shard: Shard) -> RowBatches:
        if epoch == 2:
            raise KeyboardInterrupt  # after the checkpoints of epochs 0 and 1
        return batches(self, epoch, shard)

    monkeypatch.setattr(TabularTask, "train_batches", stop_at_epoch_two)
    assert _train(demo, "baselines=false") == 130
    stopped = Run.open("latest")
    assert stopped.status == "interrupted" and len(stopped.metrics_history()) == 2
    assert ModelStore().resolve("tabular:latest").version == 1  # nothing registered
    monkeypatch.setattr(TabularTask, "train_batches", batches)
    assert main(["train", "tabular", "--resume", "latest"]) == 0
    assert len(Run.open(stopped.id).metrics_history()) == 4
    resumed = ModelStore().resolve("tabular:2").metrics
    assert resumed["test_auroc"] == reference["test_auroc"]
    assert resumed["val_log_loss"] == reference["val_log_loss"]
    capsys.readouterr()
    assert main(["train", "tabular", "--resume", "latest"]) == 0  # finished: the same version
    assert f"run {stopped.id}: registered tabular:2" in capsys.readouterr().out
    assert [v.ref for v in ModelStore().list_versions("tabular")] == ["tabular:1", "tabular:2"]


def test_regression_on_the_bundled_diabetes_data(capsys) -> None:
    args = ["data.source=diabetes", "data.task=regression", *FAST]
    assert main(["train", "tabular", *args]) == 0
    out = capsys.readouterr().out
    assert "RMSE" in out
    metrics = ModelStore().resolve("tabular:1").metrics
    assert metrics["test_rmse"] > 0 and "gbdt_test_r2" in metrics and "test_auroc" not in metrics


def _mutate(frame: pd.DataFrame, column: str, row: int, value: object) -> pd.DataFrame:
    frame = frame.copy()
    frame[column] = frame[column].astype(object)
    frame.loc[row, column] = value
    return frame


@pytest.mark.parametrize(
    ("mutate", "overrides", "message"),
    [
        (lambda f: f.drop(columns=["diagnosis"]), [], "no target column 'diagnosis'"),
        (lambda f: _mutate(f, "diagnosis", 4, None), [], "row 5, column 'diagnosis'"),
        (
            lambda f: _mutate(f, "mean radius", 2, "big"),
            ["data.numeric=[mean radius]"],
            "row 3, column 'mean radius': expected a number, got 'big'",
        ),
        (lambda f: f, ["data.ignore=[ID]"], "data.ignore names 'ID', which is not a column"),
        (lambda f: f.assign(diagnosis="benign"), [], "the target has one class ('benign')"),
        (lambda f: f.groupby("diagnosis").head(2), [], "too few rows for the split: 4 rows"),
        (lambda f: f.iloc[0:0], [], "no rows"),
    ],
)
def test_bad_training_input_fails_cleanly(demo, tmp_path, capsys, mutate, overrides, message):
    bad = tmp_path / "bad.csv"
    mutate(pd.read_csv(demo / "train.csv", dtype=str)).to_csv(bad, index=False)
    assert _train(demo, *overrides, table=bad) == 1
    err = capsys.readouterr().err
    assert message in err and str(bad) in err
    assert list_runs() == [] and ModelStore().names() == []


def test_unknown_config_key_lists_valid_keys(demo: Path, capsys) -> None:
    assert _train(demo, "data.targt=x") == 1
    err = capsys.readouterr().err
    assert "unknown key 'data.targt'" in err and "target" in err
    assert list_runs() == []


def test_bad_predict_input_writes_nothing(demo: Path, tmp_path: Path, capsys) -> None:
    assert _train(demo, "baselines=false") == 0
    new = _mutate(pd.read_csv(demo / "new_rows.csv", dtype=str), "mean texture", 6, "twelve")
    new.to_csv(tmp_path / "new.csv", index=False)
    out = tmp_path / "scores.csv"
    code = main(["predict", "tabular", "--input", str(tmp_path / "new.csv"), "--out", str(out)])
    assert code == 1 and not out.exists()
    err = capsys.readouterr().err
    assert f"{tmp_path / 'new.csv'}, row 7, column 'mean texture'" in err


RANK_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import torch, torch.distributed as dist
    rank, world, init, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    torch.set_num_threads(1)
    from abyssal.contracts.task import Shard
    from abyssal.core.devices import seed_everything
    from abyssal.solutions import get_solution
    from abyssal.train.strategy import LocalStrategy, gather_outputs
    from abyssal.train.trainer import validate_task

    class GlooStrategy(LocalStrategy):
        shard = Shard(rank, world)
        is_main = rank == 0

        def gather(self, outputs):
            return gather_outputs(outputs)

    sol = get_solution("tabular")
    cfg = sol.config_cls()
    task = sol.task(cfg, sol.prepare(cfg))
    seed_everything(0)
    model = task.build_model()
    metrics = validate_task(task, model, GlooStrategy(), torch.device("cpu"))
    rows = [r for b in task.train_batches(0, Shard(rank, world)) for r in b.rows.tolist()]
    dist.destroy_process_group()
    json.dump({"metrics": metrics, "train_rows": rows}, open(out, "w"))
    """
)


def test_two_gloo_ranks_validate_and_train_on_their_own_rows(tmp_path: Path) -> None:
    solution = get_solution("tabular")
    cfg = solution.config_cls()
    task = solution.task(cfg, solution.prepare(cfg))
    seed_everything(0)
    expected = validate_task(task, task.build_model(), LocalStrategy(), torch.device("cpu"))
    init = f"file://{tmp_path / 'rendezvous'}"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", RANK_SCRIPT, str(rank), "2", init, str(tmp_path / f"{rank}")],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in range(2)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err
    ranks = [json.loads((tmp_path / f"{rank}").read_text()) for rank in range(2)]
    for rank in ranks:
        assert rank["metrics"].keys() == expected.keys()
        for key, value in expected.items():
            assert rank["metrics"][key] == pytest.approx(value, abs=1e-9), key
    rows = ranks[0]["train_rows"] + ranks[1]["train_rows"]
    assert sorted(rows) == sorted(set(rows)) == task.data.rows("train").tolist()
