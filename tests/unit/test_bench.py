"""``abyssal bench``: metrics against scikit-learn, the bootstrap and the paired test, suite files
and their errors, and whole runs over real (tiny) tabular versions: the leaderboard's ranks,
intervals, perturbations, slices and files, and the errors for models that cannot be compared."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

from abyssal.bench.metrics import METRICS, Scored, metric
from abyssal.bench.report import list_boards, read_board, render_html, write_leaderboard
from abyssal.bench.runner import run_suite
from abyssal.bench.stats import Resamples, compare, estimate, holm
from abyssal.bench.suite import load_suite, resolve_overrides, shipped_suites
from abyssal.cli.main import main
from abyssal.core.errors import AbyssalError, ConfigError, DataError

# -- metrics -------------------------------------------------------------------------------------


def test_binary_metrics_match_scikit_learn_with_ties() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 400)
    x = np.round(np.clip(0.3 * y + rng.random(400) * 0.7, 0, 1), 2)  # many ties
    s, rows = Scored.binary(range(400), y, x), np.arange(400)
    assert METRICS["auroc"].compute(s, rows) == pytest.approx(roc_auc_score(y, x), abs=1e-12)
    assert METRICS["auprc"].compute(s, rows) == pytest.approx(
        average_precision_score(y, x), abs=1e-12
    )
    assert METRICS["f1"].compute(s, rows) == pytest.approx(f1_score(y, x >= 0.5))
    assert METRICS["brier"].compute(s, rows) == pytest.approx(np.mean((x - y) ** 2))


def test_class_metrics_match_scikit_learn() -> None:
    frame = pd.DataFrame(
        {
            "id": list("abcdefgh"),
            "label": ["neg", "neu", "pos", "pos", "neu", "neg", "pos", "neu"],
            "prediction": ["neg", "neu", "neu", "pos", "neu", "pos", "pos", "neg"],
        }
    )
    s = Scored.from_frame(frame)
    rows = np.arange(8)
    assert METRICS["accuracy"].compute(s, rows) == pytest.approx(5 / 8)
    assert METRICS["macro_f1"].compute(s, rows) == pytest.approx(
        f1_score(frame["label"], frame["prediction"], average="macro")
    )
    with pytest.raises(ConfigError, match="needs scores of a binary task"):
        METRICS["auroc"].compute(s, rows)


def test_auroc_of_one_class_is_undefined_not_an_error() -> None:
    s = Scored.binary("abc", [1, 1, 1], [0.2, 0.5, 0.9])
    assert np.isnan(METRICS["auroc"].compute(s, np.arange(3)))


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (pd.DataFrame({"id": [1, 2], "label": [0, 1]}), "need columns"),
        (pd.DataFrame({"id": [1, 1], "label": [0, 1], "score": [0.1, 0.2]}), "not unique"),
        (pd.DataFrame({"id": [1, 2], "label": [0, 1], "score": [0.1, np.nan]}), "NaN"),
        (pd.DataFrame({"id": [1, 2], "label": [0, 1], "score": [0.1, 1.5]}), "outside"),
        (pd.DataFrame({"id": [1, 2], "label": [0, 2], "score": [0.1, 0.5]}), "0 or 1"),
    ],
)
def test_bad_held_out_frames_are_named(frame: pd.DataFrame, message: str) -> None:
    with pytest.raises(DataError, match=message):
        Scored.from_frame(frame, where="task: m:1")


def test_an_unknown_metric_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="known: auroc, auprc"):
        metric("rocauc")


# -- the bootstrap -------------------------------------------------------------------------------


def test_resamples_are_seeded_and_groups_stay_whole() -> None:
    a = Resamples.draw(50, resamples=20, seed=1)
    b = Resamples.draw(50, resamples=20, seed=1)
    assert np.array_equal(a.rows, b.rows)
    groups = [f"p{i // 3}" for i in range(30)]  # 10 groups of 3 items
    grouped = Resamples.draw(30, resamples=50, seed=0, groups=groups)
    for rows in grouped.rows:
        assert len(rows) == 30  # 10 groups drawn, 3 items each
        counts = pd.Series([groups[r] for r in rows]).value_counts()
        assert (counts % 3 == 0).all()  # a group is drawn with all its items or not at all


def test_the_paired_test_sees_a_real_difference_and_none_between_equals() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    good = np.clip(y * 0.6 + rng.random(300) * 0.4, 0, 1)
    poor = rng.random(300)
    draws = Resamples.draw(300, resamples=500, seed=0)

    def est(x: np.ndarray):
        s = Scored.binary(range(300), y, x)
        return estimate(lambda r: METRICS["auroc"].compute(s, r), 300, draws)

    g, p = est(good), est(poor)
    assert g.low <= g.value <= g.high
    c = compare(g, p)
    assert c.difference > 0.3 and c.low > 0 and c.p_value < 0.01
    same = compare(g, est(good.copy()))
    assert same.difference == 0 and same.p_value == 1.0


def test_holm_adjusts_in_step_down_order() -> None:
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    out = holm([0.5, float("nan")])
    assert out[0] == pytest.approx(0.5) and np.isnan(out[1])


# -- suites --------------------------------------------------------------------------------------


def test_every_shipped_suite_loads_and_covers_every_solution() -> None:
    from abyssal.solutions import SOLUTIONS

    suites = {name: load_suite(name) for name in shipped_suites()}
    covered = {t.solution for s in suites.values() for t in s.tasks}
    assert covered == set(SOLUTIONS.names())
    for suite in suites.values():
        for task in suite.tasks:
            assert task.primary in task.metrics
            assert all(a.metric in task.metrics and a.source for a in task.anchors)


@pytest.mark.parametrize(
    ("task", "message"),
    [
        ("{name: t, solution: tabular, metrics: [rocauc]}", "unknown metric 'rocauc'"),
        ("{name: t, solution: tabular, metrics: [auroc], primary: f1}", "primary metric 'f1'"),
        ("{name: t, solution: tabular, metrics: [auroc], perturbations: [fog:1]}", "fog"),
        ("{name: t, solution: tabular, metrics: [auroc], protocol: {kind: kfold}}", "fold field"),
        (
            "{name: t, solution: tabular, metrics: [auroc], anchors: [{name: a, metric: f1}]}",
            "reports 'f1'",
        ),
        ("{name: t, solution: tabular, metrics: [auroc], colour: red}", "colour"),
    ],
)
def test_bad_suite_files_are_named(tmp_path: Path, task: str, message: str) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(f"tasks:\n  - {task}\n")
    with pytest.raises(ConfigError, match=message):
        load_suite(path)


def test_unknown_suites_and_variables_say_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="shipped suites: defect-neu-det"):
        load_suite("no-such-suite")
    monkeypatch.delenv("ABYSSAL_DATASETS", raising=False)
    with pytest.raises(ConfigError, match="--datasets DIR or the ABYSSAL_DATASETS"):
        resolve_overrides(["data.path=${datasets}/x"])
    with pytest.raises(ConfigError, match="--var avdigits=VALUE"):
        resolve_overrides(["data.path=${avdigits}/x"], "/data")
    got = resolve_overrides(["data.path=${datasets}/x", "a=1"], "/data")
    assert got == ["data.path=/data/x", "a=1"]


# -- whole runs ----------------------------------------------------------------------------------

FAST = ["data.source=breast_cancer", "train.progress=false", "baselines=false"]
SUITE = """
name: bc
title: breast cancer
tasks:
  - name: diagnosis
    solution: tabular
    data: [data.source=breast_cancer, data.split_seed=0]
    primary: auroc
    metrics: [auroc, accuracy, brier]
    perturbations: ["feature_noise:0.5"]
    slices:
      - {name: large, where: "`mean radius` >= 15"}
    anchors:
      - {name: paper, metric: accuracy, value: 0.975, source: a citation}
"""


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home with tabular:1 (12 epochs), tabular:2 (1 epoch, tiny) and tabular:3 (another
    split), and a suite file."""
    from abyssal.train.api import train

    root = tmp_path_factory.mktemp("bench")
    home = root / "home"
    train("tabular", None, [*FAST, "train.epochs=12", "data.split_seed=0"], home=home)
    train("tabular", None, [*FAST, "train.epochs=1", "model.hidden=4", "data.split_seed=0"],
          home=home)  # fmt: skip
    train("tabular", None, [*FAST, "train.epochs=1", "data.split_seed=1"], home=home)
    (root / "suite.yaml").write_text(SUITE)
    return home


@pytest.fixture
def in_home(home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ABYSSAL_HOME", str(home))
    return home


def test_a_run_ranks_compares_perturbs_and_slices(in_home: Path) -> None:
    suite = load_suite(in_home.parent / "suite.yaml")
    board = run_suite(suite, ["tabular:2", "tabular:1"], resamples=200, log=lambda m: None)
    (task,) = board["tasks"]
    first, second = task["results"]
    assert [first["model"], second["model"]] == ["tabular:1", "tabular:2"]
    assert first["rank"] == 1 and first["versus"] is None
    a1, a2 = first["metrics"]["auroc"], second["metrics"]["auroc"]
    assert a1["value"] >= a2["value"] and a1["low"] <= a1["value"] <= a1["high"]
    assert second["versus"]["difference"] == pytest.approx(a2["value"] - a1["value"])
    assert 0 < second["versus"]["p_value"] <= 1
    assert first["n"] == second["n"] == 113 and first["positives"] == 42
    (noise,) = first["perturbations"]
    assert noise["name"] == "feature_noise 0.5"
    assert noise["drop"]["difference"] == pytest.approx(
        a1["value"] - noise["metrics"]["auroc"]["value"]
    )
    (large,) = first["slices"]
    from abyssal.solutions.loading import load_model

    loaded = load_model("tabular:1")
    attrs = loaded.solution.item_attributes(loaded.cfg, loaded.solution.prepare(loaded.cfg))
    assert large["n"] == int((attrs["mean radius"] >= 15).sum())
    assert task["anchors"][0]["value"] == 0.975
    assert any("trained on this data and split" in n for n in first["notes"])


def test_the_leaderboard_is_kept_whole_and_read_back(in_home: Path, tmp_path: Path) -> None:
    suite = load_suite(in_home.parent / "suite.yaml")
    board = run_suite(suite, ["tabular:1"], resamples=50, log=lambda m: None)
    folder = write_leaderboard(board, out=tmp_path / "copy")
    assert sorted(p.name for p in folder.iterdir()) == [
        "leaderboard.html", "leaderboard.json", "leaderboard.md",
    ]  # fmt: skip
    assert (tmp_path / "copy" / "leaderboard.md").read_text() == (
        folder / "leaderboard.md"
    ).read_text()
    assert not list(folder.parent.glob(".staging-*"))
    assert read_board(folder.name)["tasks"][0]["results"][0]["model"] == "tabular:1"
    assert folder.name in [b["id"] for b in list_boards()]
    html = render_html(board)
    assert "<svg" in html and "stroke-dasharray" in html  # the anchor as a dashed line
    with pytest.raises(AbyssalError, match="no bench run 'nope'"):
        read_board("nope")


def test_models_on_another_split_are_noted_and_folds_refused(in_home: Path) -> None:
    suite = load_suite(in_home.parent / "suite.yaml")
    board = run_suite(suite, ["tabular:3"], resamples=20, log=lambda m: None)
    notes = board["tasks"][0]["results"][0]["notes"]
    assert any("may overlap what it was trained on" in n for n in notes)
    with pytest.raises(ConfigError, match="needs a kfold protocol"):
        run_suite(suite, ["tabular:1,tabular:2"], resamples=20, log=lambda m: None)


def test_a_model_no_task_scores_is_refused_before_scoring(in_home: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.yaml"
    other.write_text("tasks:\n  - {name: t, solution: fraud, metrics: [auroc]}\n")
    with pytest.raises(ConfigError, match="scores fraud models; none of tabular:1"):
        run_suite(load_suite(other), ["tabular:1"], log=lambda m: None)


def test_the_cli_runs_a_suite_and_lists_and_prints_it(
    in_home: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main(["bench", "list"]) == 0
    assert "nodule-lidc" in capsys.readouterr().out
    suite = str(in_home.parent / "suite.yaml")
    out = tmp_path / "out"
    assert main(["bench", "run", suite, "tabular:1", "--resamples", "30", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| 1 | tabular:1 |" in printed
    board = json.loads((out / "leaderboard.json").read_text())
    assert board["command"].startswith("abyssal ") and board["environment"]["machine"]["cores"]
    assert main(["bench", "runs"]) == 0
    assert board["id"] in capsys.readouterr().out
    assert main(["bench", "report", board["id"]]) == 0
    assert "## diagnosis" in capsys.readouterr().out
    assert main(["bench", "run", suite, "tabular:1", "--var", "oops"]) == 1
    assert "write NAME=VALUE" in capsys.readouterr().err
