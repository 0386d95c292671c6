"""Synthetic lung nodules in the LIDC-IDRI layout, and one whole CT scan, for docs and tests.

``abyssal generate nodule --out DIR`` writes:

- ``volumes/<nodule_id>.npz``: one crop per nodule (ids like ``P0007_n1``), arrays ``image``
  (uint8, (slices, size, size), lung window like the usual LIDC crops: parenchyma dark, nodule
  tissue about 110-200), ``mask`` (uint8, same shape: how many of the nodule's 1-4 readers
  outlined each voxel, so the rim counts fewer) and ``spacing`` ((z, y, x) mm, which
  :func:`~abyssal.solutions.nodule.volumes.read_volume` picks up). ``slices`` spans
  ``context_mm`` (40 mm by default) of z around the nodule, or with ``context_mm=0`` the
  nodule's z extent plus 1-2 slices each side, as the LIDC crops; slice thickness (1.25, 2 or
  2.5 mm) and pixel spacing (0.6-0.8 mm) vary by patient, and each nodule is drawn in
  millimetres, so anisotropic voxels give a correctly shaped nodule;
- ``nodules.csv``: one row per nodule (columns :data:`NODULE_COLUMNS`): geometry, the median of
  the readers' LIDC ratings (so halves like 3.5 occur) and ``fold`` 0-4, assigned by patient
  (no patient in two folds; folds balanced in nodules);
- ``new/new_01.npz`` ...: crops of the same kind to predict, and ``new_truth.csv``
  (``nodule_id,path,malignancy,label``, label ``benign`` below 3, ``malignant`` above, else
  ``indeterminate``): a table ``abyssal predict nodule --volumes`` reads;
- ``scan/scan.nii.gz``: one synthetic chest CT in HU (int16; air -1000, body wall about 40,
  lungs about -850 with vessels, spacing 2.5 x 0.7 x 0.7 mm, a non-zero origin) with
  ``scan_nodules`` nodules (about 0-60 HU) planted at voxel centres inside the lungs;
  ``scan/candidates.csv`` (LUNA16 style: ``seriesuid,coordX,coordY,coordZ``, world mm, LPS, as
  :func:`~abyssal.solutions.nodule.volumes.voxel_to_world` of the read scan gives them) at every
  nodule centre and at two points of empty lung, shuffled; ``scan/truth.csv`` adds
  ``is_nodule,diameter_mm`` (0 for the empty points).

Each crop draws a latent malignancy first and its look follows it: malignant nodules
(malignancy 4-5) are larger (6-30 mm, typically 14), lobulated (low-frequency radial bumps),
mostly spiculated (thin bright spikes), less spherical, solid, with a blurred margin; benign ones
(1-2) are small (3-16 mm, typically 6.5), round, smooth and sharp, a third of them calcified (a
very bright core or spots, calcification rating below 6); about a quarter are rated exactly 3,
in between. Diameters are capped at 3/4 of the crop's width.
The other ratings follow the drawn shape with reader noise, and sizes overlap between the
classes (and every crop has vessels, some a chest wall), so neither size nor brightness alone
separates them. Everything is drawn from ``seed``: the same options write the same bytes.

Example:
    >>> generate_sample(NoduleSampleConfig(), Path("demo-nodule"))  # doctest: +SKIP
    ['demo-nodule/volumes/: 160 nodule crops of 60 patients (image uint8, mask ...)', ...]
"""

from __future__ import annotations

import csv
import gzip
import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from abyssal.core.atomic import write_bytes_atomic, write_text_atomic
from abyssal.core.config import field
from abyssal.core.errors import ConfigError
from abyssal.core.optional import require
from abyssal.solutions.nodule.records import RANGES
from abyssal.solutions.nodule.volumes import Volume, voxel_to_world

RATINGS = {k: v for k, v in RANGES.items() if k not in ("diameter_mm", "malignancy_rating")} | {
    "internalStructure": (1, 4)
}
"""LIDC rating scales (lowest, highest), in CSV order; calcification 6 means none. Drawn on the
documented internal-structure scale (1-4; the real XML holds a few 5s, which tables accept)."""
NODULE_COLUMNS = [
    *("nodule_id", "patient_id", "n_slices", "n_readers"),
    *("slice_thickness_mm", "pixel_spacing_mm", "diameter_mm", *RATINGS, "fold"),
]
"""The columns of ``nodules.csv``."""
SLICE_THICKNESS_MM = (1.25, 2.0, 2.5)
FOLDS = 5
SCAN_SPACING = (2.5, 0.7, 0.7)
"""(z, y, x) mm of the whole scan."""
_NODULE_STREAM, _PATIENT_STREAM, _NEW_STREAM, _SCAN_STREAM = 0, 1, 1000, 2000
_CLASSES = ((1, 2), (3, 3), (4, 5))  # benign, indeterminate, malignant: reader malignancy range


@dataclass
class NoduleSampleConfig:
    """Options of ``abyssal generate nodule``: synthetic LIDC-style crops and one CT scan."""

    nodules: int = field(400, help="labelled nodule crops, written to volumes/")
    patients: int = field(150, help="patients they belong to (at least 5, at most nodules)")
    size: int = field(48, help="in-plane side of each crop, in pixels (at least 16)")
    new_volumes: int = field(12, help="crops to predict, written to new/ with new_truth.csv")
    scan_nodules: int = field(4, help="nodules planted in the whole scan (0-12)")
    scan_slices: int = field(40, help="slices of the whole scan (at least 16)")
    context_mm: float = field(
        40.0,
        help="each crop spans at least this many mm in z around its nodule (0: the nodule's "
        "slices and 1-2 more, as the LIDC crops; models trained on those have never seen the "
        "slices around a nodule that a whole-scan cube holds)",
    )
    scan_size: int = field(128, help="rows and columns of the whole scan (at least 64)")
    seed: int = field(0, help="seed of everything: the same options write the same files")

    def __post_init__(self) -> None:
        if not 0 <= self.context_mm <= 200:
            raise ConfigError(f"context_mm must be in [0, 200], got {self.context_mm}")
        if self.patients < FOLDS:
            raise ConfigError(f"patients must be >= {FOLDS} (one per fold), got {self.patients}")
        if self.nodules < self.patients:
            raise ConfigError(
                f"nodules must be >= patients (each patient has one), got {self.nodules} "
                f"nodules for {self.patients} patients"
            )
        if self.size < 16:
            raise ConfigError(f"size must be >= 16 (room for a nodule), got {self.size}")
        if self.new_volumes < 0:
            raise ConfigError(f"new_volumes must be >= 0, got {self.new_volumes}")
        if not 0 <= self.scan_nodules <= 12:
            raise ConfigError(f"scan_nodules must be in 0..12, got {self.scan_nodules}")
        if self.scan_slices < 16 or self.scan_size < 64:
            raise ConfigError(
                f"the scan needs scan_slices >= 16 and scan_size >= 64, got "
                f"{self.scan_slices} and {self.scan_size}"
            )


@dataclass(frozen=True, eq=False)
class SyntheticNodule:
    """One drawn nodule crop and its ratings (see :func:`render_nodule`)."""

    image: np.ndarray  # (slices, size, size) uint8
    mask: np.ndarray  # (slices, size, size) uint8: readers who outlined the voxel
    diameter_mm: float
    readers: int  # 1-4
    ratings: dict[str, float]  # median over readers, keys of RATINGS


@dataclass(frozen=True, eq=False)
class _Shape:
    """The latent nodule: everything in mm, in a frame centred on the nodule."""

    kind: int  # 0 benign, 1 indeterminate, 2 malignant
    severity: float  # 0..1, drives the look within the kind
    radius: float  # equivalent-sphere radius
    scales: np.ndarray  # (3,) semi-axis factors, product 1
    rotation: np.ndarray  # (3, 3) local frame: q = p @ rotation
    lobes: np.ndarray  # (L, 4): unit direction (local), signed amplitude
    blur: float  # edge width
    spikes: np.ndarray  # (M, 5): unit direction (world), length, width
    level: float  # tissue brightness (uint8 scale)
    texture: int  # 5 solid, 3 part-solid, 1 ground glass
    calcification: int  # 1 popcorn, 2 laminated, 3 solid, 4 non-central, 5 central, 6 none
    internal: int  # 1 soft tissue, 2 fluid, 3 fat, 4 air


def render_nodule(
    size: int,
    slice_mm: float,
    pixel_mm: float,
    rng: np.random.Generator,
    context_mm: float = 0.0,
) -> SyntheticNodule:
    """Draw one nodule crop: a latent malignancy, a shape that follows it, readers' ratings.

    Args:
        size: in-plane side of the crop, in pixels.
        slice_mm: slice thickness (z spacing).
        pixel_mm: in-plane pixel spacing.
        rng: the random source (the crop is a function of its state).
        context_mm: the crop spans at least this many mm in z, centred on the nodule (0: the
            nodule's slices and 1-2 more).

    Returns:
        The image, the readers' mask, the equivalent-sphere diameter and the median ratings.

    Shapes:
        image, mask: (slices, size, size) uint8; slices = the nodule's z extent + 1-2 each side,
        or more to span ``context_mm``.

    Example:
        >>> n = render_nodule(24, 2.5, 0.7, np.random.default_rng(0))
        >>> n.image.dtype, n.image.shape[1:], 1 <= n.ratings["malignancy"] <= 5
        (dtype('uint8'), (24, 24), True)
    """
    shape = _draw_shape(rng, max_diameter=0.75 * size * pixel_mm)
    readers = 1 + int(rng.binomial(3, min(0.95, 0.45 + 2 * shape.radius / 40)))
    ratings = _ratings(shape, readers, rng)  # before drawing: the same whatever the spacing
    spacing = (slice_mm, pixel_mm, pixel_mm)
    image, mask = _render(shape, size, spacing, readers, rng, context_mm)
    return SyntheticNodule(image, mask, 2 * shape.radius, readers, ratings)


def generate_sample(options: NoduleSampleConfig, out: Path) -> list[str]:
    """Write the nodule crops with ``nodules.csv``, the ``new/`` crops with ``new_truth.csv``,
    and the whole scan with its candidates and truth, into the folder ``out``.

    Each file is written to a temporary name and renamed into place, so an error never leaves
    a half-written file.

    Args:
        options: how many nodules of how many patients, crop size, scan size and the seed.
        out: the folder (created if needed).

    Returns:
        One line per thing written.
    """
    out = Path(out)
    patients = _patients(options)
    rows = []
    for patient, (fold, slice_mm, pixel_mm, count) in patients.items():
        for k in range(1, count + 1):
            number = int(patient[1:])
            rng = np.random.default_rng([options.seed, _NODULE_STREAM, number, k])
            nodule = render_nodule(options.size, slice_mm, pixel_mm, rng, options.context_mm)
            nodule_id = f"{patient}_n{k}"
            _write_npz(out / "volumes" / f"{nodule_id}.npz", nodule, (slice_mm, pixel_mm))
            rows.append([*_row(nodule_id, patient, nodule, slice_mm, pixel_mm), str(fold)])
    write_text_atomic(out / "nodules.csv", _csv_text(NODULE_COLUMNS, rows))
    lines = [
        f"{out / 'volumes'}/: {len(rows)} nodule crops of {len(patients)} patients (image uint8, "
        f"mask = readers per voxel, spacing)",
        f"{out / 'nodules.csv'}: one row per nodule: geometry, median LIDC ratings of 1-4 "
        f"readers, fold 0-{FOLDS - 1} by patient",
    ]
    if options.new_volumes:
        lines += _write_new(options, out)
    return lines + _write_scan(options, out / "scan")


def _patients(options: NoduleSampleConfig) -> dict[str, tuple[int, float, float, int]]:
    """Patient id -> (fold, slice mm, pixel mm, nodule count); each patient has >= 1 nodule and
    the folds get about equal numbers of nodules (largest patients placed first)."""
    rng = np.random.default_rng([options.seed, _PATIENT_STREAM])
    extra = rng.integers(0, options.patients, options.nodules - options.patients)
    counts = 1 + np.bincount(extra, minlength=options.patients)
    slices = rng.choice(SLICE_THICKNESS_MM, options.patients, p=[0.3, 0.3, 0.4])
    pixels = np.round(rng.uniform(0.6, 0.8, options.patients), 3)
    order = np.lexsort((rng.random(options.patients), -counts))  # most nodules first
    folds = np.zeros(options.patients, dtype=int)
    load = np.zeros((FOLDS, 2), dtype=int)  # nodules, patients per fold
    for p in order:
        fold = int(np.lexsort((load[:, 1], load[:, 0]))[0])  # fewest nodules, then patients
        folds[p] = fold
        load[fold] += (counts[p], 1)
    width = max(4, len(str(options.patients)))
    return {
        f"P{i + 1:0{width}d}": (int(folds[i]), float(slices[i]), float(pixels[i]), int(counts[i]))
        for i in range(options.patients)
    }


def _write_new(options: NoduleSampleConfig, out: Path) -> list[str]:
    width = max(2, len(str(options.new_volumes)))
    truth = []
    for i in range(1, options.new_volumes + 1):
        rng = np.random.default_rng([options.seed, _NEW_STREAM, i])
        slice_mm = float(rng.choice(SLICE_THICKNESS_MM))
        pixel_mm = round(float(rng.uniform(0.6, 0.8)), 3)
        nodule = render_nodule(options.size, slice_mm, pixel_mm, rng, options.context_mm)
        nodule_id = f"new_{i:0{width}d}"
        _write_npz(out / "new" / f"{nodule_id}.npz", nodule, (slice_mm, pixel_mm))
        malignancy = nodule.ratings["malignancy"]
        label = "benign" if malignancy < 3 else "malignant" if malignancy > 3 else "indeterminate"
        truth.append([nodule_id, f"new/{nodule_id}.npz", _num(malignancy), label])
    header = ["nodule_id", "path", "malignancy", "label"]
    write_text_atomic(out / "new_truth.csv", _csv_text(header, truth))
    return [
        f"{out / 'new'}/: {len(truth)} nodule crops to predict",
        f"{out / 'new_truth.csv'}: nodule_id,path,malignancy,label of the new crops, to check "
        "predictions (abyssal predict nodule --volumes new_truth.csv gives their AUROC)",
    ]


# --- the latent nodule -------------------------------------------------------------------------


def _draw_shape(rng: np.random.Generator, max_diameter: float) -> _Shape:
    """A latent malignancy class and severity, then a shape whose look follows them."""
    kind = int(rng.choice(3, p=[0.4, 0.25, 0.35]))
    severity = float(rng.uniform(*((0.0, 0.35), (0.35, 0.65), (0.65, 1.0))[kind]))
    median, low, high = ((6.5, 3.0, 16.0), (10.0, 4.0, 22.0), (14.0, 6.0, 30.0))[kind]
    diameter = float(np.clip(median * np.exp(rng.normal(0, 0.4)), low, high))
    diameter = min(diameter, max_diameter)
    elongation = rng.uniform(*((0.85, 1.0), (0.7, 0.95), (0.55, 0.85))[kind])
    scales = np.array([1.0, rng.uniform(elongation, 1.0), elongation])
    rotation = np.linalg.qr(rng.normal(size=(3, 3)))[0]
    n_lobes = int(rng.integers(3, 7))
    amplitude = rng.uniform(*((0.0, 0.04), (0.03, 0.12), (0.12, 0.3))[kind])
    lobes = np.column_stack(
        [_unit(rng.normal(size=(n_lobes, 3))), amplitude * rng.choice([-1.0, 1.0], n_lobes)]
    )
    spiculated = rng.random() < (0.05, 0.4, 0.75)[kind]
    n_spikes = int(rng.integers(*((1, 3), (1, 6), (4, 15))[kind])) if spiculated else 0
    spikes = np.column_stack(
        [
            _unit(rng.normal(size=(n_spikes, 3)) * [0.5, 1.0, 1.0]),  # mostly in-plane
            diameter / 2 * rng.uniform(0.4, 1.0, n_spikes) + 2.0,
            rng.uniform(0.9, 1.6, n_spikes),
        ]
    )
    texture = int(
        rng.choice([5, 3, 1], p=((0.85, 0.05, 0.1), (0.6, 0.2, 0.2), (0.9, 0.1, 0))[kind])
    )
    calcified = rng.random() < (0.35, 0.05, 0.0)[kind]
    calcification = (
        int(rng.choice([1, 2, 3, 4, 5], p=[0.2, 0.15, 0.2, 0.15, 0.3])) if calcified else 6
    )
    internal = 1 if calcified else int(rng.choice([1, 2, 3, 4], p=[0.92, 0.02, 0.02, 0.04]))
    return _Shape(
        kind=kind,
        severity=severity,
        radius=diameter / 2,
        scales=scales / np.cbrt(scales.prod()),
        rotation=rotation,
        lobes=lobes,
        blur=float(rng.uniform(*((0.2, 0.6), (0.4, 1.2), (0.8, 2.0))[kind])),
        spikes=spikes,
        level=float(rng.uniform(*{5: (140, 200), 3: (90, 115), 1: (70, 100)}[texture])),
        texture=texture,
        calcification=calcification,
        internal=internal,
    )


def _ratings(shape: _Shape, readers: int, rng: np.random.Generator) -> dict[str, float]:
    """Each reader's rating is the shape's value plus noise, rounded and clipped to the scale;
    the CSV holds the median over the readers."""
    r = shape.radius
    spiculation = float(np.sum(shape.spikes[:, 3])) / max(r, 1.0) if len(shape.spikes) else 0.0
    bases = {
        "subtlety": 1 + 4 * np.clip(0.6 * (2 * r - 3) / 12 + 0.4 * (shape.level - 70) / 130, 0, 1),
        "internalStructure": shape.internal,
        "calcification": shape.calcification,
        "sphericity": 1 + 4 * np.clip((shape.scales.min() / shape.scales.max() - 0.4) / 0.6, 0, 1),
        "margin": 5 - 4 * np.clip((shape.blur - 0.2) / 1.6, 0, 1),
        "lobulation": 1 + 4 * np.clip(abs(shape.lobes[0, 3]) / 0.25, 0, 1),
        "spiculation": 1 + 4 * np.clip(spiculation / 6, 0, 1),
        "texture": shape.texture,
        "malignancy": _CLASSES[shape.kind][0]
        + (shape.severity - (0, 0.35, 0.65)[shape.kind]) / 0.35,
    }
    ratings = {}
    for name, base in bases.items():
        low, high = _CLASSES[shape.kind] if name == "malignancy" else RATINGS[name]
        spread = 0.15 if name in ("internalStructure", "calcification") else 0.6
        votes = np.clip(np.rint(base + rng.normal(0, spread, readers)), low, high)
        ratings[name] = float(np.median(votes))
    return ratings


# --- drawing a crop ----------------------------------------------------------------------------


def _render(
    shape: _Shape,
    size: int,
    spacing: tuple[float, float, float],
    readers: int,
    rng: np.random.Generator,
    context_mm: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw the crop on a generous z grid in mm, then keep the nodule's slices and a margin (or
    ``context_mm`` of z around the centre, if that is more)."""
    reach = shape.radius * shape.scales.max() * (1 + np.abs(shape.lobes[:, 3]).sum()) + shape.blur
    half = int(np.ceil(context_mm / 2 / spacing[0]))  # slices each side for the context
    depth = max(2 * int(np.ceil(reach / spacing[0])) + 5, 2 * half + 3)  # spare for the margin
    centre = np.array([(depth - 1) / 2, (size - 1) / 2, (size - 1) / 2]) + rng.uniform(
        [-0.25, -1.5, -1.5], [0.25, 1.5, 1.5]
    )
    grid = np.stack(np.indices((depth, size, size)), axis=-1).astype(np.float64)
    points = (grid - centre) * np.asarray(spacing)  # (Z, S, S, 3) mm from the nodule centre
    image = _background(points, shape, spacing[1], rng)
    body, local = _body(shape, points)  # (Z, S, S) coverage, (Z, S, S, 3) local frame
    image = _blend(image, _tissue(shape, body, local, rng), body)
    for direction, length, width in zip(
        shape.spikes[:, :3], shape.spikes[:, 3], shape.spikes[:, 4], strict=True
    ):
        start = 0.5 * shape.radius * direction
        end = (shape.radius + length) * direction
        spike = _segment(points, start, end, width, spacing[1], taper=0.6)
        image = _blend(image, shape.level * rng.uniform(0.8, 1.0), spike * rng.uniform(0.75, 1.0))
    image = image + rng.normal(0, 3.0, image.shape)
    mask = _reader_mask(body, readers, rng)
    kept = np.flatnonzero(mask.any(axis=(1, 2)))
    low = max(0, kept[0] - int(rng.integers(1, 3)))
    high = min(depth, kept[-1] + 1 + int(rng.integers(1, 3)))
    if context_mm > 0:
        middle = round(float(centre[0]))
        low, high = min(low, max(0, middle - half)), max(high, min(depth, middle + half + 1))
    pixels = np.clip(np.rint(image[low:high]), 0, 255).astype(np.uint8)
    return pixels, mask[low:high]


def _body(shape: _Shape, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Coverage of the lobulated ellipsoid (soft edge ``blur`` mm wide) and the local frame."""
    local = points @ shape.rotation / shape.scales  # (..., 3) ellipsoid becomes a sphere
    rho = np.linalg.norm(local, axis=-1)
    unit = local / np.maximum(rho, 1e-9)[..., None]
    bumps = np.exp((unit @ shape.lobes[:, :3].T - 1) / 0.15) @ shape.lobes[:, 3]  # low frequency
    surface = shape.radius * (1 + bumps)
    return np.clip((surface - rho) / shape.blur + 0.5, 0, 1), local


def _tissue(
    shape: _Shape, body: np.ndarray, local: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Brightness inside the nodule: its texture, then calcium or an inner structure."""
    r = shape.radius
    level = np.full(body.shape, shape.level) + rng.normal(0, 6.0, body.shape)
    if shape.texture == 3:  # part-solid: a solid core in ground glass
        level = _blend(level, rng.uniform(145, 185), _ball(local, 0, rng.uniform(0.3, 0.6) * r))
    if shape.calcification < 6:
        level = _blend(level, rng.uniform(225, 255), _calcium(shape, local, rng))
    elif shape.internal > 1:
        inner = {2: shape.level * 0.8, 3: shape.level * 0.45, 4: 20.0}[shape.internal]
        level = _blend(level, inner, _ball(local, 0, rng.uniform(0.3, 0.45) * r))
    return level


def _calcium(shape: _Shape, local: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Coverage of the calcified part, by LIDC pattern."""
    r, pattern = shape.radius, shape.calcification
    if pattern == 1:  # popcorn: a few bright spots
        n = int(rng.integers(3, 6))
        centres = _unit(rng.normal(size=(n, 3))) * rng.uniform(0, 0.5 * r, (n, 1))
        return np.maximum.reduce([_ball(local, c, rng.uniform(0.15, 0.25) * r) for c in centres])
    if pattern == 2:  # laminated: a bright shell
        rho = np.linalg.norm(local, axis=-1)
        return np.clip((0.12 * r - np.abs(rho - 0.55 * r)) / 0.4 + 0.5, 0, 1)
    offset = _unit(rng.normal(size=3)) * 0.4 * r if pattern == 4 else 0
    fraction = {3: 0.8, 4: 0.35, 5: 0.45}[pattern]
    return _ball(local, offset, fraction * r)


def _background(
    points: np.ndarray, shape: _Shape, pixel_mm: float, rng: np.random.Generator
) -> np.ndarray:
    """Lung parenchyma (dark, mottled), a few bright vessels, sometimes a chest wall."""
    image = np.full(points.shape[:-1], rng.uniform(12, 35))
    for _ in range(3):  # low-frequency mottle
        wave = _unit(rng.normal(size=3)) * 2 * np.pi / rng.uniform(8, 25)
        image += rng.uniform(2, 5) * np.cos(points @ wave + rng.uniform(0, 2 * np.pi))
    image += rng.normal(0, rng.uniform(3, 6), image.shape)
    half = np.abs(points).max(axis=(0, 1, 2))
    for _ in range(int(rng.integers(1, 5))):  # vessels: long tubes that miss the centre
        along = _unit(rng.normal(size=3)) * 3 * half.max()
        miss = shape.radius * rng.uniform(0.7, 1.6) + 1.0
        through = _unit(np.cross(along, rng.normal(size=3))) * miss
        tube = _segment(points, through - along, through + along, rng.uniform(1, 3.5), pixel_mm)
        image = _blend(image, rng.uniform(90, 170), tube)
    if rng.random() < 0.15:  # chest wall beyond a plane a little outside the nodule
        normal = _unit(np.array([0.0, *rng.normal(size=2)]))
        offset = shape.radius * shape.scales.max() + rng.uniform(2, 8)
        wall = np.clip((points @ normal - offset) / 1.0 + 0.5, 0, 1)
        image = _blend(image, rng.uniform(150, 180) + rng.normal(0, 6, image.shape), wall)
    return image


def _reader_mask(body: np.ndarray, readers: int, rng: np.random.Generator) -> np.ndarray:
    """How many readers outlined each voxel: each cuts the soft edge at their own level."""
    mask = np.zeros(body.shape, dtype=np.uint8)
    for cut in rng.uniform(0.25, 0.75, readers):
        outline = body >= cut
        if not outline.any():  # a tiny nodule between voxel centres: its brightest voxel
            outline.flat[np.argmax(body)] = True
        mask += outline
    return mask


def _segment(
    points: np.ndarray,
    p: np.ndarray,
    q: np.ndarray,
    width: float,
    pixel_mm: float,
    taper: float = 0.0,
) -> np.ndarray:
    """Coverage of a segment ``p``-``q`` (mm) ``width`` mm wide, thinning by ``taper`` to ``q``."""
    d = q - p
    t = np.clip((points - p) @ d / max(float(d @ d), 1e-9), 0, 1)
    distance = np.linalg.norm(points - (p + t[..., None] * d), axis=-1)
    return np.clip((width * (1 - taper * t) / 2 - distance) / pixel_mm + 0.5, 0, 1)


def _ball(local: np.ndarray, centre: np.ndarray | float, radius: float) -> np.ndarray:
    return np.clip((radius - np.linalg.norm(local - centre, axis=-1)) / 0.5 + 0.5, 0, 1)


def _blend(under: np.ndarray, over: np.ndarray | float, alpha: np.ndarray) -> np.ndarray:
    return under * (1 - alpha) + over * alpha


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


# --- the whole scan ----------------------------------------------------------------------------


def _write_scan(options: NoduleSampleConfig, folder: Path) -> list[str]:
    """The scan, its candidates (nodule centres and empty lung, shuffled) and their truth."""
    rng = np.random.default_rng([options.seed, _SCAN_STREAM])
    shape = (options.scan_slices, options.scan_size, options.scan_size)
    points = _scan_points(shape)
    hu, lung = _chest(points, rng)
    planted = _plant_nodules(hu, lung, points, options.scan_nodules, rng)
    empty = _empty_points(hu, lung, rng)
    sz, sy, sx = SCAN_SPACING
    origin = (
        round(-(shape[2] - 1) / 2 * sx + rng.uniform(-5, 5), 2),
        round(-(shape[1] - 1) / 2 * sy + rng.uniform(-25, -5), 2),
        round(rng.uniform(-300, -100), 2),
    )
    found = [(zyx, "1", f"{d:.1f}") for zyx, d in planted] + [(zyx, "0", "0") for zyx in empty]
    found = [found[i] for i in rng.permutation(len(found))]
    volume = Volume(hu, SCAN_SPACING, origin)
    world = voxel_to_world(volume, np.array([zyx for zyx, _, _ in found], dtype=np.float64))
    rows = [["scan", *(f"{c:.3f}" for c in xyz)] for xyz in world.reshape(-1, 3)]
    truth = [[*row, is_nodule, d] for row, (_, is_nodule, d) in zip(rows, found, strict=True)]
    _write_nifti(folder / "scan.nii.gz", np.rint(hu).astype(np.int16), origin)
    header = ["seriesuid", "coordX", "coordY", "coordZ"]
    write_text_atomic(folder / "candidates.csv", _csv_text(header, rows))
    write_text_atomic(folder / "truth.csv", _csv_text([*header, "is_nodule", "diameter_mm"], truth))
    return [
        f"{folder / 'scan.nii.gz'}: one chest CT in HU, {shape[0]} x {shape[1]} x {shape[2]} "
        f"voxels of {sz} x {sy} x {sx} mm, {len(planted)} nodules in the lungs",
        f"{folder / 'candidates.csv'}: {len(rows)} LUNA16-style candidates (world mm, LPS): the "
        f"nodule centres and {len(empty)} points of empty lung",
        f"{folder / 'truth.csv'}: the candidates with is_nodule and diameter_mm",
    ]


def _scan_points(shape: tuple[int, int, int]) -> np.ndarray:
    """(Z, Y, X, 3) mm (z, y, x) of each voxel centre from the scan's centre."""
    axes = [(np.arange(n) - (n - 1) / 2) * s for n, s in zip(shape, SCAN_SPACING, strict=True)]
    return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)


def _chest(points: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """HU of air, an elliptic body wall, two lungs (narrower at the ends) and their vessels."""
    z, y, x = points[..., 0], points[..., 1], points[..., 2]
    half_x, half_y = 0.9 * np.abs(x).max(), 0.68 * np.abs(y).max()  # body semi-axes
    body = (x / half_x) ** 2 + (y / half_y) ** 2 <= 1
    taper = 0.8 + 0.2 * np.cos(np.pi * z / (2 * np.abs(z).max() + 1e-9))  # narrower at the ends
    lung_x = (np.abs(x) - 0.47 * half_x) / (0.36 * half_x * taper)
    lung = lung_x**2 + (y / (0.78 * half_y * taper)) ** 2 <= 1
    hu = np.full(body.shape, -1000.0)
    hu[body] = 40 + rng.normal(0, 12, int(body.sum()))
    hu[lung] = -850 + rng.normal(0, 25, int(lung.sum()))
    inside = np.flatnonzero(lung)
    for _ in range(int(rng.integers(4, 8))):
        p, q = points.reshape(-1, 3)[rng.choice(inside, 2)]
        tube = _segment(points, p, q, rng.uniform(1.5, 4.0), SCAN_SPACING[1]) * lung
        hu = _blend(hu, rng.uniform(-60, 40), tube)
    return hu, lung


def _clearance(hu: np.ndarray, lung: np.ndarray) -> np.ndarray:
    """Distance in mm from each voxel to the nearest voxel that is not plain lung (lung below
    -600 HU): the body, a vessel, a nodule, or the scan's first or last slice."""
    ndimage = require("scipy.ndimage", extra="nodule", purpose="the sample scan")
    padded = np.pad(lung & (hu < -600), ((1, 1), (0, 0), (0, 0)))
    return ndimage.distance_transform_edt(padded, sampling=SCAN_SPACING)[1:-1]


def _plant_nodules(
    hu: np.ndarray, lung: np.ndarray, points: np.ndarray, count: int, rng: np.random.Generator
) -> list[tuple[tuple[int, int, int], float]]:
    """Draw ``count`` lumpy spheres of 0-60 HU centred on voxels of plain lung, clear of the
    lungs' edge, vessels and each other; returns their (z, y, x) voxels and diameters."""
    planted: list[tuple[tuple[int, int, int], float]] = []
    for _ in range(count):
        clearance, diameter = _clearance(hu, lung), rng.uniform(5, 12)
        while not (clearance > diameter / 2 + 3).any():
            if diameter < 3:
                raise ConfigError(
                    f"no room for {count} nodules in the scan's lungs; raise scan_size or "
                    "scan_slices, or lower scan_nodules"
                )
            diameter *= 0.8
        zyx = _pick(clearance > diameter / 2 + 3, rng)
        offset = points - points[zyx]  # (Z, Y, X, 3) mm
        distance = np.linalg.norm(offset, axis=-1)
        lobes = _unit(rng.normal(size=(3, 3)))
        unit = offset / np.maximum(distance, 1e-9)[..., None]
        bumps = np.exp((unit @ lobes.T - 1) / 0.3) @ rng.uniform(-0.06, 0.06, 3)
        alpha = np.clip((diameter / 2 * (1 + bumps) - distance) / 0.6 + 0.5, 0, 1)
        hu[...] = _blend(hu, rng.uniform(0, 60) + rng.normal(0, 10, hu.shape), alpha)
        planted.append((zyx, round(float(diameter), 1)))
    return planted


def _empty_points(
    hu: np.ndarray, lung: np.ndarray, rng: np.random.Generator
) -> list[tuple[int, int, int]]:
    """Two voxels of plain lung, as clear of everything else as the scan allows."""
    clearance = _clearance(hu, lung)
    allowed = clearance > min(6.0, 0.5 * float(clearance.max()))
    chosen: list[tuple[int, int, int]] = []
    for _ in range(2):
        zyx = _pick(allowed, rng)
        near = zip(zyx, (2, 10, 10), strict=True)  # keep the second one apart
        allowed[tuple(slice(max(0, i - r), i + r + 1) for i, r in near)] = False
        allowed = allowed if allowed.any() else clearance > 0
        chosen.append(zyx)
    return chosen


def _pick(allowed: np.ndarray, rng: np.random.Generator) -> tuple[int, int, int]:
    """A random voxel (z, y, x) where ``allowed`` holds."""
    flat = rng.choice(np.flatnonzero(allowed))
    return tuple(int(i) for i in np.unravel_index(flat, allowed.shape))  # type: ignore[return-value]


# --- files -------------------------------------------------------------------------------------


def _write_nifti(path: Path, hu_zyx: np.ndarray, origin_xyz: tuple[float, float, float]) -> None:
    """Write a (z, y, x) int16 array as NIfTI: the affine maps (x, y, z) indices to RAS+ mm,
    so the LPS origin and axes are negated in x and y. gzip without a time stamp keeps the
    bytes a function of the content."""
    nib = require("nibabel", extra="nodule", purpose="writing the sample scan")
    sz, sy, sx = SCAN_SPACING
    ox, oy, oz = origin_xyz
    affine = np.array(
        [[-sx, 0, 0, -ox], [0, -sy, 0, -oy], [0, 0, sz, oz], [0, 0, 0, 1]], dtype=np.float64
    )
    image = nib.Nifti1Image(np.ascontiguousarray(hu_zyx.transpose(2, 1, 0)), affine)
    image.header.set_data_dtype(np.int16)
    image.header.set_xyzt_units("mm")
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    write_bytes_atomic(path, gzip.compress(image.to_bytes(), mtime=0))


def _write_npz(path: Path, nodule: SyntheticNodule, spacing: tuple[float, float]) -> None:
    """A deflated .npz with fixed member time stamps, so the same arrays give the same bytes."""
    slice_mm, pixel_mm = spacing
    arrays = {
        "image": nodule.image,
        "mask": nodule.mask,
        "spacing": np.array([slice_mm, pixel_mm, pixel_mm]),
    }
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, array in arrays.items():
            member = io.BytesIO()
            np.lib.format.write_array(member, np.ascontiguousarray(array), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, member.getvalue())
    write_bytes_atomic(path, buffer.getvalue())


def _row(
    nodule_id: str, patient: str, nodule: SyntheticNodule, slice_mm: float, pixel_mm: float
) -> list[str]:
    geometry = [nodule_id, patient, str(nodule.image.shape[0]), str(nodule.readers)]
    geometry += [_num(slice_mm), _num(pixel_mm), f"{nodule.diameter_mm:.1f}"]
    return geometry + [_num(nodule.ratings[name]) for name in RATINGS]


def _num(value: float) -> str:
    """A short decimal: 3 for 3.0, 3.5, 0.712."""
    return f"{round(value, 3):g}"


def _csv_text(header: list[str], rows: list[list[str]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()
