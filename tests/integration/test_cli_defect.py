"""The defect solution end to end through the CLI on generated parts: train, register, predict a
folder (with heat maps), a CSV with known labels, bad images, SimCLR pretraining and transfer,
and an INT8 edge child version checked against its parent."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from abyssal.cli.main import main
from abyssal.core.runs import list_runs
from abyssal.core.store import ModelStore

QUICKSTART = Path(__file__).resolve().parents[2] / "configs" / "defect" / "quickstart.yaml"
FAST = [
    "data.image_size=32",
    "model.backbone=resnet18",
    "train.epochs=2",
    "train.progress=false",
    "data.batch_size=8",
    "data.workers=0",
]


@pytest.fixture(scope="module")
def parts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo-defect")
    options = ["images_per_class=8", "size=32", "new_images=6", "seed=0"]
    assert main(["generate", "defect", "--out", str(out), *options]) == 0
    return out


def _train(parts: Path, *extra: str) -> int:
    data = f"data.path={parts / 'images'}"
    return main(["train", "defect", "--config", str(QUICKSTART), data, *FAST, *extra])


def test_train_writes_the_split_and_predicts_a_folder_with_heat_maps(
    parts: Path, tmp_path: Path, capsys
) -> None:
    assert _train(parts) == 0
    out = capsys.readouterr().out
    assert "registered defect:1" in out and "macro-F1" in out and "heat in box" in out
    mv = ModelStore().resolve("defect:1")
    assert mv.config["model_spec"]["classes"] == ["crack", "patch", "scratch", "spot"]
    assert 0.0 <= mv.metrics["test_accuracy"] <= 1.0 and "test_recall_crack" in mv.metrics
    run = list_runs()[0]
    with open(run.path / "split.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 32 and {r["split"] for r in rows} == {"train", "val", "test"}
    per_class = {(r["label"], r["split"]) for r in rows}
    assert all((c, "test") in per_class for c in ("crack", "patch", "scratch", "spot"))

    scores, heat = tmp_path / "scores.csv", tmp_path / "heat"
    args = ["predict", "defect", "--images", str(parts / "new"), "--out", str(scores)]
    assert main([*args, "--explain", str(heat)]) == 0
    printed = capsys.readouterr().out
    assert "defect:1: predicted 6 images" in printed and f"written to {scores}" in printed
    with open(scores, newline="") as f:
        table = list(csv.DictReader(f))
    assert len(table) == 6 and set(table[0]) >= {"path", "class", "probability", "p_spot"}
    assert all(r["class"] in {"crack", "patch", "scratch", "spot"} for r in table)
    assert len(list(heat.glob("*.png"))) == 6

    truth = parts / "new_truth.csv"
    assert main(["predict", "defect", "--images", str(truth)]) == 0
    assert "accuracy against the given labels:" in capsys.readouterr().out


def test_a_bad_image_is_reported_and_the_rest_are_scored(parts: Path, tmp_path: Path, capsys):
    assert _train(parts, "train.epochs=1") == 0
    folder = tmp_path / "line"
    folder.mkdir()
    for i, src in enumerate(sorted((parts / "new").glob("*.png"))[:3]):
        (folder / f"ok_{i}.png").write_bytes(src.read_bytes())
    good = (parts / "new" / "img_1.png").read_bytes()
    (folder / "cut.png").write_bytes(good[: len(good) // 2])  # truncated
    (folder / "notes.png").write_text("not an image")
    capsys.readouterr()
    assert main(["predict", "defect", "--images", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "predicted 3 images" in out and "2 images could not be read" in out
    assert "cut.png: the file is truncated" in out and "notes.png: " in out


def test_unknown_class_at_predict_time_is_refused_and_colour_becomes_grey(
    parts: Path, tmp_path: Path, capsys
) -> None:
    assert _train(parts, "train.epochs=1") == 0
    table = tmp_path / "labelled.csv"
    image = sorted((parts / "new").glob("*.png"))[0]
    table.write_text(f"path,label\n{image},scratch\n{image},rust\n")
    assert main(["predict", "defect", "--images", str(table)]) != 0
    err = capsys.readouterr().err
    assert "labelled.csv, row 2, column 'label': class 'rust' was never trained" in err
    colour = tmp_path / "colour.png"
    rgb = np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(colour)
    assert main(["predict", "defect", "--images", str(colour)]) == 0  # colour -> grey: allowed


def test_training_refuses_bad_data_before_a_run_exists(parts: Path, tmp_path: Path, capsys) -> None:
    empty = tmp_path / "empty"
    (empty / "crack").mkdir(parents=True)
    (empty / "spot").mkdir()
    for name in ("a.png", "b.png"):
        (empty / "spot" / name).write_bytes((parts / "new" / "img_1.png").read_bytes())
    assert main(["train", "defect", f"data.path={empty}", *FAST]) != 0
    assert "crack" in capsys.readouterr().err
    assert main(["train", "defect", *FAST]) != 0
    assert "data.path is required" in capsys.readouterr().err
    assert list_runs() == []


def test_simclr_pretraining_transfers_its_backbone(parts: Path, capsys) -> None:
    assert _train(parts, "objective=simclr", "train.epochs=1") == 0
    assert "registered defect:1" in capsys.readouterr().out
    ssl = ModelStore().resolve("defect:1")
    assert 0.0 <= ssl.metrics["test_knn_accuracy"] <= 1.0
    assert _train(parts, "model.pretrained=defect:1", "train.delayed=[backbone.*]",
                  "train.delay_epochs=1") == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "registered defect:2" in out and "prototype head" in out
    tuned = ModelStore().resolve("defect:2")
    assert 0.0 <= tuned.metrics["proto_test_accuracy"] <= 1.0
    assert main(["predict", "defect", "--model", "defect:1", "--images", str(parts / "new")]) != 0
    assert "self-supervised backbone" in capsys.readouterr().err


def test_int8_edge_version_agrees_with_its_parent(parts: Path, capsys) -> None:
    pytest.importorskip("onnxruntime")
    assert _train(parts, "train.epochs=1") == 0
    args = ["optimize", "defect:1", "--methods", "onnx-int8-static", "--target", "cpu"]
    guard = ["--tolerance", "1", "--min-gain", "-1"]  # register it whatever this CPU times
    assert main([*args, "--batch-sizes", "1,4", "--reps", "5", *guard]) == 0
    assert "registered: onnx-int8-static -> defect:2" in capsys.readouterr().out
    from abyssal.solutions.loading import load_model

    child = ModelStore().resolve("defect:2")
    assert child.config["optimization"]["method"] == "onnx-int8-static"
    assert child.config["optimization"]["parent"] == "defect:1"
    parent, edge = load_model("defect:1"), load_model("defect:2")
    images = sorted((parts / "new").glob("*.png"))
    p, e = parent.solution.predictor(parent), edge.solution.predictor(edge)
    items = [p.parse({"path": str(i)}) for i in images]
    assert torch.allclose(p.probabilities(items), e.probabilities(items), atol=0.25)
    pairs = zip(p.predict(items), e.predict(items), strict=True)
    assert np.mean([a["class"] == b["class"] for a, b in pairs]) >= 0.5
