"""``abyssal decide points --accuracy``: accept-or-review points of real (tiny) multi-class
versions, chosen on the validation split's held-out predictions, measured on the test split,
kept and shown; a multi-class solution's ``decision_score`` and a served predictor that decides
with such a point."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest

from abyssal.cli.main import main
from abyssal.decide.points import PointSpec, achieved_multiclass, choose_multiclass
from abyssal.decide.store import load_points

CLASSES = ("crazing", "patches", "scratches")


def blobs_csv(path: Path, n: int = 450, seed: int = 0) -> Path:
    """Three overlapping Gaussian classes in two features: the model is sure of some rows and
    unsure of others, so an accept threshold has something to separate."""
    rng = np.random.default_rng(seed)
    k = rng.integers(0, 3, n)
    centers = np.array([[0.0, 0.0], [1.5, 0.0], [0.0, 1.5]])
    x = centers[k] + rng.normal(0, 0.8, (n, 2))
    frame = pd.DataFrame({"width": x[:, 0], "depth": x[:, 1], "kind": np.array(CLASSES)[k]})
    frame.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from abyssal.train.api import train

    root = tmp_path_factory.mktemp("decide_multiclass")
    csv = blobs_csv(root / "surfaces.csv")
    overrides = [f"data.path={csv}", "data.source=file", "data.target=kind", "train.epochs=8",
                 "train.progress=false", "baselines=false"]  # fmt: skip
    train("tabular", None, overrides, home=root / "home", model_name="surfaces")
    return root / "home"


def held_out(ref: str, split: str) -> pd.DataFrame:
    from abyssal.solutions.loading import load_model

    loaded = load_model(ref)
    data = loaded.solution.prepare(loaded.cfg)
    return loaded.solution.held_out(loaded.cfg, loaded.model, data, split=split)


def test_accuracy_points_are_chosen_on_validation_measured_on_test_and_kept(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ABYSSAL_HOME", str(home))
    args = ["decide", "points", "surfaces", "--accuracy", "0.9", "--review-budget", "0.25",
            "--json"]  # fmt: skip
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["version"] == "surfaces:1" and out["default"] == "accuracy-0.9"
    by_name = {p["name"]: p for p in out["points"]}
    accuracy, budget = by_name["accuracy-0.9"], by_name["review_budget-0.25"]
    assert accuracy["achieved"]["accepted_accuracy"] >= 0.9
    assert 0 < accuracy["achieved"]["accept_share"] < 1  # some accepted, some reviewed
    assert budget["achieved"]["review_share"] <= 0.25
    assert accuracy["review_at"] is None and accuracy["block_at"] is None
    # the same choice, recomputed from the version's own held-out frames
    val, test = held_out("surfaces:1", "val"), held_out("surfaces:1", "test")
    assert set(val["label"]) <= set(CLASSES) and not set(val["id"]) & set(test["id"])
    again = choose_multiclass(val["label"], val["prediction"], val["probability"],
                              PointSpec("accuracy", 0.9))  # fmt: skip
    assert accuracy["accept_at"] == again.accept_at
    measured = achieved_multiclass(test["label"], test["prediction"], test["probability"],
                                   again.accept_at)  # fmt: skip
    assert out["test"]["accuracy-0.9"] == measured
    kept = load_points("surfaces:1", home=home)
    assert kept["default"] == "accuracy-0.9" and "validation split" in kept["chosen_on"]
    assert kept["points"][0].accept_at == again.accept_at and kept["points"][0].multiclass


def test_show_gives_the_accept_threshold_coverage_and_accepted_accuracy(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ABYSSAL_HOME", str(home))
    assert main(["decide", "points", "surfaces:1", "--accuracy", "0.85"]) == 0
    table = capsys.readouterr().out
    assert "test accepted acc" in table and "test coverage" in table
    assert main(["decide", "show", "surfaces:1"]) == 0
    shown = capsys.readouterr().out
    kept = load_points("surfaces:1", home=home)["points"][0]
    header, _, row = shown.splitlines()[1:4]
    assert header.split() == ["point", "accept", "at", "val", "coverage", "val", "accepted",
                              "acc", "val", "review"]  # fmt: skip
    assert row.split() == ["accuracy-0.85", f"{kept.accept_at:.4f}",
                           f"{kept.achieved['accept_share']:.4f}",
                           f"{kept.achieved['accepted_accuracy']:.4f}",
                           f"{kept.achieved['review_share']:.4f}"]  # fmt: skip


def test_binary_kinds_are_refused_naming_the_kinds_that_fit(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ABYSSAL_HOME", str(home))
    assert main(["decide", "points", "surfaces:1", "--precision", "0.9"]) == 1
    err = capsys.readouterr().err
    assert "surfaces:1 is a multi-class classifier" in err
    assert "['precision-0.9']" in err and "accuracy, review_budget" in err


def test_show_says_when_no_threshold_reaches_the_accuracy(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from abyssal.decide.store import save_points

    monkeypatch.setenv("ABYSSAL_HOME", str(home))
    never = choose_multiclass(["a", "b"], ["b", "b"], [0.9, 0.8], PointSpec("accuracy", 0.99))
    save_points("surfaces:1", [never], home=home)
    assert main(["decide", "show", "surfaces:1"]) == 0
    shown = capsys.readouterr().out
    assert ("accuracy-0.99: no confidence threshold reaches accepted accuracy 0.99 on "
            "validation (best 0.5000): every item is reviewed") in shown  # fmt: skip
    assert shown.splitlines()[3].split()[:2] == ["accuracy-0.99", "-"]  # accept at: none


# -- deciding with a multi-class point ----------------------------------------------------------


def loaded_like(solution: str, classes: list[str], **spec: Any) -> Any:
    from abyssal.solutions import get_solution

    cfg = SimpleNamespace(task=spec.pop("task", "classification"))
    return SimpleNamespace(solution=get_solution(solution), spec={"classes": classes, **spec},
                           cfg=cfg)  # fmt: skip


@pytest.mark.parametrize("solution", ["defect", "multimodal"])
def test_decision_score_is_the_confidence_or_the_positive_class(solution: str) -> None:
    three = loaded_like(solution, list(CLASSES))
    response = {"class": "patches", "label": "patches", "probability": 0.7,
                "probabilities": {"crazing": 0.1, "patches": 0.7, "scratches": 0.2}}  # fmt: skip
    assert three.solution.decision_score(three)(response) == 0.7
    two = loaded_like(solution, ["ok", "scratch"])
    binary = {"class": "ok", "label": "ok", "probability": 0.8,
              "probabilities": {"ok": 0.8, "scratch": 0.2}}  # fmt: skip
    assert two.solution.decision_score(two)(binary) == 0.2  # the second class, as held_out's
    # a prediction file's row (abyssal predict --out): defect has p_<class>, multimodal the
    # predicted label and its probability
    row = {"path": "a.png", "class": "ok", "probability": 0.8, "p_ok": 0.8, "p_scratch": 0.2}
    if solution == "multimodal":
        row = {"id": "s1", "label": "ok", "probability": 0.8}
    assert two.solution.decision_score(two)(row) == pytest.approx(0.2)
    assert three.solution.decision_score(three)({**row, "probability": 0.55}) == 0.55


def test_text_decision_score_reads_the_response_and_the_file_row() -> None:
    three = loaded_like("text", ["negative", "neutral", "positive"])
    row = {"label": "neutral", "probability": 0.6, "p_negative": 0.1, "p_neutral": 0.6,
           "p_positive": 0.3}  # fmt: skip
    assert three.solution.decision_score(three)(row) == 0.6
    two = loaded_like("text", ["negative", "positive"])
    binary = {"label": "negative", "probability": 0.9, "p_negative": 0.9, "p_positive": 0.1}
    assert two.solution.decision_score(two)(binary) == 0.1


def test_models_without_classes_decide_nothing() -> None:
    encoder = loaded_like("defect", [], objective="simclr")
    assert encoder.solution.decision_score(encoder) is None
    retrieval = loaded_like("multimodal", [], task="retrieval")
    assert retrieval.solution.decision_score(retrieval) is None


@pytest.fixture(scope="module")
def text_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from abyssal.train.api import train
    from tests.unit.tiny_text import tiny_text_overrides

    root = tmp_path_factory.mktemp("decide_text")
    overrides = tiny_text_overrides(root, "train.epochs=2", "train.lr=0.01")
    train("text", None, overrides, home=root / "home", model_name="sentiment")
    return root / "home"


def test_a_served_text_model_accepts_or_reviews_with_its_kept_point(
    text_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """positive/negative/neutral: the decision's score is the predicted class's probability
    and its action the kept point's; each decision is logged for feedback, an inspection or an
    analyst's class coming back later."""
    from abyssal.decide.feedback import add_feedback, read_predictions
    from abyssal.decide.predictor import DecidingPredictor, deciding
    from abyssal.decide.store import point
    from abyssal.solutions.loading import load_model

    monkeypatch.setenv("ABYSSAL_HOME", str(text_home))
    assert main(["decide", "points", "sentiment:1", "--review-budget", "0.5"]) == 0
    loaded = load_model("sentiment:1")
    predictor = deciding(loaded, loaded.solution.predictor(loaded))
    assert isinstance(predictor, DecidingPredictor) and predictor.point.multiclass
    kept = point("sentiment:1")
    texts = ["profit rose strong", "sales decreased by percent", "the board said in quarter",
             "record growth year", "orders fell weak"]  # fmt: skip
    answers = predictor.predict([predictor.parse({"text": t, "id": k})
                                 for k, t in enumerate(texts)])  # fmt: skip
    for answer in answers:
        decision = answer["decision"]
        assert decision["score"] == answer["probability"]
        assert answer["probability"] == answer[f"p_{answer['label']}"]
        assert decision["action"] == kept.decide(decision["score"]).action
        assert decision["action"] in ("accept", "review") and decision["point"] == kept.name
    logged = read_predictions("sentiment", text_home)
    assert logged["id"].tolist() == [str(k) for k in range(len(texts))]
    assert logged["action"].tolist() == [a["decision"]["action"] for a in answers]
    later = float(logged["event_time"].max()) + 60
    assert add_feedback("sentiment", [{"id": "0", "label": 2, "timestamp": later}],
                        home=text_home, now=later) == 1  # a class of three  # fmt: skip


def test_a_text_prediction_file_gets_accept_or_review_per_row(
    text_home: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from abyssal.decide.frames import decide_rows, kept_point
    from abyssal.solutions.loading import load_model
    from tests.unit.tiny_text import texts_csv

    monkeypatch.setenv("ABYSSAL_HOME", str(text_home))
    assert main(["decide", "points", "sentiment:1", "--review-budget", "0.5"]) == 0
    loaded = load_model("sentiment:1")
    kept = kept_point(loaded)
    report = loaded.solution.predict_file(loaded, texts_csv(tmp_path / "new.csv", per_class=4))
    decided = decide_rows(loaded, report.frame, kept)
    assert decided["decision_score"].tolist() == report.frame["probability"].tolist()
    expected = [kept.decide(s).action for s in report.frame["probability"]]
    assert decided["decision"].tolist() == expected


def test_a_multiclass_tabular_model_is_served_with_accept_or_review(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from abyssal.decide.predictor import deciding
    from abyssal.decide.store import point
    from abyssal.solutions.loading import load_model

    monkeypatch.setenv("ABYSSAL_HOME", str(home))
    assert main(["decide", "points", "surfaces", "--accuracy", "0.9"]) == 0
    loaded = load_model("surfaces:1")
    predictor = deciding(loaded, loaded.solution.predictor(loaded), log_predictions=False)
    rows = [{"width": 0.0, "depth": 0.0}, {"width": 0.8, "depth": 0.8}]
    answers = predictor.predict([predictor.parse(r) for r in rows])
    kept = point("surfaces:1")
    for answer in answers:
        assert answer["decision"]["score"] == answer["probability"]
        assert answer["decision"]["action"] == kept.decide(answer["probability"]).action
