"""The multimodal solution's config and data: every invalid setting refused naming its key;
manifests read, decoded and split stratified, disjoint and by seed; a test manifest as the test
split (an unseen test label refused by name); bad rows left out and listed with ``skip_bad``;
text ignored with ``model.text=none``; the fingerprint follows the labels; ``split.csv``."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from abyssal.core.errors import ConfigError, DataError
from abyssal.solutions.multimodal.config import (
    MultimodalConfig,
    MultimodalDataConfig,
    MultimodalModelConfig,
)
from abyssal.solutions.multimodal.data import SPLITS, prepare_multimodal_data

wavfile = pytest.importorskip("scipy.io.wavfile")
Image = pytest.importorskip("PIL.Image")
transformers = pytest.importorskip("transformers")

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "red", "fox", "grey", "owl"]
TEXTS = {"fox": "a red fox", "owl": "a grey owl"}
SMALL = dict(image_size=8, sample_rate=8000, n_mels=16, max_seconds=1.0, max_tokens=8)
HEADER = "id,text,image,audio,label"


@pytest.fixture
def tokenizer(monkeypatch: pytest.MonkeyPatch):
    """The text model seam: ``minilm`` resolves to a made-up folder with a tiny word tokenizer."""
    from abyssal.solutions.text import model as text_model

    tiny = transformers.BertTokenizerFast(vocab={w: i for i, w in enumerate(WORDS)})
    monkeypatch.setattr(text_model, "resolve_base", lambda base: Path("/models") / base)
    monkeypatch.setattr(text_model, "load_tokenizer", lambda folder, kind: tiny)
    return tiny


@pytest.fixture
def media(tmp_path: Path) -> Path:
    """A folder with two small PNGs, a 0.1 s 8 kHz WAV and a PNG that is not one."""
    (tmp_path / "img").mkdir()
    Image.new("RGB", (10, 10), (200, 10, 10)).save(tmp_path / "img" / "fox.png")
    Image.new("RGB", (10, 10), (90, 90, 90)).save(tmp_path / "img" / "owl.png")
    (tmp_path / "img" / "broken.png").write_bytes(b"not a png at all")
    (tmp_path / "wav").mkdir()
    t = np.arange(800) / 8000
    wavfile.write(tmp_path / "wav" / "hoot.wav", 8000, (np.sin(3e3 * t) * 2e4).astype(np.int16))
    return tmp_path


def sample_rows(n: int, prefix: str = "s", labels: tuple[str, ...] = ("fox", "owl")) -> list[str]:
    """``n`` rows, classes taking turns; text+image, image+audio and text+audio in turn."""
    rows = []
    for i in range(n):
        label = labels[i % len(labels)]
        text, audio = TEXTS.get(label, "a fox"), "wav/hoot.wav"
        image = f"img/{label if label in TEXTS else 'fox'}.png"
        if i % 3 == 0:
            audio = ""
        elif i % 3 == 1:
            text = ""
        else:
            image = ""
        rows.append(f"{prefix}{i},{text},{image},{audio},{label}")
    return rows


def write_manifest(folder: Path, name: str, rows: list[str]) -> Path:
    path = folder / name
    path.write_text("\n".join([HEADER, *rows]) + "\n")
    return path


def data_config(path: Path, **overrides) -> MultimodalDataConfig:
    return MultimodalDataConfig(path=str(path), **{**SMALL, **overrides})


# --- config -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: MultimodalDataConfig(val_frac=0), "data.val_frac must be between 0 and 1"),
        (lambda: MultimodalDataConfig(test_frac=1.5), "data.test_frac must be between 0 and 1"),
        (lambda: MultimodalDataConfig(val_frac=0.5, test_frac=0.5), "must leave samples"),
        (lambda: MultimodalDataConfig(batch_size=0), "data.batch_size must be >= 1, got 0"),
        (lambda: MultimodalDataConfig(image_size=4), "data.image_size must be >= 8, got 4"),
        (lambda: MultimodalDataConfig(image_channels=2), "data.image_channels must be 1 or 3"),
        (lambda: MultimodalDataConfig(max_seconds=0), "data.max_seconds must be > 0"),
        (lambda: MultimodalDataConfig(text_column="label"), "must all differ"),
        (lambda: MultimodalModelConfig(fusion="sum"), "model.fusion must be one of cross_att"),
        (
            lambda: MultimodalModelConfig(image="resnet18"),
            "model.image must be small, none, torchvision:NAME or timm:NAME, got 'resnet18'",
        ),
        (lambda: MultimodalModelConfig(image="timm:"), "model.image must be small"),
        (
            lambda: MultimodalModelConfig(audio="wav2vec"),
            "model.audio must be conv, transformer, pretrained:DIR or none, got 'wav2vec'",
        ),
        (lambda: MultimodalModelConfig(audio="pretrained:"), "model.audio must be conv"),
        (lambda: MultimodalModelConfig(image_weights="w.bin"), "model.image_weights must be"),
        (
            lambda: MultimodalModelConfig(image="none", image_weights="w.pt"),
            "model.image_weights needs an image encoder",
        ),
        (lambda: MultimodalModelConfig(dim=130, heads=4), "model.dim (130) must be a multiple"),
        (lambda: MultimodalModelConfig(modality_dropout=1.0), "model.modality_dropout must be"),
        (lambda: MultimodalModelConfig(layers=0), "model.layers must be >= 1, got 0"),
        (
            lambda: MultimodalModelConfig(text="none", image="none", audio="none"),
            "are all none",
        ),
        (lambda: MultimodalConfig(task="ranking"), "task must be classify or retrieval"),
        (
            lambda: MultimodalConfig(task="retrieval", model=MultimodalModelConfig(text="none")),
            "model.text and model.image need encoders",
        ),
        (lambda: MultimodalModelConfig(rerank_mix=1.5), "rerank_mix in"),
        (lambda: MultimodalDataConfig(format="tsv"), "data.format must be auto, csv or jsonl"),
    ],
)
def test_invalid_settings_are_refused_naming_the_key(make, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        make()


def test_defaults_and_the_input_options() -> None:
    cfg = MultimodalConfig()
    assert (cfg.task, cfg.model.fusion, cfg.model.text, cfg.model.audio) == (
        "classify",
        "cross_attention",
        "minilm",
        "conv",
    )
    assert (cfg.train.epochs, cfg.train.lr, cfg.train.patience) == (20, 1e-3, 5)
    options = MultimodalDataConfig(image_size=16, n_mels=32).input_options()
    assert (options.image_size, options.n_mels, options.sample_rate) == (16, 32, 16000)
    MultimodalModelConfig(image="torchvision:resnet18", audio="pretrained:/m/wav2vec")  # valid
    MultimodalDataConfig(val_frac=0.5, test_frac=0.5, test_path="t.csv")  # test_frac unused


def test_no_path_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"data\.path is required: a CSV or JSONL manifest"):
        prepare_multimodal_data(MultimodalDataConfig(), MultimodalModelConfig(), progress=False)


# --- splits -------------------------------------------------------------------------------------


def test_splits_are_stratified_disjoint_and_seeded(media: Path, tokenizer) -> None:
    path = write_manifest(media, "m.csv", sample_rows(20))
    data = prepare_multimodal_data(
        data_config(path, val_frac=0.2, test_frac=0.2), MultimodalModelConfig(), progress=False
    )
    assert data.classes == ["fox", "owl"] and data.modalities == ["text", "image", "audio"]
    assert data.text_base == Path("/models/minilm")
    assert [data.counts(s).tolist() for s in SPLITS] == [[6, 6], [2, 2], [2, 2]]
    together = np.concatenate([data.rows(s) for s in SPLITS])
    assert sorted(together.tolist()) == list(range(20))  # disjoint and complete
    for s in SPLITS:
        assert data.rows(s).dtype == np.int64 and (np.diff(data.rows(s)) > 0).all()
    assert data.inputs.ids[:3] == ["s0", "s1", "s2"] and data.inputs.tokens.shape[0] == 20
    assert data.inputs.present.sum(axis=0).tolist() == [13, 14, 13]
    assert "20 samples; split seed 0: 12 train, 4 val, 4 test" in data.description
    assert "modalities: text 13, image 14, audio 13; classes: fox 10, owl 10" in data.description

    again = prepare_multimodal_data(
        data_config(path, val_frac=0.2, test_frac=0.2), MultimodalModelConfig(), progress=False
    )
    other = prepare_multimodal_data(
        data_config(path, val_frac=0.2, test_frac=0.2, split_seed=1),
        MultimodalModelConfig(),
        progress=False,
    )
    assert all(np.array_equal(data.rows(s), again.rows(s)) for s in SPLITS)
    assert data.fingerprint == again.fingerprint
    assert not np.array_equal(data.rows("train"), other.rows("train"))
    assert data.fingerprint != other.fingerprint


def test_a_test_manifest_is_the_test_split(media: Path, tokenizer) -> None:
    train = write_manifest(media, "train.csv", sample_rows(10))
    test = write_manifest(media, "test.csv", sample_rows(4, prefix="t"))
    cfg = data_config(train, test_path=str(test), val_frac=0.2)
    data = prepare_multimodal_data(cfg, MultimodalModelConfig(), progress=False)
    assert data.rows("test").tolist() == [10, 11, 12, 13]
    assert [data.inputs.ids[k] for k in data.rows("test")] == ["t0", "t1", "t2", "t3"]
    assert data.counts("val").tolist() == [1, 1] and data.counts("train").tolist() == [4, 4]
    assert sorted(np.concatenate([data.rows("train"), data.rows("val")]).tolist()) == list(
        range(10)
    )
    assert f"+ test {test}" in data.description


def test_a_test_label_without_training_samples_is_refused(media: Path, tokenizer) -> None:
    train = write_manifest(media, "train.csv", sample_rows(6))
    test = write_manifest(media, "test.csv", sample_rows(3, prefix="t", labels=("fox", "cat")))
    cfg = data_config(train, test_path=str(test))
    with pytest.raises(DataError, match=r"test\.csv, row 2: label 'cat' has no training sample"):
        prepare_multimodal_data(cfg, MultimodalModelConfig(), progress=False)


def test_too_few_samples_to_split_is_stratified_splits_error(media: Path, tokenizer) -> None:
    path = write_manifest(media, "m.csv", sample_rows(2))
    with pytest.raises(DataError, match="too few samples for the split"):
        prepare_multimodal_data(data_config(path), MultimodalModelConfig(), progress=False)


# --- bad rows and ignored modalities ------------------------------------------------------------


def test_skip_bad_leaves_out_an_unreadable_image_and_lists_it(media: Path, tokenizer) -> None:
    rows = sample_rows(12)
    rows[4] = "s4,,img/broken.png,wav/hoot.wav,owl"  # the 5th data row
    rows[7] = "s7,,img/gone.png,,owl"  # a missing file: refused by the manifest reader
    path = write_manifest(media, "m.csv", rows)
    with pytest.raises(DataError, match=r"m\.csv, row 8, column 'image': no such image file"):
        prepare_multimodal_data(data_config(path), MultimodalModelConfig(), progress=False)
    unreadable = write_manifest(media, "u.csv", rows[:7])
    with pytest.raises(DataError, match=r"u\.csv, row 5: image .*broken\.png: not an image Pillow"):
        prepare_multimodal_data(data_config(unreadable), MultimodalModelConfig(), progress=False)

    data = prepare_multimodal_data(
        data_config(path, skip_bad=True), MultimodalModelConfig(), progress=False
    )
    assert len(data.inputs) == 10 and "s4" not in data.inputs.ids and "s7" not in data.inputs.ids
    assert [(Path(f).name, row) for f, row, _ in data.bad] == [("m.csv", 8), ("m.csv", 5)]
    assert "gone.png" in data.bad[0][2] and "not an image Pillow can read" in data.bad[1][2]
    assert "2 bad rows left out (m.csv row 8, m.csv row 5)" in data.description
    assert "s4" not in data.run_files()["split.csv"]


def test_text_is_ignored_without_a_text_model(
    media: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from abyssal.solutions.text import model as text_model

    def no_text_model(base: str) -> Path:
        raise AssertionError("no text model is needed")

    monkeypatch.setattr(text_model, "resolve_base", no_text_model)
    path = write_manifest(media, "m.csv", sample_rows(12))
    model = MultimodalModelConfig(text="none")
    with caplog.at_level(logging.WARNING):
        data = prepare_multimodal_data(data_config(path), model, progress=False)
    warnings = [r.getMessage() for r in caplog.records if "model.text=none" in r.getMessage()]
    assert warnings == ["model.text=none: the text of 8 samples is ignored"]
    assert data.modalities == ["image", "audio"] and data.text_base is None
    assert data.inputs.tokens is None and not data.inputs.present[:, 0].any()

    only_text = write_manifest(media, "t.csv", [*sample_rows(12)[1:], "x,a red fox,,,fox"])
    with pytest.raises(DataError, match=r"t\.csv, row 12: .* has only text \(model\.text=none\)"):
        prepare_multimodal_data(data_config(only_text), model, progress=False)
    data = prepare_multimodal_data(data_config(only_text, skip_bad=True), model, progress=False)
    assert len(data.inputs) == 11 and data.bad[0][1] == 12


# --- lineage and run files ----------------------------------------------------------------------


def test_the_fingerprint_follows_the_labels(media: Path, tokenizer) -> None:
    rows = sample_rows(12)
    first = prepare_multimodal_data(
        data_config(write_manifest(media, "a.csv", rows)), MultimodalModelConfig(), progress=False
    )
    rows[0] = rows[0].replace(",fox", ",owl")
    rows[1] = rows[1].replace(",owl", ",fox")  # the same class sizes, so the same split sizes
    second = prepare_multimodal_data(
        data_config(write_manifest(media, "b.csv", rows)), MultimodalModelConfig(), progress=False
    )
    assert len(first.fingerprint) == 16 and first.fingerprint != second.fingerprint


def test_run_files_list_every_sample_with_its_split_and_modalities(media: Path, tokenizer) -> None:
    path = write_manifest(media, "m.csv", sample_rows(9))
    data = prepare_multimodal_data(data_config(path), MultimodalModelConfig(), progress=False)
    lines = data.run_files()["split.csv"].splitlines()
    assert lines[0] == "id,row,label,split,text,image,audio" and len(lines) == 10
    where = {k: s for s in SPLITS for k in data.rows(s).tolist()}
    assert lines[1] == f"s0,1,fox,{where[0]},1,1,0"
    assert lines[2] == f"s1,2,owl,{where[1]},0,1,1"
    assert lines[3] == f"s2,3,fox,{where[2]},1,0,1"
