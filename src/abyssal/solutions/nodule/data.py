"""Nodule volumes read, resampled to cubes of one voxel size, labelled and split by patient.

Every volume becomes a ``cube``-voxel cube at ``voxel_mm`` around its centre (per-nodule crops
are centred on their nodule), its intensities mapped to [0, 1] (:func:`unit_intensity`) and kept
as uint8. Splits follow the table's ``fold`` column when it has one (``data.test_fold``,
``data.val_fold``; with ``data.val_from=patients`` validation is a seeded share of the other
folds' patients), else a seeded split of patients: no patient is ever in two splits. Nodules
without a malignancy label stay in their split: self-supervised pretraining uses them all, and
the attribute heads learn from those of the training split.

Example:
    >>> data = prepare_nodule_data(NoduleDataConfig(path="lidc/"))  # doctest: +SKIP
    >>> data.cubes.shape, data.counts("train")  # doctest: +SKIP
    ((2059, 32, 32, 32), array([540, 247]))
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from abyssal.core.errors import ConfigError, DataError
from abyssal.data.splits import split_file, split_names, stratified_split
from abyssal.solutions.nodule.config import NoduleDataConfig
from abyssal.solutions.nodule.records import CLASSES, NoduleRecord, Table, read_records
from abyssal.solutions.nodule.volumes import Volume, crop_cube, read_volume, voxel_to_world

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


def resolve_intensity(array: np.ndarray, setting: str) -> str:
    """``setting``, or for ``auto``: ``hu`` when any voxel is negative, ``unit`` when all lie in
    [0, 1], else ``uint8`` (0-255, a display window already applied)."""
    if setting != "auto":
        return setting
    low, high = float(array.min()), float(array.max())
    if low < 0:
        return "hu"
    return "unit" if high <= 1.0 else "uint8"


def unit_intensity(array: np.ndarray, kind: str, hu_window: Sequence[float]) -> np.ndarray:
    """Voxels mapped to [0, 1] float32: ``uint8`` / 255, ``hu`` through the window, ``unit``
    clipped."""
    if kind == "uint8":
        out = array / 255.0
    elif kind == "hu":
        low, high = hu_window
        out = (array - low) / (high - low)
    else:
        out = array
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def outside_value(kind: str, hu_window: Sequence[float]) -> float:
    """The raw value that maps to 0 (what lies outside a volume): air."""
    return float(hu_window[0]) if kind == "hu" else 0.0


def cube_at(
    volume: Volume,
    center_xyz_mm: Sequence[float] | None,
    *,
    cube: int,
    voxel_mm: float,
    intensity: str,
    hu_window: Sequence[float],
    name: str | None = None,
) -> np.ndarray:
    """A ``cube``-voxel cube at ``voxel_mm`` around a world point (``None``: the volume's centre),
    intensities in [0, 1].

    Shapes:
        output: (cube, cube, cube) float32, (z, y, x).
    """
    kind = resolve_intensity(volume.array, intensity)
    if center_xyz_mm is None:
        center_xyz_mm = voxel_to_world(volume, (np.asarray(volume.array.shape) - 1) / 2.0)
    raw = crop_cube(
        volume,
        center_xyz_mm,
        voxel_mm=voxel_mm,
        out_shape=cube,
        fill=outside_value(kind, hu_window),
        name=name,
    )
    return unit_intensity(raw, kind, hu_window)


def to_uint8(cube: np.ndarray) -> np.ndarray:
    """[0, 1] float to 0-255 uint8 (how cubes are held in memory)."""
    return np.rint(np.clip(cube, 0.0, 1.0) * 255.0).astype(np.uint8)


def load_cube(
    record: NoduleRecord, cfg: NoduleDataConfig, *, masks: bool = False
) -> tuple[np.ndarray, np.ndarray | None]:
    """The record's volume as a uint8 cube, and with ``masks`` its mask cut the same way (uint8,
    agreement times 255; ``None`` when the volume has none); DataError naming the nodule and
    file if it fails."""
    try:
        volume = read_volume(record.path, spacing=record.spacing)
        how = {"cube": cfg.cube, "voxel_mm": cfg.voxel_mm, "name": record.nodule_id}
        image = cube_at(volume, None, intensity=cfg.intensity, hu_window=cfg.hu_window, **how)
        mask = None
        if masks and volume.mask is not None:
            outline = replace(volume, array=volume.mask, mask=None)
            mask = to_uint8(cube_at(outline, None, intensity="unit", hu_window=(0, 1), **how))
        return to_uint8(image), mask
    except DataError as e:
        raise DataError(f"nodule {record.nodule_id}: {e.reason}", path=record.path) from None


@dataclass
class NoduleData:
    """Nodules as cubes, labelled and split.

    Attributes:
        cubes: (N, S, S, S) uint8, intensities in [0, 1] times 255.
        labels: (N,) int64: 0 benign, 1 malignant, -1 unlabelled.
        attributes: (N, A) float32 ratings and diameter (mm), NaN where missing.
        attribute_names: the A names.
        records: the table rows kept, in order.
        splits: ascending indices per split (labelled and unlabelled nodules).
        bad: nodules left out (``data.skip_bad``), with why.
        masks: (N, S, S, S) uint8 nodule masks (agreement times 255) when they were asked for
            and some volume has one, else ``None``.
        has_mask: (N,) bool, which nodules have a mask (all False without masks).
        shares: (N,) float32 readers' share of malignant calls (NaN where the table has none).
        fingerprint, description: for the version's lineage.
    """

    cubes: np.ndarray
    labels: np.ndarray
    attributes: np.ndarray
    attribute_names: list[str]
    records: list[NoduleRecord]
    splits: dict[str, np.ndarray]
    bad: list[tuple[str, str]] = field(default_factory=list)
    masks: np.ndarray | None = None
    has_mask: np.ndarray | None = None
    shares: np.ndarray | None = None
    fingerprint: str = ""
    description: str = ""
    classes: tuple[str, ...] = CLASSES

    @property
    def cube(self) -> int:
        return int(self.cubes.shape[-1])

    def __post_init__(self) -> None:
        if self.has_mask is None:
            self.has_mask = np.zeros(len(self.labels), dtype=bool)
        if self.shares is None:
            self.shares = np.array([r.share for r in self.records], dtype=np.float32)

    def rows(self, split: str, *, labelled: bool = False) -> np.ndarray:
        rows = self.splits[split]
        return rows[self.labels[rows] >= 0] if labelled else rows

    def attribute_values(self, rows: np.ndarray, names: list[str]) -> np.ndarray:
        """(len(rows), len(names)) the named attributes of ``rows`` (a model's own attributes,
        which may be fewer than the table's), NaN where missing."""
        columns = [self.attribute_names.index(n) for n in names]
        return self.attributes[np.asarray(rows)][:, columns]

    def counts(self, split: str) -> np.ndarray:
        """(benign, malignant) nodules in ``split``."""
        return np.bincount(self.labels[self.rows(split, labelled=True)], minlength=2)

    def run_files(self) -> dict[str, str]:
        """``split.csv`` (nodule_id, patient_id, label, split) written into the run folder."""
        where = split_names(len(self.records), self.splits)
        names = [CLASSES[label] if label >= 0 else "unlabelled" for label in self.labels]
        return split_file(
            ["nodule_id", "patient_id", "label", "split"],
            (
                [record.nodule_id, record.patient, name, split]
                for record, name, split in zip(self.records, names, where, strict=True)
            ),
        )


def prepare_nodule_data(
    cfg: NoduleDataConfig, *, progress: bool = True, masks: bool = False
) -> NoduleData:
    """Read the table and every volume, cut the cubes (and with ``masks`` the volumes' nodule
    masks), split by patient.

    Raises:
        ConfigError: no ``data.path``; a fold setting without a fold column's values.
        DataError: a bad table row (named); an unreadable or invalid volume (named) unless
            ``data.skip_bad``; a fold column that puts one patient in two splits (the row
            named); a split without benign and malignant nodules.
    """
    if not cfg.path:
        raise ConfigError(
            "data.path is required: a CSV of nodule_id and malignancy (or label), or a folder "
            "holding nodules.csv and volumes/ (abyssal generate nodule --out DIR writes a sample)"
        )
    table = read_records(cfg.path, volumes=cfg.volumes, label_column=cfg.label_column)
    if table.has_folds and cfg.test_fold is not None:  # fail before any volume is read
        _chosen_folds(table.records, cfg)
    cubes, mask_cubes, kept, bad = _load_all(table.records, cfg, progress, masks)
    records = [table.records[i] for i in kept]
    labels = np.array([r.label for r in records], dtype=np.int64)
    attributes = np.array([r.attributes for r in records], dtype=np.float32).reshape(
        len(records), len(table.attributes)
    )
    splits = _split(records, table, cfg)
    data = NoduleData(cubes, labels, attributes, list(table.attributes), records, splits, bad)
    if mask_cubes is not None:
        data.has_mask = np.array([m is not None for m in mask_cubes])
        if data.has_mask.any():
            empty = np.zeros_like(cubes[0])
            data.masks = np.stack([empty if m is None else m for m in mask_cubes])
    for split in SPLITS:
        counts = data.counts(split)
        if counts.min() == 0:
            raise DataError(
                f"the {split} split has {counts[0]} benign and {counts[1]} malignant nodules; "
                "each split needs both (more labelled nodules, or other folds / fractions)",
                path=table.path,
            )
    data.fingerprint = _fingerprint(data)
    data.description = _describe(data, table, cfg)
    return data


Loaded = tuple[np.ndarray, "list[np.ndarray | None] | None", list[int], list[tuple[str, str]]]
"""Cubes, their masks (with masks asked for), the rows kept and the bad volumes."""

_LAST_LOAD: dict[tuple, Loaded] = {}
"""The last set of cubes read in this process, by what they were cut from and how (a benchmark
or a notebook training many models on one data set reads the volumes once)."""


def _load_key(records: list[NoduleRecord], cfg: NoduleDataConfig, masks: bool) -> tuple:
    files = []
    for r in records:
        try:
            stat = r.path.stat()
            files.append((str(r.path), stat.st_size, stat.st_mtime_ns, r.spacing, r.nodule_id))
        except OSError:
            files.append((str(r.path), -1, -1, r.spacing, r.nodule_id))
    how = (cfg.cube, cfg.voxel_mm, cfg.intensity, tuple(cfg.hu_window), cfg.skip_bad, masks)
    return (tuple(files), how)


def _load_all(
    records: list[NoduleRecord], cfg: NoduleDataConfig, progress: bool, masks: bool
) -> Loaded:
    key = _load_key(records, cfg, masks)
    if key not in _LAST_LOAD:
        _LAST_LOAD.clear()
        _LAST_LOAD[key] = _read_all(records, cfg, progress, masks)
    return _LAST_LOAD[key]


def _read_all(
    records: list[NoduleRecord], cfg: NoduleDataConfig, progress: bool, masks: bool
) -> Loaded:
    from tqdm.auto import tqdm

    cubes: list[np.ndarray] = []
    outlines: list[np.ndarray | None] = []
    kept, bad = [], []
    for i, record in enumerate(
        tqdm(records, desc="volumes", unit="vol", disable=not progress, leave=False)
    ):
        try:
            cube, outline = load_cube(record, cfg, masks=masks)
        except DataError as e:
            if not cfg.skip_bad:
                raise
            bad.append((record.nodule_id, str(e)))
            log.warning("left out %s", e)
            continue
        cubes.append(cube)
        outlines.append(outline)
        kept.append(i)
    if not cubes:
        raise DataError("no readable volume", path=str(cfg.path))
    return np.stack(cubes), outlines if masks else None, kept, bad


def _split(
    records: list[NoduleRecord], table: Table, cfg: NoduleDataConfig
) -> dict[str, np.ndarray]:
    folds = np.array([r.fold for r in records])
    if table.has_folds and cfg.test_fold is not None and cfg.val_from == "patients":
        _chosen_folds(records, cfg)
        rest = np.flatnonzero(folds != cfg.test_fold)
        patients = sorted({records[i].patient for i in rest})
        drawn = stratified_split(
            len(patients),
            None,
            val_frac=cfg.val_frac,
            test_frac=0,
            seed=cfg.split_seed,
            where=str(table.path),
            unit="patients",
        )
        chosen = {patients[i] for i in drawn["val"]}
        in_val = np.array([records[i].patient in chosen for i in rest], dtype=bool)
        splits = {
            "train": rest[~in_val],
            "val": rest[in_val],
            "test": np.flatnonzero(folds == cfg.test_fold),
        }
        _check_patients(records, splits, table)  # one patient's nodules in two folds: refused
        return splits
    if table.has_folds and cfg.test_fold is not None:
        val_fold = _chosen_folds(records, cfg)
        splits = {
            "test": np.flatnonzero(folds == cfg.test_fold),
            "val": np.flatnonzero(folds == val_fold),
        }
        splits["train"] = np.flatnonzero((folds != cfg.test_fold) & (folds != val_fold))
        _check_patients(records, splits, table)
        return splits
    patients = sorted({r.patient for r in records})
    by_patient = stratified_split(
        len(patients),
        None,
        val_frac=cfg.val_frac,
        test_frac=cfg.test_frac,
        seed=cfg.split_seed,
        where=str(table.path),
        unit="patients",
    )
    index = {p: i for i, p in enumerate(patients)}
    owner = np.array([index[r.patient] for r in records])
    return {s: np.flatnonzero(np.isin(owner, by_patient[s])) for s in SPLITS}


def _chosen_folds(records: list[NoduleRecord], cfg: NoduleDataConfig) -> int | None:
    """The validation fold (``data.val_fold``, or the fold after the test fold; ``None`` with
    ``data.val_from=patients``); ConfigError if either is not a fold of the table."""
    known = sorted({r.fold for r in records})
    val_fold = cfg.val_fold
    if val_fold is None and cfg.val_from == "fold":
        at = known.index(cfg.test_fold) if cfg.test_fold in known else -1
        val_fold = known[(at + 1) % len(known)] if at >= 0 else -2
    for name, fold in (("test_fold", cfg.test_fold), ("val_fold", val_fold)):
        if fold is not None and fold not in known:
            raise ConfigError(f"data.{name}={fold} is not a fold of the table ({known})")
    return val_fold


def _check_patients(
    records: list[NoduleRecord], splits: dict[str, np.ndarray], table: Table
) -> None:
    """DataError (naming the row) when the fold column puts one patient in two splits."""
    where = {int(i): name for name in SPLITS for i in splits[name]}
    first: dict[str, tuple[str, NoduleRecord]] = {}
    for i in sorted(where):
        record, split = records[i], where[i]
        seen = first.setdefault(record.patient, (split, record))
        if seen[0] != split:
            raise DataError(
                f"patient {record.patient!r} is in fold {seen[1].fold} (row {seen[1].row}, "
                f"{seen[0]}) and fold {record.fold} ({split}); give all of a patient's nodules "
                "one fold",
                path=table.path,
                row=record.row,
                column="fold",
            )


def _fingerprint(data: NoduleData) -> str:
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(data.cubes).tobytes())
    digest.update(data.labels.tobytes())
    digest.update(np.nan_to_num(data.attributes, nan=-1).tobytes())
    digest.update(",".join(data.attribute_names).encode())
    if data.masks is not None:
        digest.update(np.ascontiguousarray(data.masks).tobytes())
    for name in SPLITS:
        digest.update(name.encode() + data.splits[name].tobytes())
    return digest.hexdigest()[:16]


def _describe(data: NoduleData, table: Table, cfg: NoduleDataConfig) -> str:
    parts = []
    for split in SPLITS:
        benign, malignant = data.counts(split)
        unlabelled = len(data.rows(split)) - benign - malignant
        parts.append(f"{split} {benign}/{malignant}/{unlabelled}")
    how = (
        f"test fold {cfg.test_fold}"
        if table.has_folds and cfg.test_fold is not None
        else f"patient split seed {cfg.split_seed}"
    )
    line = (
        f"{table.path}: {len(data.labels)} nodules of "
        f"{len({r.patient for r in data.records})} patients, cubes of {cfg.cube} voxels at "
        f"{cfg.voxel_mm:g} mm; labels from {table.label_source}; {how}: benign/malignant/"
        f"unlabelled {', '.join(parts)}"
    )
    if data.attribute_names:
        line += f"; attributes: {', '.join(data.attribute_names)}"
    if data.masks is not None:
        line += f"; {int(data.has_mask.sum())} with nodule masks"
    if data.bad:
        line += f"; {len(data.bad)} bad volumes left out"
    return line
