"""``abyssal generate multimodal``: a small synthetic data set where text, image and sound each
tell part of the story, and some samples lack a modality.

Each sample is one of four objects (``bell``, ``drum``, ``flute``, ``horn``). Its image is the
object's shape (circle, square, triangle, cross) drawn at a random place and size, with pixel
noise and a blacked-out patch; its sound is a tone at the object's pitch with jitter and loud
noise; its text names the object, or only vaguely describes it ("something on the shelf", as
often as ``vague`` says). A modality is missing from a sample with probability ``missing``
(never all three). So no modality alone is enough and their fusion does better: the quick-start
shows it. ``manifest.csv`` holds the labelled samples; ``new.csv`` more without labels, with
their truth in ``new_truth.csv``.

With ``pairs=N`` it also writes ``pairs.csv`` for ``task: retrieval``: N pictures (a shape in a
colour at one of four places, with pixel noise) with two captions each that say what and
where ("a red circle at the top left", ...), columns ``id,text,image``.

Example:
    >>> options = MultimodalSampleConfig(samples=40)
    >>> generate_sample(options, Path("demo-multimodal"))  # doctest: +SKIP
    ['demo-multimodal/manifest.csv: 40 samples of 4 classes (text 33, image 31, audio 32)', ...]
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from abyssal.core.config import field
from abyssal.core.errors import ConfigError

OBJECTS = {"bell": (660.0, "circle"), "drum": (220.0, "square"), "flute": (880.0, "triangle"),
           "horn": (330.0, "cross")}  # fmt: skip
"""Each class: the pitch of its sound (Hz) and the shape of its picture."""
NAMED = ("a {w} on the table", "the {w} from the music room", "an old {w}", "my {w}, {c}")
VAGUE = ("something on the shelf", "an object near the window", "a thing, {c}", "it is {c}")
COLOURS = ("red", "dark", "shiny", "dusty", "small", "heavy")
SHAPES = ("circle", "square", "triangle", "cross")
HUES = (("red", (230, 40, 40)), ("green", (40, 210, 60)), ("blue", (50, 90, 240)),
        ("yellow", (235, 220, 40)))  # fmt: skip
PLACES = (("top left", (0.3, 0.3)), ("top right", (0.7, 0.3)), ("bottom left", (0.3, 0.7)),
          ("bottom right", (0.7, 0.7)))  # fmt: skip
CAPTIONS = ("a {c} {s} at the {p}", "the {p} holds a {c} {s}", "{c} {s}, {p}",
            "a picture of a {s} in {c} at the {p}")  # fmt: skip
"""Retrieval pairs: shapes, colours (name, RGB), places (name, centre) and caption templates."""


@dataclass
class MultimodalSampleConfig:
    """Options of ``abyssal generate multimodal``."""

    samples: int = field(400, help="labelled samples, written to manifest.csv")
    new: int = field(12, help="samples to predict, written to new.csv (truth in new_truth.csv)")
    image_size: int = field(32, help="side of each picture in pixels (at least 16)")
    seconds: float = field(0.5, help="length of each sound in seconds")
    sample_rate: int = field(16000, help="sample rate of the sounds in Hz")
    missing: float = field(0.2, help="probability that a modality is missing from a sample")
    vague: float = field(0.5, help="probability that a text does not name the object")
    seed: int = field(0, help="seed of everything: the same options write the same files")
    pairs: int = field(
        0,
        help="pictures with two captions each for image-text retrieval (task: retrieval), "
        "written to pairs.csv and pairs/; 0: none",
    )

    def __post_init__(self) -> None:
        if self.samples < 2 * len(OBJECTS) or self.new < 0 or self.pairs < 0:
            raise ConfigError(f"samples must be >= {2 * len(OBJECTS)}, new and pairs >= 0")
        if self.image_size < 16:
            raise ConfigError(f"image_size must be >= 16, got {self.image_size}")
        if not 0.05 <= self.seconds <= 10 or self.sample_rate < 4000:
            raise ConfigError("seconds must be in [0.05, 10] and sample_rate >= 4000")
        for name in ("missing", "vague"):
            if not 0 <= getattr(self, name) < 1:
                raise ConfigError(f"{name} must be in [0, 1), got {getattr(self, name)}")


def generate_sample(options: MultimodalSampleConfig, out: Path) -> list[str]:
    """Write ``images/``, ``audio/``, ``manifest.csv``, ``new.csv`` and ``new_truth.csv`` into
    ``out``; the tables are written last, each to a temporary name renamed into place.

    Returns:
        One line per thing written.
    """
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "audio").mkdir(parents=True, exist_ok=True)
    names = sorted(OBJECTS)
    rows = [_sample(out, f"s{i:04d}", i, names, options) for i in range(options.samples)]
    new = [_sample(out, f"new{i:02d}", 10**6 + i, names, options) for i in range(options.new)]
    header = ["id", "text", "image", "audio", "label"]
    _write_table(out / "manifest.csv", header, rows)
    _write_table(out / "new.csv", header[:4], [r[:4] for r in new])
    _write_table(out / "new_truth.csv", header, new)
    counts = {
        m: sum(bool(r[k]) for r in rows) for k, m in ((1, "text"), (2, "image"), (3, "audio"))
    }
    have = ", ".join(f"{m} {n}" for m, n in counts.items())
    lines = [
        f"{out / 'manifest.csv'}: {len(rows)} samples of {len(names)} classes ({have})",
        f"{out / 'new.csv'}: {len(new)} samples to predict (truth in new_truth.csv)",
        f"{out / 'images'}/, {out / 'audio'}/: the pictures (PNG) and sounds (WAV)",
    ]
    if options.pairs:
        lines.append(_write_pairs(out, options))
    return lines


def _write_pairs(out: Path, options: MultimodalSampleConfig) -> str:
    """``pairs/`` and ``pairs.csv``: pictures, each with two captions of what and where."""
    (out / "pairs").mkdir(exist_ok=True)
    rows = []
    for i in range(options.pairs):
        rng = np.random.default_rng([options.seed, 2, i])  # apart from the labelled samples
        shape = SHAPES[int(rng.integers(len(SHAPES)))]
        colour = int(rng.integers(len(HUES)))
        place = int(rng.integers(len(PLACES)))
        image = f"pairs/p{i:04d}.png"
        _draw(out / image, shape, rng, options.image_size, HUES[colour][1], PLACES[place][1])
        words = {"c": HUES[colour][0], "s": shape, "p": PLACES[place][0]}
        for j, template in enumerate(rng.choice(CAPTIONS, size=2, replace=False)):
            rows.append([f"p{i:04d}{'ab'[j]}", str(template).format(**words), image])
    _write_table(out / "pairs.csv", ["id", "text", "image"], rows)
    return f"{out / 'pairs.csv'}: {options.pairs} pictures with 2 captions each (pairs/)"


def _sample(
    out: Path, name: str, index: int, names: list[str], options: MultimodalSampleConfig
) -> list[str]:
    """One sample's files and its table row ``[id, text, image, audio, label]``."""
    rng = np.random.default_rng([options.seed, index])
    label = names[int(rng.integers(len(names)))]
    keep = rng.random(3) >= options.missing
    if not keep.any():
        keep[int(rng.integers(3))] = True
    text = _text(label, rng, options.vague) if keep[0] else ""
    image = audio = ""
    if keep[1]:
        image = f"images/{name}.png"
        _draw(out / image, OBJECTS[label][1], rng, options.image_size)
    if keep[2]:
        audio = f"audio/{name}.wav"
        _sound(out / audio, OBJECTS[label][0], rng, options)
    return [name, text, image, audio, label]


def _text(label: str, rng: np.random.Generator, vague: float) -> str:
    colour = COLOURS[int(rng.integers(len(COLOURS)))]
    if rng.random() < vague:
        return VAGUE[int(rng.integers(len(VAGUE)))].format(c=colour)
    return NAMED[int(rng.integers(len(NAMED)))].format(w=label, c=colour)


def _draw(
    path: Path,
    shape: str,
    rng: np.random.Generator,
    size: int,
    hue: tuple[int, int, int] | None = None,
    place: tuple[float, float] | None = None,
) -> None:
    """The shape on a dark background with noise and a blacked-out patch; ``hue`` and
    ``place`` (the centre as shares of the side; retrieval pairs) fix its colour and where it
    is, and leave out the patch, else both are random."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(0, 80, 3)))
    draw = ImageDraw.Draw(img)
    r = size * rng.uniform(0.2, 0.35) if place is None else size * rng.uniform(0.15, 0.22)
    if place is None:
        cx, cy = rng.uniform(r, size - r, 2)
    else:
        cx, cy = (np.array(place) + rng.uniform(-0.05, 0.05, 2)) * size
    colour = tuple(int(v) for v in rng.integers(120, 256, 3)) if hue is None else hue
    box = (cx - r, cy - r, cx + r, cy + r)
    if shape == "circle":
        draw.ellipse(box, fill=colour)
    elif shape == "square":
        draw.rectangle(box, fill=colour)
    elif shape == "triangle":
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=colour)
    else:
        w = r / 3
        draw.rectangle((cx - w, cy - r, cx + w, cy + r), fill=colour)
        draw.rectangle((cx - r, cy - w, cx + r, cy + w), fill=colour)
    pixels = np.asarray(img, dtype=np.float64) + rng.normal(0, 30, (size, size, 3))
    if place is None:
        patch = size // 3
        y, x = rng.integers(0, size - patch, 2)
        pixels[y : y + patch, x : x + patch] = 0  # a blacked-out patch
    _save_image(path, np.clip(pixels, 0, 255).astype(np.uint8))


def _save_image(path: Path, pixels: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(pixels).save(path)


def _sound(
    path: Path, pitch: float, rng: np.random.Generator, options: MultimodalSampleConfig
) -> None:
    from scipy.io import wavfile

    n = int(options.seconds * options.sample_rate)
    t = np.arange(n) / options.sample_rate
    f = pitch * rng.uniform(0.7, 1.4)  # neighbouring pitches overlap
    wave = np.sin(2 * np.pi * f * t) * np.hanning(n) + rng.normal(0, 2.5, n)
    wavfile.write(path, options.sample_rate, (np.clip(wave / 8, -1, 1) * 32767).astype(np.int16))


def _write_table(path: Path, header: list[str], rows: list[list[str]]) -> None:
    part = path.with_suffix(".part")
    with open(part, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    os.replace(part, path)
