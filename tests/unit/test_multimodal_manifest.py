"""The multimodal manifest and its audio: CSV and JSON-lines manifests read to samples (relative
paths, empty cells, renamed columns); every manifest error names the file, row and column;
``skip_bad`` keeps the good rows; images and audio decoded per sample; WAV files read to the
right float values, resampled and cut with warnings; the log-mel front end's shape, values,
tone placement and batch independence."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from abyssal.core.errors import ConfigError, DataError, MissingDependencyError
from abyssal.solutions.multimodal.audio import (
    frame_sizes,
    hz_to_mel,
    log_mel,
    mel_to_hz,
    read_audio,
)
from abyssal.solutions.multimodal.manifest import Sample, check_sample_files, read_manifest

wavfile = pytest.importorskip("scipy.io.wavfile")
Image = pytest.importorskip("PIL.Image")


def write_wav(path: Path, data: np.ndarray, rate: int = 8000) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    wavfile.write(path, rate, data)
    return path


def write_png(path: Path, size: tuple[int, int] = (4, 3)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (200, 10, 10)).save(path)
    return path


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def write_jsonl(path: Path, rows: list[object]) -> Path:
    return write(path, "\n".join(json.dumps(r) for r in rows) + "\n")


@pytest.fixture
def media(tmp_path: Path) -> Path:
    """A data folder with ``img/a.png``, ``img/b.png`` and ``wav/a.wav`` (8 kHz, 0.1 s)."""
    write_png(tmp_path / "img" / "a.png")
    write_png(tmp_path / "img" / "b.png")
    write_wav(tmp_path / "wav" / "a.wav", np.zeros(800, np.int16))
    return tmp_path


def raises_at(call, *, row: int | None, column: str | None, match: str) -> DataError:
    """Run ``call``, expecting a DataError at ``row`` / ``column`` whose text matches."""
    with pytest.raises(DataError, match=match) as info:
        call()
    error = info.value
    assert (error.row, error.column) == (row, column)
    if row is not None:
        assert f"row {row}" in str(error)
    if column is not None:
        assert f"column '{column}'" in str(error)
    return error


# -- reading manifests ---------------------------------------------------------------------------


def test_a_csv_manifest_gives_samples_with_paths_from_its_folder(media: Path) -> None:
    path = write(
        media / "train.csv",
        "id,text,image,audio,label,notes\n"
        'a,"a red fox, running",img/a.png,,fox,x\n'
        "\n"  # blank rows are not data rows
        "b,,img/b.png,wav/a.wav,owl,\n"
        ",  hello  ,,,fox\n",  # no id: the row number; a short row's last cell is empty
    )
    manifest = read_manifest(path)
    a, b, c = manifest.samples
    assert a == Sample("a", "a red fox, running", media / "img/a.png", None, "fox", 1, path)
    assert (b.text, b.image, b.audio, b.row) == (None, media / "img/b.png", media / "wav/a.wav", 2)
    assert (c.id, c.text, c.image, c.audio, c.row) == ("3", "hello", None, None, 3)
    assert manifest.modalities == ["text", "image", "audio"]
    assert manifest.classes == ["fox", "owl"]
    assert manifest.bad == [] and manifest.path == path


def test_a_jsonl_manifest_takes_nulls_missing_keys_and_integer_labels(media: Path) -> None:
    rows = [
        {"id": 7, "image": "img/a.png", "label": 1, "text": None},
        {"id": "x", "image": "img/b.png", "label": "0"},
    ]
    path = write_jsonl(media / "m.jsonl", rows[:1])
    path.write_text(path.read_text() + "\n   \n" + json.dumps(rows[1]) + "\n")  # a blank line
    manifest = read_manifest(path)
    assert [s.id for s in manifest.samples] == ["7", "x"]
    assert [s.row for s in manifest.samples] == [1, 2]  # blank lines are not rows
    assert [s.image for s in manifest.samples] == [media / "img/a.png", media / "img/b.png"]
    assert all(s.text is None and s.audio is None for s in manifest.samples)
    assert manifest.modalities == ["image"] and manifest.classes == ["0", "1"]


def test_ndjson_and_absolute_paths_are_read(media: Path, tmp_path: Path) -> None:
    elsewhere = write_wav(tmp_path / "far" / "away.wav", np.zeros(10, np.int16))
    path = write_jsonl(media / "deep" / "m.ndjson", [{"audio": str(elsewhere), "label": "a"}])
    assert read_manifest(path).samples[0].audio == elsewhere


def test_relative_paths_resolve_from_the_manifest_folder_not_the_working_one(
    media: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = write(media / "lists" / "m.csv", "image,label\n../img/a.png,fox\n")
    monkeypatch.chdir(tmp_path / "img")  # a folder where ../img/a.png would not mean the same
    assert read_manifest(path).samples[0].image == media / "lists" / "../img/a.png"


def test_columns_can_be_renamed_and_csv_headers_ignore_case(media: Path) -> None:
    path = write(media / "m.csv", "Key,Caption,Picture,Sound,Class\nk1,hi,img/a.png,wav/a.wav,c\n")
    manifest = read_manifest(
        path,
        text_column="caption",
        image_column="picture",
        audio_column="sound",
        label_column="class",
        id_column="key",
    )
    sample = manifest.samples[0]
    assert (sample.id, sample.text, sample.label) == ("k1", "hi", "c")
    assert sample.image == media / "img/a.png" and sample.audio == media / "wav/a.wav"


def test_labels_can_be_absent_or_empty_when_not_required(media: Path) -> None:
    no_column = write(media / "a.csv", "text\nhello\n")
    assert read_manifest(no_column, require_label=False).samples[0].label is None
    assert read_manifest(no_column, label_column=None).classes == []
    empty = write(media / "b.csv", "text,label\nhello,\nbye,x\n")
    manifest = read_manifest(empty, require_label=False)
    assert [s.label for s in manifest.samples] == [None, "x"] and manifest.classes == ["x"]


# -- manifest errors -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("m.tsv", "text\tlabel\nhi\tx\n", r"suffix '\.tsv'.*\.csv.*\.jsonl"),
        ("m", "text,label\nhi,x\n", "a name without a suffix"),
        ("m.csv", "", "the manifest is empty"),
        ("m.csv", "text,label\n", "no samples"),
        ("m.jsonl", "\n\n", "no samples"),
        ("m.csv", 'text,label\n"unclosed,x\n', "not valid CSV"),
        (
            "m.csv",
            "caption,label\nhi,x\n",
            r"none of the columns 'text', 'image', 'audio'.*caption",
        ),
        ("m.jsonl", '{"caption": "hi", "label": "x"}\n', "none of the columns"),
    ],
)
def test_file_level_errors_name_the_file(
    tmp_path: Path, name: str, content: str, match: str
) -> None:
    path = write(tmp_path / name, content)
    error = raises_at(lambda: read_manifest(path), row=None, column=None, match=match)
    assert str(error).startswith(str(path))


def test_a_missing_manifest_or_label_column_is_refused(tmp_path: Path) -> None:
    raises_at(lambda: read_manifest(tmp_path / "no.csv"), row=None, column=None, match="no such")
    path = write(tmp_path / "m.csv", "text,tag\nhi,x\n")
    raises_at(lambda: read_manifest(path), row=None, column="label", match="columns are: text, tag")


def test_undecodable_bytes_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_bytes(b"text,label\nok,x\ncaf\xe9,y\n")
    raises_at(lambda: read_manifest(path), row=None, column=None, match="line 3: byte 0xe9")


@pytest.mark.parametrize(
    ("lines", "row", "column", "match"),
    [
        (
            ['{"text": "a", "label": "x"}', '{"text": "b", "label": }'],
            2,
            None,
            "line 2: not valid JSON",
        ),
        (['{"text": "a", "label": "x"}', "", '["b", "y"]'], 2, None, "line 3: a list.*JSON object"),
        (['{"text": "a", "label": "x"}', '{"text": ["b"], "label": "y"}'], 2, "text", "a list"),
        (['{"text": "a", "label": true}'], 1, "label", "a boolean.*string or an integer"),
        (['{"text": "a", "label": "x"}', '{"text": " ", "label": "y"}'], 2, None, "no text, image"),
        (['{"text": "a", "label": "x"}', '{"text": "b", "label": ""}'], 2, "label", "empty label"),
        (['{"text": "a", "label": "x"}', '{"text": "b"}'], 2, "label", "empty label"),
        (['{"text": "a", "image": "no.png", "label": "x"}'], 1, "image", "no such image file"),
    ],
)
def test_jsonl_row_errors_name_the_row_and_column(
    tmp_path: Path, lines: list[str], row: int, column: str | None, match: str
) -> None:
    path = write(tmp_path / "m.jsonl", "\n".join(lines) + "\n")
    raises_at(lambda: read_manifest(path), row=row, column=column, match=match)


@pytest.mark.parametrize(
    ("rows", "row", "column", "match"),
    [
        (["a,,,x", ",,,y"], 2, None, "no text, image or audio: 'text', 'image', 'audio' all empty"),
        (["a,img/a.png,,x", "b,img/nope.png,,y"], 2, "image", r"no such image file: .*nope\.png"),
        (["a,,wav/nope.wav,x"], 1, "audio", r"no such audio file: .*nope\.wav"),
        (["a,,img,x"], 1, "audio", "is not a file"),  # a folder
        (["a,,,x", " , , ,y"], 2, None, "no text, image or audio"),  # blanks are empty
        (["a,,wav/a.wav,"], 1, "label", "empty label"),
        (["a,,,x,extra"], 1, None, "5 fields but the header has 4"),
    ],
)
def test_csv_row_errors_name_the_row_and_column(
    media: Path, rows: list[str], row: int, column: str | None, match: str
) -> None:
    path = write(media / "m.csv", "text,image,audio,label\n" + "\n".join(rows) + "\n")
    raises_at(lambda: read_manifest(path), row=row, column=column, match=match)


def test_a_duplicate_id_names_both_rows(media: Path) -> None:
    path = write(media / "m.csv", "ID,text,label\nq,a,x\nr,b,x\nq,c,y\n")
    raises_at(lambda: read_manifest(path), row=3, column="ID", match="id 'q' is also on row 1")
    numbered = write(media / "n.csv", "id,text,label\n,a,x\n1,b,x\n")  # row 1's id is "1"
    raises_at(lambda: read_manifest(numbered), row=2, column="id", match="also on row 1")


def test_skip_bad_keeps_the_good_rows_and_lists_the_bad(media: Path) -> None:
    rows = [
        {"id": "a", "image": "img/a.png", "label": "x"},
        {"id": "b", "audio": "wav/missing.wav", "label": "x"},
        "not json",
        {"id": "c", "text": "t", "label": ""},
        {"id": "a", "text": "again", "label": "y"},
        {"id": "d", "text": "kept", "label": "y"},
        {"id": "e", "label": "z"},
    ]
    lines = [r if isinstance(r, str) else json.dumps(r) for r in rows]
    path = write(media / "m.jsonl", "\n".join(lines) + "\n")
    manifest = read_manifest(path, skip_bad=True)
    assert [s.id for s in manifest.samples] == ["a", "d"]
    assert [s.row for s in manifest.samples] == [1, 6]
    assert [row for row, _ in manifest.bad] == [2, 3, 4, 5, 7]
    why = dict(manifest.bad)
    assert why[2].startswith("column 'audio': no such audio file")
    assert "not valid JSON" in why[3]
    assert why[4] == "column 'label': empty label; every sample needs a label"
    assert why[5] == "column 'id': id 'a' is also on row 1"
    assert why[7].startswith("no text, image or audio")
    assert manifest.modalities == ["text", "image"]  # the skipped audio row does not count
    assert manifest.classes == ["x", "y"]  # nor does the skipped label z


def test_skip_bad_with_no_good_row_left_is_an_error(media: Path) -> None:
    path = write(media / "m.csv", "text,audio,label\n,wav/a.wav,\n,nope.wav,x\n")
    error = raises_at(
        lambda: read_manifest(path, skip_bad=True), row=None, column=None, match="no row is usable"
    )
    assert "row 1 (column 'label': empty label" in str(error)
    assert "row 2 (column 'audio': no such audio file" in str(error)
    all_malformed = write(media / "m.jsonl", "{oops\n[1]\n")
    with pytest.raises(DataError, match=r"row 1 \(line 1: not valid JSON.*row 2 \(line 2: a list"):
        read_manifest(all_malformed, skip_bad=True)


def test_skip_bad_does_not_hide_file_level_errors(tmp_path: Path) -> None:
    path = write(tmp_path / "m.csv", "caption,label\nhi,x\n")
    with pytest.raises(DataError, match="none of the columns"):
        read_manifest(path, skip_bad=True)


# -- decoding a sample's files -------------------------------------------------------------------


def test_check_sample_files_decodes_image_and_audio(media: Path) -> None:
    write_wav(media / "wav" / "cd.wav", np.zeros(4410, np.int16), rate=44100)
    path = write(
        media / "m.csv", "image,audio,label\nimg/a.png,wav/a.wav,x\nimg/b.png,wav/cd.wav,y\n"
    )
    first, second = read_manifest(path).samples
    assert check_sample_files(first, sample_rate=8000) == []
    assert check_sample_files(second, sample_rate=8000) == [
        f"row 2, audio {media / 'wav/cd.wav'}: resampled from 44100 Hz to 8000 Hz"
    ]


def test_a_bad_file_is_reported_by_row_and_the_others_still_pass(media: Path) -> None:
    (media / "img" / "junk.png").write_bytes(b"not a png at all")
    good = (media / "img" / "a.png").read_bytes()
    (media / "img" / "cut.png").write_bytes(good[: len(good) // 2])
    (media / "wav" / "junk.wav").write_bytes(b"RIFX but not really")
    path = write(
        media / "m.csv",
        "image,audio,label\nimg/junk.png,,x\nimg/a.png,,x\nimg/cut.png,,x\n,wav/junk.wav,x\n",
    )
    errors: dict[int, str] = {}
    for sample in read_manifest(path).samples:
        try:
            check_sample_files(sample, sample_rate=8000)
        except DataError as e:
            assert e.path == str(path) and e.row == sample.row
            errors[sample.row] = str(e)
    assert sorted(errors) == [1, 3, 4]  # row 2 passed
    assert f"row 1: image {media / 'img/junk.png'}: cannot be read as an image" in errors[1]
    assert "cannot be read as an image" in errors[3]
    assert f"row 4: audio {media / 'wav/junk.wav'}: cannot be read as a WAV file" in errors[4]


# -- reading audio -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (np.array([0, 16384, -32768, 32767], np.int16), [0.0, 0.5, -1.0, 32767 / 32768]),
        (np.array([0, 128, 255, 64], np.uint8), [-1.0, 0.0, 127 / 128, -0.5]),
        (np.array([0, 2**30, -(2**31)], np.int32), [0.0, 0.5, -1.0]),
        (np.array([0.25, -0.75, 1.0], np.float32), [0.25, -0.75, 1.0]),
    ],
)
def test_pcm_and_float_samples_become_float32_in_unit_range(
    tmp_path: Path, data: np.ndarray, expected: list[float]
) -> None:
    x, notes = read_audio(write_wav(tmp_path / "a.wav", data), sample_rate=8000)
    assert x.dtype == np.float32 and notes == []
    np.testing.assert_allclose(x, expected, rtol=0, atol=1e-7)


def test_channels_are_mixed_to_mono_by_their_mean(tmp_path: Path) -> None:
    stereo = np.array([[16384, 8192], [-32768, 0], [0, 0]], np.int16)  # (T, C)
    x, _ = read_audio(write_wav(tmp_path / "s.wav", stereo), sample_rate=8000)
    np.testing.assert_allclose(x, [0.375, -0.5, 0.0], atol=1e-7)


def test_float_samples_beyond_one_are_clipped_with_a_warning(tmp_path: Path) -> None:
    x, notes = read_audio(
        write_wav(tmp_path / "f.wav", np.array([1.5, -0.5], np.float32)), sample_rate=8000
    )
    np.testing.assert_allclose(x, [1.0, -0.5])
    assert notes == ["float samples reach 1.5, beyond [-1, 1]: clipped"]


def test_resampling_44100_to_8000_keeps_duration_and_pitch(tmp_path: Path) -> None:
    t = np.arange(44100) / 44100
    tone = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)  # 1 s of 440 Hz
    x, notes = read_audio(write_wav(tmp_path / "t.wav", tone, 44100), sample_rate=8000)
    assert x.shape == (8000,) and x.dtype == np.float32
    assert notes == ["resampled from 44100 Hz to 8000 Hz"]
    spectrum = np.abs(np.fft.rfft(x))
    assert np.argmax(spectrum) == 440  # 1 s at 8 kHz: bin k is k Hz
    assert np.sqrt(np.mean(x[100:-100] ** 2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.01)


def test_max_seconds_cuts_with_a_warning(tmp_path: Path) -> None:
    three_seconds = write_wav(tmp_path / "long.wav", np.ones(24000, np.int16))
    x, notes = read_audio(three_seconds, sample_rate=8000, max_seconds=1)
    assert x.shape == (8000,) and notes == ["cut to the first 1 s (max_seconds)"]
    x, notes = read_audio(
        write_wav(tmp_path / "hi.wav", np.zeros(44100, np.int16), 44100),
        sample_rate=8000,
        max_seconds=0.5,
    )
    assert x.shape == (4000,) and len(notes) == 2
    x, notes = read_audio(three_seconds, sample_rate=8000, max_seconds=5)
    assert x.shape == (24000,) and notes == []


def test_scipy_warnings_about_the_file_are_passed_on(tmp_path: Path) -> None:
    whole = write_wav(tmp_path / "w.wav", np.arange(1000, dtype=np.int16)).read_bytes()
    cut = tmp_path / "cut.wav"
    cut.write_bytes(whole[:600])  # the header promises 2000 bytes of data
    x, notes = read_audio(cut, sample_rate=8000)
    assert 0 < len(x) < 1000 and any("EOF" in note for note in notes)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda p: None, "no such audio file"),
        (lambda p: p.write_bytes(b"ID3 an mp3, say"), r"cannot be read as a WAV file \(ValueError"),
        (lambda p: p.write_bytes(b""), "cannot be read as a WAV file"),
        (lambda p: p.write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt "), "cannot be read as a WAV file"),
        (lambda p: wavfile.write(p, 8000, np.zeros(0, np.int16)), "no samples"),
        (
            lambda p: wavfile.write(p, 8000, np.array([0.1, np.nan, np.inf], np.float32)),
            r"2 sample\(s\) are NaN or infinite \(the first at frame 1\)",
        ),
    ],
)
def test_unreadable_audio_is_a_data_error_naming_the_file(tmp_path: Path, make, match: str) -> None:
    path = tmp_path / "bad.wav"
    make(path)
    with pytest.raises(DataError, match=match) as info:
        read_audio(path, sample_rate=8000)
    assert info.value.path == str(path)


@pytest.mark.parametrize(
    ("rate", "seconds"), [(0, None), (8000.0, None), (8000, 0), (8000, float("nan"))]
)
def test_bad_audio_arguments_are_config_errors(tmp_path: Path, rate, seconds) -> None:
    path = write_wav(tmp_path / "a.wav", np.zeros(10, np.int16))
    with pytest.raises(ConfigError):
        read_audio(path, sample_rate=rate, max_seconds=seconds)


# -- log-mel -------------------------------------------------------------------------------------


def tone(freq: float, seconds: float = 0.5, rate: int = 16000) -> torch.Tensor:
    t = torch.arange(int(seconds * rate), dtype=torch.float64) / rate
    return (0.5 * torch.sin(2 * torch.pi * freq * t)).float()


def test_default_frames_are_25_ms_windows_every_10_ms() -> None:
    assert frame_sizes(16000) == (512, 400, 160)
    assert frame_sizes(8000) == (256, 200, 80)
    assert frame_sizes(44100) == (2048, 1102, 441)


def test_log_mel_shape_dtype_and_silence() -> None:
    out = log_mel(torch.zeros(2, 16000), 16000, backend="torch")
    assert out.shape == (2, 64, 101)  # 1 + 16000 // 160 frames
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, torch.full_like(out, float(np.log(1e-6))))
    noise = log_mel(
        torch.randn(3, 8000, generator=torch.Generator().manual_seed(0)),
        8000,
        n_mels=40,
        backend="torch",
    )
    assert noise.shape == (3, 40, 101) and torch.isfinite(noise).all()


def test_a_clip_shorter_than_half_a_window_is_padded() -> None:
    out = log_mel(torch.ones(1, 10), 16000, backend="torch")
    assert out.shape == (1, 64, 2) and torch.isfinite(out).all()  # 1 + 257 // 160 frames


@pytest.mark.parametrize("freq", [300.0, 1000.0, 3000.0, 6000.0])
def test_a_pure_tone_peaks_in_the_mel_band_nearest_its_frequency(freq: float) -> None:
    n_mels, rate = 64, 16000
    out = log_mel(tone(freq)[None], rate, n_mels, backend="torch")[0]  # (n_mels, frames)
    centres = mel_to_hz(torch.linspace(hz_to_mel(0.0), hz_to_mel(rate / 2), n_mels + 2))[1:-1]
    nearest = int(torch.argmin((centres - freq).abs()))
    assert int(out.mean(dim=1).argmax()) == nearest
    assert out.mean(dim=1)[nearest] > out.mean(dim=1).median() + 5  # well above the rest


def test_rows_of_a_batch_are_independent() -> None:
    a, b = tone(440.0), torch.randn(8000, generator=torch.Generator().manual_seed(1))
    both = log_mel(torch.stack([a, b]), 16000, backend="torch")
    torch.testing.assert_close(both[0], log_mel(a[None], 16000, backend="torch")[0])
    torch.testing.assert_close(both[1], log_mel(b[None], 16000, backend="torch")[0])


def test_log_mel_refuses_bad_arguments() -> None:
    x = torch.zeros(1, 1600)
    with pytest.raises(ConfigError, match="f_max"):
        log_mel(x, 16000, f_max=9000)
    with pytest.raises(ConfigError, match="win_length 600 is longer than n_fft 512"):
        log_mel(x, 16000, n_fft=512, win_length=600)
    with pytest.raises(ConfigError, match="backend"):
        log_mel(x, 16000, backend="librosa")


@pytest.mark.skipif(
    importlib.util.find_spec("torchaudio") is not None, reason="torchaudio installed"
)
def test_the_torchaudio_backend_says_which_extra_it_needs() -> None:
    with pytest.raises(MissingDependencyError, match=r"abyssal\[multimodal\]"):
        log_mel(torch.zeros(1, 1600), 16000, backend="torchaudio")
    assert log_mel(torch.zeros(1, 1600), 16000).shape == (1, 64, 11)  # auto: plain torch


def test_torchaudio_and_plain_torch_agree() -> None:
    pytest.importorskip("torchaudio")
    x = torch.randn(2, 16000, generator=torch.Generator().manual_seed(2))
    ours = log_mel(x, 16000, backend="torch")
    theirs = log_mel(x, 16000, backend="torchaudio")
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)
