"""The tabular solution's held-out predictions (``Solution.held_out``): the test rows, their ids,
labels and positive-class probabilities; a regression model is refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from abyssal.cli.main import main
from abyssal.core.errors import AbyssalError
from abyssal.solutions.loading import load_model
from abyssal.solutions.tabular.metrics import classification_metrics
from abyssal.train.api import train

QUICKSTART = Path(__file__).resolve().parents[2] / "configs" / "tabular" / "quickstart.yaml"
FAST = ["train.epochs=4", "train.progress=false", "model.hidden=16", "baselines=false"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo-tabular")
    assert main(["generate", "tabular", "--out", str(out), "seed=0"]) == 0
    return out


def _loaded(table: Path, *extra: str):
    outcome = train("tabular", QUICKSTART, [f"data.path={table}", *FAST, *extra])
    loaded = load_model(outcome.version.ref)
    return outcome, loaded, loaded.solution.prepare(loaded.cfg)


def test_binary_held_out_has_ids_labels_and_probabilities(demo: Path) -> None:
    outcome, loaded, data = _loaded(demo / "train.csv")
    frame = loaded.solution.held_out(loaded.cfg, loaded.model, data)
    table = pd.read_csv(demo / "train.csv")
    rows = data.rows("test")
    assert frame.columns.tolist() == ["id", "label", "score"]
    assert frame["id"].tolist() == table["id"].to_numpy()[rows].tolist()  # the id column
    malignant = (table["diagnosis"].to_numpy()[rows] == "malignant").astype(int)
    assert frame["label"].tolist() == malignant.tolist()
    assert frame["score"].between(0, 1).all()
    probability = np.stack([1 - frame["score"], frame["score"]], axis=1)
    auroc = classification_metrics(frame["label"].to_numpy(), probability)["auroc"]
    assert auroc == pytest.approx(outcome.metrics["test_auroc"], abs=1e-6)


def test_without_an_id_column_rows_are_numbered_and_regression_is_refused(
    demo: Path, tmp_path: Path
) -> None:
    table = pd.read_csv(demo / "train.csv").drop(columns=["id"])
    table.to_csv(tmp_path / "noid.csv", index=False)
    _, loaded, data = _loaded(tmp_path / "noid.csv", "data.ignore=[]")
    frame = loaded.solution.held_out(loaded.cfg, loaded.model, data)
    assert frame["id"].tolist() == (data.rows("test") + 1).tolist()  # 1-based data rows

    target = table.select_dtypes("number").columns[0]
    table.dropna(subset=[target]).to_csv(tmp_path / "regress.csv", index=False)
    regress = [f"data.target={target}", "data.task=regression", "data.ignore=[]"]
    _, loaded, data = _loaded(tmp_path / "regress.csv", *regress)
    with pytest.raises(AbyssalError, match="covers classification"):
        loaded.solution.held_out(loaded.cfg, loaded.model, data)
