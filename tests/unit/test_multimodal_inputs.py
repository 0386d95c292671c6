"""Decoding a manifest's samples: token ids, pixels and log-mel spectrograms padded and flagged
per sample; grey images repeated to colour; resampled audio noted; long texts cut by the
tokenizer; a file that cannot be decoded named by row, or left out with ``skip_bad``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from abyssal.core.errors import ConfigError, DataError
from abyssal.solutions.multimodal.inputs import InputOptions, decode_samples
from abyssal.solutions.multimodal.manifest import read_manifest

wavfile = pytest.importorskip("scipy.io.wavfile")
Image = pytest.importorskip("PIL.Image")
transformers = pytest.importorskip("transformers")

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "red", "fox", "grey", "owl", "sings"]
OPTIONS = InputOptions(image_size=8, sample_rate=8000, n_mels=16, max_tokens=6)


@pytest.fixture(scope="module")
def tokenizer():
    return transformers.BertTokenizerFast(vocab={w: i for i, w in enumerate(WORDS)})


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """Four rows: text+image, image+audio (16 kHz: resampled), text only (long), audio only."""
    (tmp_path / "img").mkdir()
    Image.new("RGB", (12, 10), (200, 10, 10)).save(tmp_path / "img" / "fox.png")
    Image.new("L", (9, 9), 90).save(tmp_path / "img" / "owl.png")
    (tmp_path / "wav").mkdir()
    t = np.arange(16000 // 4) / 16000
    wavfile.write(tmp_path / "wav" / "owl.wav", 16000, (np.sin(2e3 * t) * 3e4).astype(np.int16))
    wavfile.write(tmp_path / "wav" / "hum.wav", 8000, np.zeros(800, np.int16))
    (tmp_path / "m.csv").write_text(
        "id,text,image,audio,label\n"
        "1,a red fox,img/fox.png,,fox\n"
        "2,,img/owl.png,wav/owl.wav,owl\n"
        "3,a grey owl sings a a a a,,,owl\n"
        "4,,,wav/hum.wav,\n"
    )
    return tmp_path / "m.csv"


def test_every_modality_is_decoded_padded_and_flagged(data: Path, tokenizer) -> None:
    manifest = read_manifest(data, require_label=False)
    out = decode_samples(manifest.samples, ["fox", "owl"], OPTIONS, tokenizer=tokenizer)
    assert out.ids == ["1", "2", "3", "4"] and out.labels.tolist() == [0, 1, 1, -1]
    assert out.present.tolist() == [
        [True, True, False],
        [False, True, True],
        [True, False, False],
        [False, False, True],
    ]
    assert out.images.shape == (4, 3, 8, 8) and out.images.dtype == np.uint8
    assert (out.images[0, 0] > 150).all() and (out.images[0, 1] < 50).all()  # red
    assert (out.images[1] == 90).all()  # grey, repeated to three channels
    assert not out.images[2:].any()  # no image: zeros
    # 0.25 s at 8 kHz (resampled from 16 kHz), 10 ms hop: 1 + 2000 // 80 frames
    assert out.mel_lengths.tolist() == [0, 26, 0, 11] and out.mels.shape == (4, 16, 26)
    assert not out.mels[3, :, 11:].any() and out.mels[1].std() > 0
    assert out.token_lengths.tolist() == [5, 0, 6, 0]  # [CLS] a red fox [SEP]; cut to 6
    assert out.tokens[0, :5].tolist() == [2, 5, 6, 7, 3] and out.tokens[0, 5] == 0  # padded
    assert out.tokens[2, -1] == 3  # the cut text still ends with [SEP]
    assert any("resampled from 16000 Hz to 8000 Hz" in n for n in out.notes)
    assert any("1 text(s) longer than 6 tokens were cut" in n for n in out.notes)


def test_a_modality_no_sample_has_gets_no_array(data: Path, tokenizer, tmp_path: Path) -> None:
    only_text = tmp_path / "t.csv"
    only_text.write_text("text,label\na red fox,fox\na grey owl,owl\n")
    out = decode_samples(read_manifest(only_text).samples, ["fox", "owl"], OPTIONS,
                         tokenizer=tokenizer)  # fmt: skip
    assert out.images is None and out.mels is None and out.mel_lengths is None
    assert out.present[:, 0].all() and out.tokens.shape == (2, 5)
    with pytest.raises(ConfigError, match="no tokenizer"):
        decode_samples(read_manifest(only_text).samples, ["fox", "owl"], OPTIONS)


def test_a_file_that_cannot_be_decoded_names_its_row_or_is_left_out(data: Path, tokenizer) -> None:
    (data.parent / "img" / "owl.png").write_bytes(b"not a png")
    samples = read_manifest(data, require_label=False).samples
    with pytest.raises(DataError, match=r"image .*owl\.png") as e:
        decode_samples(samples, ["fox", "owl"], OPTIONS, tokenizer=tokenizer)
    assert e.value.row == 2 and e.value.path == str(data)
    out = decode_samples(samples, ["fox", "owl"], OPTIONS, tokenizer=tokenizer, skip_bad=True)
    assert out.ids == ["1", "3", "4"] and [row for row, _ in out.bad] == [2]
    assert out.mel_lengths.tolist() == [0, 0, 11]


def test_an_unknown_label_and_bad_options_are_refused(data: Path, tokenizer) -> None:
    samples = read_manifest(data, require_label=False).samples
    with pytest.raises(DataError, match="label 'owl' is not one of the classes"):
        decode_samples(samples, ["fox"], OPTIONS, tokenizer=tokenizer)
    with pytest.raises(ConfigError, match="image_channels must be 1 or 3"):
        InputOptions(image_channels=2)
    with pytest.raises(ConfigError, match="n_mels must be > 0"):
        InputOptions(n_mels=0)
    grey = decode_samples(
        samples, ["fox", "owl"], InputOptions(image_size=8, image_channels=1, sample_rate=8000,
                                              n_mels=16), tokenizer=tokenizer,
    )  # fmt: skip
    assert grey.images.shape == (4, 1, 8, 8)
