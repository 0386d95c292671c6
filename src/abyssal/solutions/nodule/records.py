"""The labels table of a nodule data set: one row per nodule, checked row by row.

Columns (names ignore case; only ``nodule_id`` and a label are required):

- ``nodule_id``: names the volume ``<volumes>/<nodule_id>.<npz|npy|nii|nii.gz|mhd|mha>``; or
  ``path``: the volume file, relative to the table's folder.
- ``label`` (``benign``/``malignant``/``0``/``1``; empty, ``indeterminate`` or ``unlabelled``:
  unlabelled) or ``malignancy`` (the
  median radiologist rating 1-5: below 3 benign, above 3 malignant, 3 unlabelled).
- optional ratings ``subtlety``, ``internalStructure``, ``calcification``, ``sphericity``,
  ``margin``, ``lobulation``, ``spiculation``, ``texture`` (LIDC scales) and ``diameter_mm``: the
  knowledge-guided decoder's targets; empty cells are missing values. The ``malignancy``
  rating (or a ``malignancy_rating`` column) is one more target, ``malignancy_rating``.
- optional ``malignancy_scores``: each reader's malignancy rating (1-5), separated by spaces,
  commas or semicolons (``"4 5 3"``); gives the readers' share of malignant calls (a rating
  above 3 counts 1, a 3 one half), the soft target of ``loss.reader_scores``.
- optional ``patient_id`` (splits never put one patient in two splits), ``fold`` (0, 1, ...:
  the split), ``slice_thickness_mm`` and ``pixel_spacing_mm`` (the volume's spacing, overriding
  the file's).

Example:
    >>> table = read_records("nodules.csv")  # doctest: +SKIP
    >>> table.records[0].label, table.attributes  # doctest: +SKIP
    (1, ['subtlety', ..., 'diameter_mm'])
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from abyssal.core.errors import DataError
from abyssal.solutions.nodule.config import ATTRIBUTES, RATING
from abyssal.solutions.nodule.volumes import SUFFIXES, volume_stem

RANGES = {
    "subtlety": (1, 5),
    "internalStructure": (1, 5),  # LIDC documents 1-4; its XML holds 5 for a few nodules
    "calcification": (1, 6),
    "sphericity": (1, 5),
    "margin": (1, 5),
    "lobulation": (1, 5),
    "spiculation": (1, 5),
    "texture": (1, 5),
    "malignancy": (1, 5),
    "malignancy_rating": (1, 5),
    "diameter_mm": (0.1, 500),
}
"""Allowed values of each rating (LIDC scales) and of the diameter in mm."""

LABELS = {
    "benign": 0,
    "0": 0,
    "malignant": 1,
    "1": 1,
    "": -1,
    "indeterminate": -1,
    "unlabelled": -1,
    "unlabeled": -1,
}
CLASSES = ("benign", "malignant")


@dataclass(frozen=True)
class NoduleRecord:
    """One row of the table.

    Attributes:
        nodule_id: the nodule's name.
        path: its volume file (may not exist yet: checked when read).
        patient: its patient (the nodule id when the table has none).
        fold: its fold, or -1.
        label: 0 benign, 1 malignant, -1 unlabelled.
        attributes: the ratings and diameter, in ``Table.attributes`` order, NaN where missing.
        spacing: (z, y, x) mm from the table, or ``None`` (the file's own).
        row: 1-based data row in the table.
        share: the readers' share of malignant calls from ``malignancy_scores`` (NaN without).
    """

    nodule_id: str
    path: Path
    patient: str
    fold: int
    label: int
    attributes: tuple[float, ...]
    spacing: tuple[float, float, float] | None
    row: int
    share: float = float("nan")


@dataclass(frozen=True)
class Table:
    """The records and which optional columns the table had."""

    path: Path
    records: list[NoduleRecord]
    attributes: list[str]
    has_folds: bool
    label_source: str


def resolve_table(path: str | Path) -> Path:
    """The labels table ``path`` names: the file itself, or ``nodules.csv`` / ``labels.csv`` in
    a folder."""
    path = Path(path)
    if path.is_dir():
        for name in ("nodules.csv", "labels.csv"):
            if (path / name).is_file():
                return path / name
        raise DataError("a folder without nodules.csv or labels.csv", path=path)
    return path


def read_records(
    path: str | Path,
    *,
    volumes: str | Path | None = None,
    label_column: str = "auto",
    labels_required: bool = True,
) -> Table:
    """Read and check the labels table (see the module docstring).

    Args:
        path: the table, or a folder holding ``nodules.csv`` or ``labels.csv``.
        volumes: the folder of volumes (default: ``volumes/`` beside the table).
        label_column: ``auto``, ``label`` or ``malignancy``.
        labels_required: refuse a table without a label column (else every label is -1: a
            table of nodules to predict).

    Raises:
        DataError: names the file, row and column: no id column, no label column, a duplicate
            id, a label or rating out of range or not a number, a fold that is not a whole
            number, a spacing that is not positive.
    """
    from abyssal.data.tables import read_table

    table_path = resolve_table(path)
    frame = read_table(table_path)
    columns = {c.lower(): c for c in frame.columns}
    folder = Path(volumes) if volumes is not None else table_path.parent / "volumes"
    ids, paths = _ids_and_paths(frame, columns, table_path, folder)
    if (
        not labels_required
        and label_column == "auto"
        and not {"label", "malignancy"} & set(columns)
    ):
        labels, source = np.full(len(frame), -1, dtype=np.int64), "none"
    else:
        labels, source = _labels(frame, columns, table_path, label_column)
    sources = {a: _attribute_column(a, columns) for a in ATTRIBUTES}
    present = [a for a in ATTRIBUTES if sources[a] is not None]
    values = (
        np.stack([_numbers(frame, sources[a], table_path, a) for a in present], axis=1)
        if present
        else np.zeros((len(frame), 0))
    )
    folds = _folds(frame, columns, table_path)
    spacing = _spacing(frame, columns, table_path)
    shares = _reader_shares(frame, columns, table_path)
    patients = (
        frame[columns["patient_id"]].fillna("").astype(str).str.strip()
        if "patient_id" in columns
        else pd.Series(ids)
    )
    records = [
        NoduleRecord(
            nodule_id=ids[i],
            path=paths[i],
            patient=patients.iloc[i] or ids[i],
            fold=int(folds[i]),
            label=int(labels[i]),
            attributes=tuple(float(v) for v in values[i]),
            spacing=None if spacing is None or np.isnan(spacing[i]).any() else tuple(spacing[i]),
            row=i + 1,
            share=float(shares[i]),
        )
        for i in range(len(frame))
    ]
    return Table(table_path, records, present, "fold" in columns, source)


def _attribute_column(name: str, columns: dict[str, str]) -> str | None:
    """The table's header holding attribute ``name`` (the rating: ``malignancy_rating`` or
    ``malignancy``), or ``None``."""
    for candidate in (name, "malignancy") if name == RATING else (name,):
        if candidate.lower() in columns:
            return columns[candidate.lower()]
    return None


def _ids_and_paths(
    frame: pd.DataFrame, columns: dict[str, str], table: Path, folder: Path
) -> tuple[list[str], list[Path]]:
    if "nodule_id" not in columns and "path" not in columns:
        raise DataError(
            f"no nodule_id or path column (found {list(frame.columns)}); each row needs the "
            "volume's id (<volumes>/<nodule_id>.npz, ...) or its path",
            path=table,
        )
    if "path" in columns:
        raw = frame[columns["path"]].fillna("").astype(str).str.strip()
        paths = [table.parent / p for p in raw]
        ids = (
            frame[columns["nodule_id"]].fillna("").astype(str).str.strip().tolist()
            if "nodule_id" in columns
            else [volume_stem(p) for p in paths]
        )
    else:
        ids = frame[columns["nodule_id"]].fillna("").astype(str).str.strip().tolist()
        paths = [_find_volume(folder, i) for i in ids]
    for i, (name, where) in enumerate(zip(ids, paths, strict=True)):
        if not name or where == table.parent:
            raise DataError("empty nodule id or path", path=table, row=i + 1)
    seen: dict[str, int] = {}
    for i, name in enumerate(ids):
        if name in seen:
            raise DataError(f"nodule id {name!r} also on row {seen[name]}", path=table, row=i + 1)
        seen[name] = i + 1
    return ids, paths


def _find_volume(folder: Path, nodule_id: str) -> Path:
    """``folder/<id><suffix>`` for the first suffix that exists (``.npz`` when none does, so
    the error names the expected file)."""
    for suffix in SUFFIXES:
        candidate = folder / f"{nodule_id}{suffix}"
        if candidate.is_file():
            return candidate
    return folder / f"{nodule_id}.npz"


def _labels(
    frame: pd.DataFrame, columns: dict[str, str], table: Path, choice: str
) -> tuple[np.ndarray, str]:
    if choice == "auto":
        choice = "label" if "label" in columns else "malignancy"
    if choice.lower() not in columns:
        raise DataError(
            f"no {choice!r} column (found {list(frame.columns)}); give 'label' (benign or "
            "malignant) or 'malignancy' (median rating 1-5)",
            path=table,
        )
    header = columns[choice.lower()]
    if choice.lower() == "malignancy":
        rating = _numbers(frame, header, table, "malignancy")
        labels = np.where(rating < 3, 0, np.where(rating > 3, 1, -1))
        return np.where(
            np.isnan(rating), -1, labels
        ), "malignancy rating (< 3 benign, > 3 malignant)"
    text = frame[header].fillna("").astype(str).str.strip().str.lower()
    text = text.str.replace(r"^(\d+)\.0+$", r"\1", regex=True)
    bad = ~text.isin(list(LABELS))
    if bad.any():
        row = int(np.argmax(bad.to_numpy())) + 1
        raise DataError(
            f"label {frame[header].iloc[row - 1]!r} is not benign, malignant, 0, 1, "
            "indeterminate, unlabelled or empty",
            path=table,
            row=row,
            column=header,
        )
    return text.map(LABELS).to_numpy(dtype=np.int64), f"column {header!r}"


def _numbers(frame: pd.DataFrame, header: str, table: Path, name: str) -> np.ndarray:
    """The column as floats (NaN where empty), each in its allowed range."""
    raw = frame[header]
    values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64)
    text = raw.fillna("").astype(str).str.strip()
    bad = np.isnan(values) & (text != "").to_numpy()
    if bad.any():
        row = int(np.argmax(bad)) + 1
        raise DataError(
            f"{text.iloc[row - 1]!r} is not a number", path=table, row=row, column=header
        )
    low, high = RANGES.get(name, (-np.inf, np.inf))
    out = ~np.isnan(values) & ((values < low) | (values > high) | ~np.isfinite(values))
    if out.any():
        row = int(np.argmax(out)) + 1
        raise DataError(
            f"{name} {values[row - 1]:g} is out of range [{low:g}, {high:g}]",
            path=table,
            row=row,
            column=header,
        )
    return values


def _reader_shares(frame: pd.DataFrame, columns: dict[str, str], table: Path) -> np.ndarray:
    """Per row, the share of readers whose malignancy rating (``malignancy_scores``) is above 3
    (a 3 counts half); NaN without the column or for an empty cell.

    Example:
        >>> _reader_shares(pd.DataFrame({"malignancy_scores": ["4 5 3 2", ""]}),
        ...                {"malignancy_scores": "malignancy_scores"}, Path("t.csv")).tolist()
        [0.625, nan]
    """
    out = np.full(len(frame), np.nan)
    header = columns.get("malignancy_scores")
    if header is None:
        return out
    for i, cell in enumerate(frame[header].fillna("").astype(str)):
        tokens = [t for t in re.split(r"[\s,;]+", cell.strip()) if t]
        if not tokens:
            continue
        try:
            scores = np.array([float(t) for t in tokens])
        except ValueError:
            raise DataError(
                f"{cell.strip()!r} is not a list of ratings 1-5 (e.g. '4 5 3')",
                path=table,
                row=i + 1,
                column=header,
            ) from None
        if not (np.isfinite(scores).all() and ((scores >= 1) & (scores <= 5)).all()):
            raise DataError(
                f"{cell.strip()!r}: every reader's malignancy rating must be in [1, 5]",
                path=table,
                row=i + 1,
                column=header,
            )
        out[i] = float(np.mean(np.where(scores > 3, 1.0, np.where(scores < 3, 0.0, 0.5))))
    return out


def _folds(frame: pd.DataFrame, columns: dict[str, str], table: Path) -> np.ndarray:
    if "fold" not in columns:
        return np.full(len(frame), -1, dtype=np.int64)
    values = _numbers(frame, columns["fold"], table, "fold")
    bad = np.isnan(values) | (values < 0) | (values != np.round(values))
    if bad.any():
        row = int(np.argmax(bad)) + 1
        raise DataError(
            f"fold {frame[columns['fold']].iloc[row - 1]!r} is not a whole number >= 0",
            path=table,
            row=row,
            column=columns["fold"],
        )
    return values.astype(np.int64)


def _spacing(frame: pd.DataFrame, columns: dict[str, str], table: Path) -> np.ndarray | None:
    """(N, 3) z, y, x mm from ``slice_thickness_mm`` and ``pixel_spacing_mm``, or ``None``."""
    if "slice_thickness_mm" not in columns or "pixel_spacing_mm" not in columns:
        return None
    z_header, xy_header = columns["slice_thickness_mm"], columns["pixel_spacing_mm"]
    z = _numbers(frame, z_header, table, "slice_thickness_mm")
    xy = _numbers(frame, xy_header, table, "pixel_spacing_mm")
    for values, name in ((z, z_header), (xy, xy_header)):  # the headers as the table has them
        bad = values <= 0
        if bad.any():
            row = int(np.argmax(bad)) + 1
            raise DataError(
                f"spacing {values[row - 1]:g} mm is not positive", path=table, row=row, column=name
            )
    return np.stack([z, xy, xy], axis=1)
