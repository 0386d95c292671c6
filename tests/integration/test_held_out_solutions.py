"""``Solution.held_out`` of the text, defect and nodule solutions on small trained versions,
loaded back from the store as an audit would: one row per test item with the item's id, and a
metric computed from the frame equal to the version's stored test metric (the frame is scored
the way ``evaluate`` scores the test split)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from abyssal.nn.metrics import classification_metrics
from abyssal.solutions.loading import load_model
from abyssal.train.api import train

ROOT = Path(__file__).resolve().parents[2]


def test_text_held_out_names_lines_and_predicted_classes(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    from tests.unit.tiny_text import tiny_text_overrides

    overrides = tiny_text_overrides(tmp_path, "train.epochs=2", "train.lr=0.01")
    outcome = train("text", None, overrides)
    loaded = load_model(outcome.version.ref)
    data = loaded.solution.prepare(loaded.cfg)
    frame = loaded.solution.held_out(loaded.cfg, loaded.model, data)

    rows = data.rows("test")
    assert frame.columns.tolist() == ["id", "label", "prediction", "probability"]
    assert len(frame) == len(rows) == outcome.metrics["test_texts"]
    with (tmp_path / "texts.csv").open(newline="") as fh:
        written = list(csv.DictReader(fh))
    # the 1-based line of the file: the header is line 1, so data row i is line i + 2
    assert frame["label"].tolist() == [written[line - 2]["label"] for line in frame["id"]]
    classes = loaded.spec["classes"]
    assert set(frame["prediction"]) <= set(classes)
    assert frame["probability"].between(1 / len(classes), 1).all()
    accuracy = float((frame["label"] == frame["prediction"]).mean())
    assert accuracy == pytest.approx(outcome.metrics["test_accuracy"], abs=1e-9)
    assert not loaded.model.training  # left as it was


def test_defect_held_out_scores_the_second_class_by_image_path(tmp_path: Path) -> None:
    from abyssal.solutions.defect.sample import DefectSampleConfig, generate_sample

    parts = tmp_path / "parts"
    options = DefectSampleConfig(
        images_per_class=8, size=32, classes=["crack", "scratch"], new_images=0, seed=0
    )
    generate_sample(options, parts)
    fast = [
        f"data.path={parts / 'images'}",
        "data.image_size=32",
        "model.backbone=resnet18",
        "train.epochs=1",
        "train.progress=false",
        "data.batch_size=8",
        "data.workers=0",
    ]
    outcome = train("defect", ROOT / "configs" / "defect" / "quickstart.yaml", fast)
    loaded = load_model(outcome.version.ref)
    data = loaded.solution.prepare(loaded.cfg)
    frame = loaded.solution.held_out(loaded.cfg, loaded.model, data)

    rows = data.rows("test")
    assert frame.columns.tolist() == ["id", "label", "score"]
    assert len(frame) == len(rows) == outcome.metrics["test_images"]
    assert loaded.spec["classes"] == ["crack", "scratch"]  # label 1: scratch
    for path, label in zip(frame["id"], frame["label"], strict=True):
        assert Path(path).is_file() and Path(path).parent.name == ("crack", "scratch")[label]
    assert frame["score"].between(0, 1).all()
    probability = np.stack([1 - frame["score"], frame["score"]], axis=1)
    metrics = classification_metrics(frame["label"].to_numpy(), probability, ["crack", "scratch"])
    assert metrics["accuracy"] == pytest.approx(outcome.metrics["test_accuracy"], abs=1e-9)
    assert metrics["macro_f1"] == pytest.approx(outcome.metrics["test_macro_f1"], abs=1e-9)


def test_nodule_held_out_scores_malignancy_of_labelled_test_nodules(tmp_path: Path) -> None:
    pytest.importorskip("nibabel")
    from abyssal.solutions.nodule.evaluation import auroc
    from abyssal.solutions.nodule.sample import NoduleSampleConfig, generate_sample

    sample = tmp_path / "nodules"
    generate_sample(NoduleSampleConfig(nodules=40, patients=20, size=24, new_volumes=1), sample)
    tiny = ["data.cube=16", "data.voxel_mm=2.5", "model.width=4", "train.epochs=1"]
    config = ROOT / "configs" / "nodule" / "quickstart.yaml"
    outcome = train("nodule", config, [f"data.path={sample}", *tiny, "train.progress=false"])
    loaded = load_model(outcome.version.ref)
    data = loaded.solution.prepare(loaded.cfg)
    frame = loaded.solution.held_out(loaded.cfg, loaded.model, data)

    rows = data.rows("test", labelled=True)
    assert frame.columns.tolist() == ["id", "label", "score"]
    assert len(frame) == len(rows) == outcome.metrics["test_nodules"]
    split = pd.read_csv(outcome.run.path / "split.csv", dtype=str)
    test = split[split["split"] == "test"].set_index("nodule_id")["label"]
    assert [test[i] for i in frame["id"]] == [
        ("benign", "malignant")[label] for label in frame["label"]
    ]
    assert frame["score"].between(0, 1).all()
    assert auroc(frame["label"], frame["score"]) == pytest.approx(
        outcome.metrics["test_auroc"], abs=1e-9
    )
    accuracy = float(((frame["score"] >= 0.5) == frame["label"]).mean())
    assert accuracy == pytest.approx(outcome.metrics["test_accuracy"], abs=1e-9)
