"""The spoken-and-written digit pairs of ``benchmarks/multimodal_data.py`` on a tiny fake FSDD:
FSDD's test convention, pairs of one digit, images split with no overlap, degradations that
change the data, manifests the multimodal reader takes (benchmarks/ is not a package: the
module is loaded from its file)."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from abyssal.solutions.multimodal.manifest import read_manifest

pytest.importorskip("sklearn.datasets")
wavfile = pytest.importorskip("scipy.io.wavfile")
pytest.importorskip("PIL.Image")

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def pairs():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import multimodal_data

        yield multimodal_data
    finally:
        sys.path.remove(str(BENCHMARKS))


@pytest.fixture
def fsdd(tmp_path: Path) -> Path:
    """Digits 3 and 7, two speakers, indices 0-6: 28 recordings (20 test, 8 train)."""
    root = tmp_path / "fsdd" / "recordings"
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for digit in (3, 7):
        for speaker in ("ann", "bo"):
            for index in range(7):
                samples = (rng.normal(0, 3000, 800)).astype(np.int16)
                wavfile.write(root / f"{digit}_{speaker}_{index}.wav", 8000, samples)
    (root / "notes.txt").write_text("not a recording")
    return tmp_path / "fsdd"


def rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_pairs_follow_fsdd_test_convention_and_never_share_an_image(
    pairs, fsdd: Path, tmp_path: Path
) -> None:
    from sklearn.datasets import load_digits

    out = tmp_path / "pairs"
    summary = pairs.build(fsdd, out, pairs.PairOptions(seed=1))
    train, test = rows(out / "train.csv"), rows(out / "test.csv")
    assert summary["recordings"] == {"train": 8, "test": 20} and len(train) == 8 and len(test) == 20
    assert all(int(r["id"].rsplit("_", 1)[1]) < 5 for r in test)
    assert all(int(r["id"].rsplit("_", 1)[1]) >= 5 for r in train)
    target = load_digits().target
    for r in train + test:  # the image shows the recording's digit
        assert int(r["label"]) == int(r["id"][0]) == target[int(r["digits_index"])]
    assert not {r["digits_index"] for r in train} & {r["digits_index"] for r in test}
    manifest = read_manifest(out / "test.csv")
    assert manifest.modalities == ["image", "audio"] and manifest.classes == ["3", "7"]
    assert json.loads((out / "pairs.json").read_text())["options"]["seed"] == 1
    original = wavfile.read(fsdd / "recordings" / "3_ann_0.wav")[1]
    noisy = wavfile.read(out / "audio" / "3_ann_0.wav")[1]
    assert noisy.shape == original.shape and not np.array_equal(noisy, original)


def test_degradations_are_seeded_and_scaled(pairs) -> None:
    image = np.full((8, 8), 16.0)
    calm = pairs.PairOptions(image_noise=0.0, occlude=0.0, image_size=16)
    clean = pairs.degrade_image(image, calm, np.random.default_rng(0))
    assert clean.shape == (16, 16) and (clean == 255).all()
    hidden = pairs.degrade_image(image, pairs.PairOptions(image_noise=0.0, occlude=1.0),
                                 np.random.default_rng(0))  # fmt: skip
    assert not hidden.any()
    x = (np.sin(np.arange(8000) / 5.0) * 10000).astype(np.int16)
    a = pairs.degrade_audio(x, 0.0, np.random.default_rng(3))
    assert np.array_equal(a, pairs.degrade_audio(x, 0.0, np.random.default_rng(3)))
    noise = a.astype(float) - x
    assert np.mean(noise**2) == pytest.approx(np.mean(x.astype(float) ** 2), rel=0.1)  # 0 dB


def test_a_folder_without_recordings_is_refused(pairs, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no FSDD recordings"):
        pairs.fsdd_recordings(tmp_path)
