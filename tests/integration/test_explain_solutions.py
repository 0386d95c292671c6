"""``Solution.explain`` on small trained versions, loaded back from the store as an audit would:
tabular (classification and regression), fraud, defect, nodule and text. Each explains three
held-out predictions with finite scores and a PNG apiece; the global importance covers the
solution's features where it has one."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from abyssal.cli.main import main
from abyssal.core.store import ModelStore
from abyssal.solutions.loading import LoadedModel, load_model
from abyssal.train.api import train

pytest.importorskip("captum")
pytest.importorskip("matplotlib")

ROOT = Path(__file__).resolve().parents[2]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def explain(loaded: LoadedModel, out: Path, n: int = 3) -> Any:
    data = loaded.solution.prepare(loaded.cfg)
    ex = loaded.solution.explain(loaded.cfg, loaded.model, data, n=n, out=out)
    assert ex.folder == out and len(ex.items) == n
    for item in ex.items:
        assert item.scores and all(math.isfinite(v) for v in item.scores.values()), item
        assert item.image is not None and item.image.parent == out
        assert item.image.read_bytes()[:8] == PNG_MAGIC
    assert all(math.isfinite(v) for v in ex.global_importance.values())
    json.dumps(ex.to_dict())  # JSON-ready for the audit report
    assert ex.summary().startswith(f"{ex.method}: {n} predictions explained")
    assert not loaded.model.training  # left as it was
    return ex


def test_tabular_rows_are_explained_by_their_columns(
    tabular_model: tuple[Path, Path], tmp_path: Path
) -> None:
    home, _ = tabular_model
    loaded = load_model("tabular:1", store=ModelStore(home))
    ex = explain(loaded, tmp_path / "tabular")
    columns = set(loaded.spec["schema"]["numeric"]) | set(loaded.spec["schema"]["categorical"])
    assert "size_band" in columns  # a categorical column: its embedding is attributed too
    assert ex.global_metric == "test_auroc" and set(ex.global_importance) == columns
    drops = list(ex.global_importance.values())
    assert drops == sorted(drops, reverse=True)
    classes = loaded.spec["preprocessing"]["target"]["classes"]
    for item in ex.items:
        assert item.item.startswith("row ") and {item.prediction, item.label} <= set(classes)
        assert len(item.scores) == 10 and set(item.scores) <= columns
    assert (tmp_path / "tabular" / "permutation_importance.png").is_file()


def test_tabular_attributions_add_up_to_the_regression_output(tmp_path: Path) -> None:
    overrides = ["data.source=diabetes", "train.epochs=2", "train.progress=false"]
    outcome = train("tabular", None, [*overrides, "baselines=false", "data.task=regression"])
    loaded = load_model(outcome.version.ref)
    data = loaded.solution.prepare(loaded.cfg)
    ex = loaded.solution.explain(loaded.cfg, loaded.model, data, n=3, out=tmp_path / "reg")
    assert ex.global_metric == "test_rmse" and len(ex.global_importance) == 10
    for item in ex.items:
        assert isinstance(item.prediction, float) and isinstance(item.label, float)
        # completeness: the note's output minus baseline is the sum of every column's score
        parts = dict(p.rsplit(" ", 1) for p in item.note.split(", "))
        gap = float(parts["standardised prediction"]) - float(parts["baseline"])
        assert float(parts["attributions sum to"]) == pytest.approx(gap, abs=0.02)


def test_fraud_accounts_are_explained_by_their_neighbours_attention(
    fraud_model: tuple[Path, Path], tmp_path: Path
) -> None:
    home, _ = fraud_model
    loaded = load_model("fraud:1", store=ModelStore(home))
    ex = explain(loaded, tmp_path / "fraud")
    assert ex.global_metric == "test_auprc"
    assert set(ex.global_importance) == set(loaded.spec["feature_names"])
    risks = [item.prediction for item in ex.items]
    assert risks == sorted(risks, reverse=True) and all(0 <= r <= 1 for r in risks)
    for item in ex.items:
        assert item.item.startswith("user ") and item.label in (0, 1)
        assert all(0 <= w <= 1 for w in item.scores.values())
        assert item.note.startswith("own features (gradient x input): ")
    assert any("suspected rings among accounts with risk >=" in line for line in ex.extras)


def test_defect_images_get_grad_cam_pictures(tmp_path: Path) -> None:
    parts = tmp_path / "parts"
    options = ["images_per_class=8", "size=32", "new_images=2", "seed=0"]
    assert main(["generate", "defect", "--out", str(parts), *options]) == 0
    fast = ["data.image_size=32", "model.backbone=resnet18", "train.epochs=1", "data.workers=0"]
    config = ROOT / "configs" / "defect" / "quickstart.yaml"
    args = ["train", "defect", "--config", str(config), f"data.path={parts / 'images'}"]
    assert main([*args, *fast, "train.progress=false", "data.batch_size=8"]) == 0
    loaded = load_model("defect:1")
    ex = explain(loaded, tmp_path / "defect")
    assert ex.global_importance == {} and "pixels are not features" in ex.extras[0]
    for item in ex.items:
        heat = sum(item.scores.values())  # shares of the heat: 1, or 0 for a map without any
        assert heat == pytest.approx(1.0, abs=1e-6) or heat == 0.0
        assert item.prediction in loaded.spec["classes"] and item.note.startswith("p(")


def test_nodules_get_saliency_pictures_and_attribute_attributions(tmp_path: Path) -> None:
    pytest.importorskip("nibabel")
    from abyssal.solutions.nodule.sample import NoduleSampleConfig, generate_sample

    sample = tmp_path / "nodules"
    generate_sample(NoduleSampleConfig(nodules=40, patients=20, size=24, new_volumes=1), sample)
    tiny = ["data.cube=16", "data.voxel_mm=2.5", "model.width=4", "train.epochs=1"]
    config = ROOT / "configs" / "nodule" / "quickstart.yaml"
    outcome = train("nodule", config, [f"data.path={sample}", *tiny, "train.progress=false"])
    loaded = load_model(outcome.version.ref)
    ex = explain(loaded, tmp_path / "nodule")
    attributes = set(loaded.spec["attributes"])
    assert ex.global_metric == "test_auroc" and set(ex.global_importance) == attributes
    for item in ex.items:
        assert set(item.scores) <= attributes and item.label in ("benign", "malignant")
    lines = [line for line in ex.extras if line.startswith("nodule ")]
    assert len(lines) == 3 and all("p(malignant)" in line and "mm" in line for line in lines)


def test_texts_are_explained_by_their_tokens(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    from tests.unit.tiny_text import tiny_text_overrides

    outcome = train("text", None, tiny_text_overrides(tmp_path, "train.epochs=1"))
    loaded = load_model(outcome.version.ref)
    ex = explain(loaded, tmp_path / "text")
    assert ex.global_importance == {} and ex.extras[0].startswith("no global permutation")
    for item in ex.items:
        assert item.item.startswith("line ") and item.note.startswith("text: ")
        assert item.prediction in loaded.spec["classes"]
        assert not {"[CLS]", "[SEP]", "[PAD]"} & set(item.scores)
    assert np.isfinite([v for item in ex.items for v in item.scores.values()]).all()
