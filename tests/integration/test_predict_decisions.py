"""``abyssal predict`` on a version with kept operating points: every written row gains its
decision (the one the point gives for the row's score), the point and the reason; a version
without points writes its predictions as before; an unknown ``--point`` is refused before any
prediction is written."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from abyssal.cli.main import main
from abyssal.decide.store import load_points

QUICKSTART = Path(__file__).resolve().parents[2] / "configs" / "tabular" / "quickstart.yaml"
FAST = ["train.epochs=4", "train.progress=false", "model.hidden=16", "baselines=false"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo-decisions")
    home = out / "home"
    mp = pytest.MonkeyPatch()
    mp.setenv("ABYSSAL_HOME", str(home))
    assert main(["generate", "tabular", "--out", str(out), "seed=0"]) == 0
    data = f"data.path={out / 'train.csv'}"
    assert main(["train", "tabular", "--config", str(QUICKSTART), data, *FAST]) == 0  # 1
    assert main(["train", "tabular", "--config", str(QUICKSTART), data, *FAST]) == 0  # 2
    assert main(["decide", "points", "tabular:1", "--review-budget", "0.2", "--cost",
                 "missed=100,review=5,false_block=50", "--default", "cost"]) == 0  # fmt: skip
    yield out
    mp.undo()


def test_predicted_rows_carry_their_decision(
    demo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("ABYSSAL_HOME", str(demo / "home"))
    out = tmp_path / "scores.csv"
    args = ["predict", "tabular", "--model", "tabular:1", "--input", str(demo / "new_rows.csv")]
    assert main([*args, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    table = pd.read_csv(out)
    assert table.columns.tolist()[-4:] == ["decision", "decision_score", "decision_point",
                                           "decision_reason"]  # fmt: skip
    point = next(p for p in load_points("tabular:1", home=demo / "home")["points"]
                 if p.name == "cost")  # fmt: skip
    expected = [point.decide(p).action for p in table["p_malignant"]]
    assert table["decision"].tolist() == expected
    assert (table["decision_point"] == "cost").all()
    assert table["decision_score"].tolist() == pytest.approx(table["p_malignant"].tolist())
    counts = table["decision"].value_counts()
    assert f"decisions (cost): approve {counts.get('approve', 0)}" in printed
    # the decisions are logged for feedback: a label can come back for each row's id
    from abyssal.decide.feedback import add_feedback, read_predictions

    logged = read_predictions("tabular", demo / "home")
    assert logged["id"].astype(str).tolist()[-len(table) :] == table["id"].astype(str).tolist()
    assert f"{len(table)} decisions logged for feedback" in printed
    later = float(logged["event_time"].max()) + 1
    first = str(table["id"].iloc[0])
    assert add_feedback("tabular", [{"id": first, "label": 1, "timestamp": later}],
                        home=demo / "home", now=later) == 1  # fmt: skip
    assert main([*args, "--out", str(out), "--point", "review_budget-0.2"]) == 0
    budget = pd.read_csv(out)
    assert set(budget["decision"]) <= {"approve", "review"}  # a review budget blocks nothing


def test_a_version_without_points_predicts_as_before(
    demo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ABYSSAL_HOME", str(demo / "home"))
    out = tmp_path / "scores.csv"
    assert main(["predict", "tabular", "--model", "tabular:2", "--input",
                 str(demo / "new_rows.csv"), "--out", str(out)]) == 0  # fmt: skip
    assert "decision" not in pd.read_csv(out).columns


def test_an_unknown_point_is_refused_before_anything_is_written(
    demo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("ABYSSAL_HOME", str(demo / "home"))
    out = tmp_path / "scores.csv"
    base = ["predict", "tabular", "--input", str(demo / "new_rows.csv"), "--out", str(out)]
    assert main([*base, "--model", "tabular:1", "--point", "nope"]) != 0
    assert "no operating point 'nope'" in capsys.readouterr().err
    assert main([*base, "--model", "tabular:2", "--point", "cost"]) != 0
    assert "has no operating points" in capsys.readouterr().err
    assert not out.exists()
