"""Spoken and written digits paired by class, each modality degraded so that neither alone is
enough: the AV-MNIST protocol (Vielzeuf et al., "CentralNet", ECCV workshops 2018) on data that
can be had here. Writes two manifests the multimodal solution reads.

- Audio: the Free Spoken Digit Dataset (FSDD: ``recordings/<digit>_<speaker>_<index>.wav``, 8 kHz;
  its own test convention: indices 0-4 of each digit and speaker are the test set), with white
  noise added at ``--snr-db`` (per recording, from its own power).
- Images: scikit-learn's bundled handwritten digits (1,797 images of 8 x 8 pixels, 0-16),
  scaled to 0-255 and enlarged to 32 x 32, with Gaussian noise of ``--image-noise`` (a share of
  the 0-255 range) and a random ``--occlude`` share of the pixels blacked out. The images are
  split by class with a seed (the same share as FSDD's test set), so no image is in both sets.
- Pairs: every recording gets an image of the same digit from its own split (drawn with a seed;
  images are reused when a class has fewer images than recordings). ``train.csv`` and
  ``test.csv`` hold ``id,image,audio,label`` and ``digits_index`` (the scikit-learn image
  used); ``pairs.json`` records the settings and counts.

The default degradations were chosen, with quick linear probes, so that each modality alone is
clearly short of perfect (as in AV-MNIST, where neither modality suffices); the benchmark
reports the single-modality accuracies it measures.

Usage:
    python benchmarks/multimodal_data.py --fsdd ../shared/datasets/fsdd --out .bench/avdigits
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

NAME = re.compile(r"^(\d)_([A-Za-z]+)_(\d+)\.wav$")
"""FSDD file names: digit, speaker, index."""
TEST_INDICES = range(5)
"""FSDD's own convention: recordings 0-4 of every digit and speaker are the test set."""


@dataclass(frozen=True)
class PairOptions:
    """How the pairs are degraded and drawn."""

    snr_db: float = -10.0
    image_noise: float = 0.7
    occlude: float = 0.4
    image_size: int = 32
    seed: int = 0


def fsdd_recordings(folder: Path) -> list[tuple[Path, int, str, int]]:
    """``(file, digit, speaker, index)`` of every FSDD recording under ``folder``, sorted;
    ValueError when there is none."""
    root = folder / "recordings" if (folder / "recordings").is_dir() else folder
    found = []
    for path in sorted(root.glob("*.wav")):
        match = NAME.match(path.name)
        if match:
            found.append((path, int(match[1]), match[2], int(match[3])))
    if not found:
        raise ValueError(f"{folder}: no FSDD recordings (<digit>_<speaker>_<index>.wav)")
    return found


def split_images(labels: np.ndarray, test_share: float, seed: int) -> np.ndarray:
    """A bool mask of the test images: ``test_share`` of every class, drawn with ``seed``."""
    rng = np.random.default_rng(seed)
    test = np.zeros(len(labels), dtype=bool)
    for digit in np.unique(labels):
        members = np.flatnonzero(labels == digit)
        take = max(1, round(test_share * len(members)))
        test[rng.choice(members, size=take, replace=False)] = True
    return test


def degrade_image(image: np.ndarray, options: PairOptions, rng: np.random.Generator) -> np.ndarray:
    """An 8 x 8 digit (0-16) as ``image_size`` square uint8 pixels, noisy and partly blacked out.

    Shapes:
        image: (8, 8); output: (image_size, image_size).
    """
    from PIL import Image

    grey = Image.fromarray((image * (255.0 / 16.0)).astype(np.uint8))
    size = options.image_size
    big = np.asarray(grey.resize((size, size), Image.Resampling.BILINEAR), dtype=np.float64)
    big = big + rng.normal(0.0, options.image_noise * 255.0, big.shape)
    big[rng.random(big.shape) < options.occlude] = 0.0
    return np.clip(big, 0, 255).round().astype(np.uint8)


def degrade_audio(samples: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """int16 samples with white noise at ``snr_db`` below (or above) the clip's own power."""
    x = samples.astype(np.float64)
    power = float(np.mean(x**2)) or 1.0
    noise = rng.normal(0.0, np.sqrt(power / 10 ** (snr_db / 10)), x.shape)
    return np.clip(x + noise, -32768, 32767).round().astype(np.int16)


def build(fsdd: Path, out: Path, options: PairOptions) -> dict[str, object]:
    """Write ``out/{images,audio}/``, ``train.csv``, ``test.csv`` and ``pairs.json``; returns
    the summary written to ``pairs.json``."""
    from PIL import Image
    from scipy.io import wavfile
    from sklearn.datasets import load_digits

    recordings = fsdd_recordings(fsdd)
    digits = load_digits()
    test_share = sum(r[3] in TEST_INDICES for r in recordings) / len(recordings)
    image_test = split_images(digits.target, test_share, options.seed)
    rng = np.random.default_rng(options.seed)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "audio").mkdir(parents=True, exist_ok=True)
    rows: dict[str, list[list[str]]] = {"train": [], "test": []}
    for path, digit, speaker, index in recordings:
        split = "test" if index in TEST_INDICES else "train"
        pool = np.flatnonzero((digits.target == digit) & (image_test == (split == "test")))
        picked = int(rng.choice(pool))
        sample_id = f"{digit}_{speaker}_{index}"
        image_file = out / "images" / f"{sample_id}.png"
        pixels = degrade_image(digits.images[picked], options, rng)
        Image.fromarray(pixels).save(image_file)
        rate, samples = wavfile.read(path)
        if samples.ndim > 1:
            samples = samples.mean(axis=1).astype(np.int16)
        wavfile.write(
            out / "audio" / f"{sample_id}.wav", rate, degrade_audio(samples, options.snr_db, rng)
        )
        rows[split].append(
            [
                sample_id,
                f"images/{sample_id}.png",
                f"audio/{sample_id}.wav",
                str(digit),
                str(picked),
            ]
        )
    for split, lines in rows.items():
        with open(out / f"{split}.csv", "w", newline="") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(["id", "image", "audio", "label", "digits_index"])
            writer.writerows(lines)
    summary = {
        "options": asdict(options),
        "fsdd": str(fsdd),
        "recordings": {k: len(v) for k, v in rows.items()},
        "images": {"train": int((~image_test).sum()), "test": int(image_test.sum())},
    }
    (out / "pairs.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--fsdd",
        type=Path,
        default=Path(__file__).resolve().parents[2] / "shared" / "datasets" / "fsdd",
    )
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--snr-db", type=float, default=PairOptions.snr_db)
    p.add_argument("--image-noise", type=float, default=PairOptions.image_noise)
    p.add_argument("--occlude", type=float, default=PairOptions.occlude)
    p.add_argument("--seed", type=int, default=PairOptions.seed)
    args = p.parse_args(argv)
    options = PairOptions(args.snr_db, args.image_noise, args.occlude, seed=args.seed)
    summary = build(args.fsdd, args.out, options)
    print(json.dumps(summary["recordings"]), "pairs written to", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
