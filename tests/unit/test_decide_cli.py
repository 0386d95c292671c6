"""``abyssal decide points``: operating points of a real (tiny) tabular version, chosen on its
validation split with ``Solution.held_out(split="val")``, measured on its test split and kept."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from abyssal.cli.main import main
from abyssal.decide.store import load_points

FAST = ["data.source=breast_cancer", "train.progress=false", "baselines=false", "train.epochs=8"]


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from abyssal.train.api import train

    home = tmp_path_factory.mktemp("decide") / "home"
    train("tabular", None, FAST, home=home)
    return home


def test_points_are_chosen_on_validation_and_kept(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ABYSSAL_HOME", str(home))
    args = ["decide", "points", "tabular", "--precision", "0.9", "--review-budget", "0.1",
            "--cost", "missed=100,review=5,false_block=50", "--default=cost", "--json"]  # fmt: skip
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["version"] == "tabular:1" and out["default"] == "cost"
    by_name = {p["name"]: p for p in out["points"]}
    assert by_name["precision-0.9"]["achieved"]["precision"] >= 0.9
    assert by_name["review_budget-0.1"]["achieved"]["review_share"] <= 0.1
    assert by_name["review_budget-0.1"]["block_at"] is None
    assert set(out["test"]) == set(by_name)  # each point measured on the test split too
    kept = load_points("tabular:1", home=home)
    assert kept["default"] == "cost" and "validation split" in kept["chosen_on"]
    assert main(["decide", "show", "tabular:1"]) == 0
    assert "precision-0.9" in capsys.readouterr().out


def test_the_validation_split_is_not_the_test_split(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from abyssal.solutions.loading import load_model

    monkeypatch.setenv("ABYSSAL_HOME", str(home))
    loaded = load_model("tabular:1")
    data = loaded.solution.prepare(loaded.cfg)
    val = loaded.solution.held_out(loaded.cfg, loaded.model, data, split="val")
    test = loaded.solution.held_out(loaded.cfg, loaded.model, data)
    assert len(val) and len(test) and not set(val["id"]) & set(test["id"])


def test_bad_requests_are_named(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ABYSSAL_HOME", str(home))
    assert main(["decide", "points", "tabular:1"]) == 1
    assert "name at least one point" in capsys.readouterr().err
    assert main(["decide", "points", "tabular:1", "--precision", "2"]) == 1
    assert "in (0, 1]" in capsys.readouterr().err
    assert main(["decide", "show", "tabular:9"]) == 1
    assert "no version or alias '9'" in capsys.readouterr().err


def test_the_service_answers_with_the_default_points_decision(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A served binary classifier with kept operating points answers each request with its
    decision and reason; the decision follows the point's thresholds."""
    from fastapi.testclient import TestClient

    from abyssal.decide.predictor import DecidingPredictor
    from abyssal.decide.store import point
    from abyssal.serve.app import ServeSettings, create_app
    from abyssal.serve.models import load_served
    from abyssal.solutions.tabular.bundled import bundled_table

    monkeypatch.setenv("ABYSSAL_HOME", str(home))
    assert (
        main(["decide", "points", "tabular:1", "--cost", "missed=100,review=5,false_block=50"]) == 0
    )
    (model,) = load_served(["tabular:1"])
    assert isinstance(model.predictor, DecidingPredictor)
    chosen = point("tabular:1", home=home)
    rows = bundled_table("breast_cancer").drop(columns=["diagnosis"]).head(40)
    actions = set()
    with TestClient(create_app([model], ServeSettings())) as client:
        for row in rows.to_dict("records"):
            (answer,) = client.post("/v1/models/tabular/predict", json=row).json()["predictions"]
            decision = answer["decision"]
            score = decision["score"]
            assert score == answer["p_malignant"]
            assert decision["action"] == chosen.decide(score).action
            assert decision["point"] == "cost" and decision["reason"]
            actions.add(decision["action"])
    assert {"approve", "block"} <= actions  # both sides of the thresholds were met
