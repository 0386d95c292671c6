"""Synthetic steel-surface images with defects, for docs, the quickstart and tests.

``abyssal generate defect --out DIR`` writes:

- ``images/<class>/<class>_<i>.png``: grey textured surfaces (noise and faint horizontal rolling
  streaks), each with one defect, and ``<class>_<i>.xml`` beside it (Pascal VOC, one box);
- ``labels.csv`` (``layout=csv``): ``path,label`` of those images, paths relative to ``DIR``;
- ``new/img_<i>.png``: unlabelled images of random classes, to predict, and ``new_truth.csv``
  (``path,label``) to check the predictions against.

The classes look different to a person and to a small CNN (``scratch``: a thin bright or dark
line; ``spot``: a cluster of small dark blobs; ``patch``: a larger, brighter irregular region;
``crack``: a dark zig-zag line), while each image's overall brightness varies more than a defect
shifts it, so the mean grey level alone does not tell the classes apart. Everything is drawn
from ``seed``: the same options write the same bytes.

Example:
    >>> generate_sample(DefectSampleConfig(), Path("demo-defect"))  # doctest: +SKIP
    ['demo-defect/images/: 160 images in 4 class folders (scratch, spot, patch, crack), ...', ...]
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from xml.etree import ElementTree

import numpy as np
from PIL import Image

from abyssal.core.config import field
from abyssal.core.errors import ConfigError
from abyssal.solutions.defect.images import Box

DEFECT_KINDS = ("scratch", "spot", "patch", "crack")
"""The defects :func:`render_defect` draws."""
_NEW_STREAM = 1000
"""Seed stream of the unlabelled images (class streams are 0..3)."""


@dataclass
class DefectSampleConfig:
    """Options of ``abyssal generate defect``: synthetic defect images written as files."""

    images_per_class: int = field(40, help="labelled images of each class")
    size: int = field(64, help="side of the square images, in pixels (at least 16)")
    classes: list[str] = field(
        default_factory=lambda: list(DEFECT_KINDS),
        help=f"defect classes to draw, from: {', '.join(DEFECT_KINDS)}",
    )
    new_images: int = field(20, help="unlabelled images of random classes, written to new/")
    seed: int = field(0, help="seed of every image: the same options write the same files")
    layout: Literal["folder", "csv"] = field(
        "folder", help="folder: class folders only; csv: also labels.csv (path,label)"
    )

    def __post_init__(self) -> None:
        if self.images_per_class < 1:
            raise ConfigError(f"images_per_class must be >= 1, got {self.images_per_class}")
        if self.size < 16:
            raise ConfigError(f"size must be >= 16 (room for a defect), got {self.size}")
        if self.new_images < 0:
            raise ConfigError(f"new_images must be >= 0, got {self.new_images}")
        unknown = [c for c in self.classes if c not in DEFECT_KINDS]
        if unknown:
            raise ConfigError(f"unknown classes {unknown}; choose from {', '.join(DEFECT_KINDS)}")
        if len(set(self.classes)) != len(self.classes) or len(self.classes) < 2:
            raise ConfigError(f"classes must name at least two distinct kinds, got {self.classes}")
        if self.layout not in ("folder", "csv"):
            raise ConfigError(f"layout must be folder or csv, got {self.layout!r}")


def render_defect(kind: str, size: int, rng: np.random.Generator) -> tuple[np.ndarray, Box]:
    """One grey steel-surface image with one defect of ``kind`` at a random place.

    Args:
        kind: ``scratch``, ``spot``, ``patch`` or ``crack``.
        size: side of the square image, in pixels.
        rng: the random source (the image is a function of its state).

    Returns:
        ``(pixels, box)``: the image and the defect's bounding box (pixel edges, inside
        ``[0, size]``, labelled ``kind``).

    Shapes:
        pixels: (size, size) uint8.

    Raises:
        ValueError: an unknown ``kind`` (the message lists the kinds).

    Example:
        >>> pixels, box = render_defect("crack", 32, np.random.default_rng(0))
        >>> pixels.shape, pixels.dtype, box.label
        ((32, 32), dtype('uint8'), 'crack')
    """
    if kind not in _DRAW:
        raise ValueError(f"unknown defect kind {kind!r}; choose from {', '.join(DEFECT_KINDS)}")
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5  # pixel centres, (S, S) each
    surface = _background(size, rng)
    alpha, sign, strength = _DRAW[kind](xx, yy, size, rng)  # alpha: (S, S) in [0, 1]
    pixels = np.clip(surface + sign * strength * alpha, 0, 255).round().astype(np.uint8)
    return pixels, _box_of(alpha, kind)


def generate_sample(options: DefectSampleConfig, out: Path) -> list[str]:
    """Write the labelled images with their VOC boxes, ``labels.csv`` (csv layout), and the
    unlabelled ``new/`` images with ``new_truth.csv`` into the folder ``out``.

    Each file is written to a temporary name and renamed into place, so an error never leaves
    a half-written file.

    Args:
        options: how many images of which classes, their size, the seed and the layout.
        out: the folder (created if needed).

    Returns:
        One line per thing written.
    """
    out = Path(out)
    rows = []
    for name in options.classes:
        stream = DEFECT_KINDS.index(name)
        for i in range(1, options.images_per_class + 1):
            rng = np.random.default_rng([options.seed, stream, i])
            pixels, box = render_defect(name, options.size, rng)
            image = out / "images" / name / f"{name}_{i}.png"
            _write_png(image, pixels)
            _write_atomic(image.with_suffix(".xml"), _voc_xml(image, options.size, box))
            rows.append((image.relative_to(out).as_posix(), name))
    n_classes = len(options.classes)
    lines = [
        f"{out / 'images'}/: {len(rows)} images in {n_classes} class folders "
        f"({', '.join(options.classes)}), each with a Pascal VOC XML box beside it"
    ]
    if options.layout == "csv":
        _write_atomic(out / "labels.csv", _csv_text(rows))
        lines.append(f"{out / 'labels.csv'}: path,label of the {len(rows)} images")
    if options.new_images:
        lines += _write_new(options, out)
    return lines


def _write_new(options: DefectSampleConfig, out: Path) -> list[str]:
    kinds = np.random.default_rng([options.seed, _NEW_STREAM]).choice(
        options.classes, options.new_images
    )
    truth = []
    for i, kind in enumerate(kinds.tolist(), start=1):
        rng = np.random.default_rng([options.seed, _NEW_STREAM, i])
        image = out / "new" / f"img_{i}.png"
        _write_png(image, render_defect(kind, options.size, rng)[0])
        truth.append((image.relative_to(out).as_posix(), kind))
    _write_atomic(out / "new_truth.csv", _csv_text(truth))
    return [
        f"{out / 'new'}/: {len(truth)} unlabelled images of random classes, to predict",
        f"{out / 'new_truth.csv'}: path,label of the new images, to check predictions",
    ]


# --- drawing -----------------------------------------------------------------------------------


def _background(size: int, rng: np.random.Generator) -> np.ndarray:
    """(S, S) float grey surface: a random level, grain noise and faint horizontal streaks."""
    level = rng.uniform(95, 165)  # varies more than a defect moves the mean
    rows = np.arange(size, dtype=np.float64)
    streaks = sum(
        rng.uniform(2, 5) * np.sin(2 * np.pi * rows / rng.uniform(3, size) + rng.uniform(0, 6.3))
        for _ in range(3)
    )  # (S,) one offset per row: the rolling direction
    grain = rng.normal(0, 7, (size, size))
    return level + streaks[:, None] + grain


def _scratch(
    xx: np.ndarray, yy: np.ndarray, size: int, rng: np.random.Generator
) -> tuple[np.ndarray, float, float]:
    """A thin straight line, bright or dark, at a random angle."""
    centre = rng.uniform(0.3, 0.7, 2) * size
    angle = rng.uniform(0, np.pi)
    half = rng.uniform(0.25, 0.42) * size * np.array([np.cos(angle), np.sin(angle)])
    alpha = _line(xx, yy, centre - half, centre + half, width=max(1.0, size / 48))
    return alpha, float(rng.choice([-1.0, 1.0])), rng.uniform(55, 80)


def _spot(
    xx: np.ndarray, yy: np.ndarray, size: int, rng: np.random.Generator
) -> tuple[np.ndarray, float, float]:
    """A cluster of three to six small dark round blobs."""
    centre = rng.uniform(0.3, 0.7, 2) * size
    alpha = np.zeros_like(xx)
    for _ in range(rng.integers(3, 7)):
        x, y = centre + rng.normal(0, 0.08 * size, 2)
        radius = rng.uniform(0.035, 0.06) * size
        alpha = np.maximum(alpha, np.clip(radius + 0.5 - np.hypot(xx - x, yy - y), 0, 1))
    return alpha, -1.0, rng.uniform(60, 85)


def _patch(
    xx: np.ndarray, yy: np.ndarray, size: int, rng: np.random.Generator
) -> tuple[np.ndarray, float, float]:
    """A larger brighter region with an irregular, soft edge."""
    x, y = rng.uniform(0.35, 0.65, 2) * size
    theta = np.arctan2(yy - y, xx - x)
    wobble = sum(
        rng.uniform(0.08, 0.2) * np.cos(k * theta + rng.uniform(0, 6.3)) for k in (2, 3, 5)
    )
    radius = rng.uniform(0.16, 0.26) * size * (1 + wobble)
    alpha = np.clip((radius - np.hypot(xx - x, yy - y)) / 2.0 + 0.5, 0, 1)
    return alpha, 1.0, rng.uniform(30, 45)


def _crack(
    xx: np.ndarray, yy: np.ndarray, size: int, rng: np.random.Generator
) -> tuple[np.ndarray, float, float]:
    """A dark zig-zag polyline: short segments turning sharply left and right."""
    n = int(rng.integers(4, 7))
    heading = rng.uniform(0, 2 * np.pi)
    step = 0.6 * size / n
    point = rng.uniform(0.3, 0.7, 2) * size - 0.3 * size * np.array(
        [np.cos(heading), np.sin(heading)]
    )
    alpha = np.zeros_like(xx)
    for k in range(n):
        turn = (1 if k % 2 else -1) * rng.uniform(0.6, 1.1)  # alternate: the zig-zag
        direction = heading + turn
        nxt = np.clip(point + step * np.array([np.cos(direction), np.sin(direction)]), 1, size - 1)
        alpha = np.maximum(alpha, _line(xx, yy, point, nxt, width=max(1.0, size / 40)))
        point = nxt
    return alpha, -1.0, rng.uniform(60, 85)


_DRAW = {"scratch": _scratch, "spot": _spot, "patch": _patch, "crack": _crack}


def _line(xx: np.ndarray, yy: np.ndarray, p: np.ndarray, q: np.ndarray, width: float) -> np.ndarray:
    """(S, S) antialiased coverage of the segment ``p``-``q`` drawn ``width`` pixels wide."""
    d = q - p
    t = np.clip(((xx - p[0]) * d[0] + (yy - p[1]) * d[1]) / max(float(d @ d), 1e-9), 0, 1)
    distance = np.hypot(xx - (p[0] + t * d[0]), yy - (p[1] + t * d[1]))
    return np.clip(width / 2 + 0.5 - distance, 0, 1)


def _box_of(alpha: np.ndarray, kind: str) -> Box:
    """The pixel-edge bounds of where the defect shows (coverage above 0.25)."""
    ys, xs = np.nonzero(alpha > 0.25)
    return Box(float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1), kind)


# --- files -------------------------------------------------------------------------------------


def _write_atomic(path: Path, data: bytes | str) -> None:
    """Write to a temporary file beside ``path``, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _write_png(path: Path, pixels: np.ndarray) -> None:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    _write_atomic(path, buffer.getvalue())


def _voc_xml(image: Path, size: int, box: Box) -> str:
    """A Pascal VOC annotation of one grey image with one object."""
    root = ElementTree.Element("annotation")
    for tag, text in (("folder", image.parent.name), ("filename", image.name)):
        ElementTree.SubElement(root, tag).text = text
    dims = ElementTree.SubElement(root, "size")
    for tag, value in (("width", size), ("height", size), ("depth", 1)):
        ElementTree.SubElement(dims, tag).text = str(value)
    obj = ElementTree.SubElement(root, "object")
    for tag, text in (("name", box.label), ("pose", "Unspecified"), ("truncated", "0")):
        ElementTree.SubElement(obj, tag).text = text
    ElementTree.SubElement(obj, "difficult").text = "0"
    bndbox = ElementTree.SubElement(obj, "bndbox")
    for tag in ("xmin", "ymin", "xmax", "ymax"):
        ElementTree.SubElement(bndbox, tag).text = str(int(getattr(box, tag)))
    ElementTree.indent(root)
    return ElementTree.tostring(root, encoding="unicode") + "\n"


def _csv_text(rows: list[tuple[str, str]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["path", "label"])
    writer.writerows(rows)
    return buffer.getvalue()
