"""Read, validate and split a table for the tabular solution; fit its encoders on training rows.

:func:`prepare_tabular_data` reads the table (a CSV/Parquet file or a data set bundled with
scikit-learn), resolves the columns (:mod:`.schema`), reads every feature and the target (errors
name the file, the 1-based data row and the column), decides classification or regression, splits
the rows (stratified by class for classification) and fits the encoders on the training split.

Example:
    >>> from abyssal.solutions.tabular.config import TabularDataConfig
    >>> data = prepare_tabular_data(TabularDataConfig(source="breast_cancer"))  # doctest: +SKIP
    >>> data.schema.task, len(data.rows("train"))  # doctest: +SKIP
    ('classification', 341)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from abyssal.core.errors import DataError
from abyssal.data.fingerprint import fingerprint_frame
from abyssal.data.leakage import check_leakage
from abyssal.data.pii import guard_table
from abyssal.data.splits import SPLITS, stratified_split
from abyssal.data.tables import first_row, read_table
from abyssal.solutions.tabular.bundled import BUNDLED_TARGETS, bundled_table
from abyssal.solutions.tabular.cells import CellReader
from abyssal.solutions.tabular.config import TabularDataConfig
from abyssal.solutions.tabular.preprocessing import TablePreprocessor, TargetEncoding
from abyssal.solutions.tabular.schema import TableSchema, TaskKind, resolve_schema

log = logging.getLogger(__name__)


@dataclass
class TabularData:
    """A validated, split table with its fitted encoders (a ``PreparedData``).

    Attributes:
        schema: the columns' roles and the task.
        preprocessor: encoders fitted on the training rows.
        numeric: (N, Fn) float64 numeric features as read, NaN where missing.
        categorical: (N, Fc) object categorical features as canonical text, ``None`` if missing.
        target: (N,) int64 class indices, or float64 values for regression.
        splits: row indices of ``train``, ``val`` and ``test``, ascending.
        fingerprint: hash of the typed table and its split.
        description: where the data came from and what it holds.
        frame: the table as read (to encode it again for another model's encoders).
        where: the table's name, for messages.
    """

    schema: TableSchema
    preprocessor: TablePreprocessor
    numeric: np.ndarray
    categorical: np.ndarray
    target: np.ndarray
    splits: dict[str, np.ndarray]
    fingerprint: str = ""
    description: str = ""
    frame: pd.DataFrame | None = field(default=None, repr=False)
    where: str = ""
    encoded: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        pre = self.preprocessor
        self.encoded = {
            "numeric": pre.encode_numeric(self.numeric),  # (N, W) float32
            "categorical": pre.encode_categorical(self.categorical),  # (N, Fc) int64
        }

    def rows(self, split: str) -> np.ndarray:
        """Row indices of one split."""
        return self.splits[split]

    def arrays(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The network's inputs and target for ``rows``.

        Shapes:
            (B, W) float32 numeric, (B, Fc) int64 codes, (B,) target: int64 class indices, or
            float32 regression target standardised on the training split.
        """
        target = self.target[rows]
        if self.schema.task == "regression":
            target = self.preprocessor.target.standardise(target).astype(np.float32)
        return self.encoded["numeric"][rows], self.encoded["categorical"][rows], target

    def encoded_for(self, schema: TableSchema, preprocessor: TablePreprocessor) -> TabularData:
        """This table's rows and splits, read by another schema and encoded by its encoders.

        A stored model evaluated on another table must see that table through the encoders it
        was trained with, not through encoders fitted on the new table.

        Raises:
            DataError: the table lacks a column the model needs, has a non-number in one of the
                model's numeric columns, or a class the model does not know (with its row).
        """
        frame, cells = self.frame, schema.cells
        if frame is None:
            raise DataError("this prepared table kept no copy of its rows", path=self.where)
        _require_columns(frame, [*schema.features, schema.target], self.where)
        _, classes, target = read_target(frame[schema.target], schema.task, 0, cells, self.where)
        if schema.task == "classification":
            names = np.asarray(classes, dtype=object)[target]
            target = _class_indices(names, preprocessor.target.classes, schema.target, self.where)
        return TabularData(
            schema,
            preprocessor,
            read_numeric(frame, schema.numeric, cells, self.where),
            _categorical(frame, schema.categorical, cells),
            target,
            self.splits,
            self.fingerprint,
            self.description,
            frame,
            self.where,
        )


def prepare_tabular_data(cfg: TabularDataConfig) -> TabularData:
    """Read, validate and split the table ``cfg`` names and fit the encoders on training rows.

    Raises:
        DataError: names the file and, where it applies, the row and column: a missing target
            column, an unknown column in the config, a missing target value, a target with one
            class, a non-number in a numeric column, too few rows for the split.
    """
    frame, where = load_table(cfg)
    target_name = cfg.target or BUNDLED_TARGETS[cfg.source]
    schema = resolve_schema(frame, cfg, target_name, where)
    frame = guard_table(frame, schema.categorical, cfg.pii, where)  # before any encoder sees it
    cells = schema.cells
    numeric = read_numeric(frame, schema.numeric, cells, where)
    categorical = _categorical(frame, schema.categorical, cells)
    schema.task, classes, target = read_target(
        frame[target_name], cfg.task, cfg.max_classes, cells, where
    )
    labels = target if schema.task == "classification" else None
    splits = split_rows(len(target), labels, cfg, where)
    train = splits["train"]
    if labels is not None and cfg.leakage_check:
        guard_leakage(schema, numeric[train], categorical[train], labels[train], cfg, where)
    encoding = _target_encoding(schema.task, classes, target[train])
    pre = TablePreprocessor.fit(
        schema.numeric,
        numeric[train],
        schema.categorical,
        categorical[train],
        encoding,
        max_categories=cfg.max_categories,
    )
    data = TabularData(schema, pre, numeric, categorical, target, splits, frame=frame, where=where)
    data.fingerprint = _fingerprint(data)
    data.description = describe(data, where, cfg.split_seed)
    log.info(data.description)
    return data


def guard_leakage(
    schema: TableSchema,
    numeric: np.ndarray,
    categorical: np.ndarray,
    classes: np.ndarray,
    cfg: TabularDataConfig,
    where: str,
) -> None:
    """Refuse a feature that alone separates the training classes (each class against the rest),
    unless ``data.allow_leaky_features`` names it.

    Args:
        schema: the feature columns.
        numeric: (n, Fn) and ``categorical``: (n, Fc) features of the training rows.
        classes: (n,) class indices of the training rows.
        cfg: the threshold and the allowed names.
        where: the table's name, for the message.

    Raises:
        DataError: names the feature(s) and their AUROC (see :func:`check_leakage`).
    """
    features = {name: numeric[:, j] for j, name in enumerate(schema.numeric)}
    features.update({name: categorical[:, j] for j, name in enumerate(schema.categorical)})
    present = np.unique(classes)
    for c in present[1:] if len(present) == 2 else present:  # two classes: one check is enough
        allowed = check_leakage(
            features,
            (classes == c).astype(np.int64),
            threshold=cfg.leakage_threshold,
            allowed=cfg.allow_leaky_features,
            where=where,
        )
        for leak in allowed:
            log.warning("%s: leaky feature %s allowed (AUROC %.3f)", where, leak.name, leak.auroc)


def load_table(cfg: TabularDataConfig) -> tuple[pd.DataFrame, str]:
    """The table as read, and its name for messages (the path, or the bundled data set)."""
    if cfg.source == "file":
        return read_table(str(cfg.path)), str(cfg.path)
    return bundled_table(cfg.source), f"{cfg.source} (bundled with scikit-learn)"


def read_numeric(
    frame: pd.DataFrame, columns: list[str], cells: CellReader, where: str
) -> np.ndarray:
    """(N, Fn) float64 numeric features, NaN where missing.

    Raises:
        DataError: the first cell that is not a finite number, with its row and column.
    """
    out = np.empty((len(frame), len(columns)), dtype=np.float64)
    for j, name in enumerate(columns):
        values, bad = cells.numbers(frame[name])
        row = first_row(bad)
        if row is not None:
            cell = _cell(frame[name], row)
            raise DataError(f"expected a number, got {cell!r}", path=where, row=row, column=name)
        out[:, j] = values
    return out


def read_target(
    column: pd.Series, task: str, max_classes: int, cells: CellReader, where: str
) -> tuple[TaskKind, list[str], np.ndarray]:
    """Decide the task and read the target.

    Args:
        column: the target column as read.
        task: ``auto``, ``classification`` or ``regression`` (``data.task``).
        max_classes: ``auto``: integer targets with at most this many values are classes.
        cells: the cell reader.
        where: the table's name, for messages.

    Returns:
        ``(task, classes, target)``: class names and (N,) int64 indices for classification;
        no classes and (N,) float64 values for regression.

    Raises:
        DataError: a missing target value (its row), a non-number for ``data.task=regression``,
            one class only, or a constant regression target.
    """
    name = str(column.name)
    row = first_row(cells.missing_mask(column))
    if row is not None:
        raise DataError("missing target value", path=where, row=row, column=name)
    values, bad = cells.numbers(column)
    task = _task(task, max_classes, values, bad)
    if task == "regression":
        return task, [], _regression_target(column, values, bad, where)
    classes, target = _classes(cells.categories(column), values, bad)
    if len(classes) < 2:
        raise DataError(
            f"the target has one class ({classes[0]!r}); classification needs at least two",
            path=where,
            column=name,
        )
    return task, classes, target


def _cell(column: pd.Series, row: int) -> object:
    """The cell of a 1-based data row as plain Python (``True``, not ``np.True_``)."""
    value = column.iloc[row - 1]
    return value.item() if isinstance(value, np.generic) else value


def _require_columns(frame: pd.DataFrame, needed: list[str], where: str) -> None:
    lacking = [c for c in needed if c not in frame.columns]
    if lacking:
        raise DataError(
            f"the model needs column '{lacking[0]}', which the table lacks; the columns are: "
            f"{', '.join(map(str, frame.columns))}",
            path=where,
        )


def _class_indices(names: np.ndarray, classes: list[str], column: str, where: str) -> np.ndarray:
    index = {c: i for i, c in enumerate(classes)}
    unknown = [i for i, name in enumerate(names.tolist()) if name not in index]
    if unknown:
        raise DataError(
            f"class {names[unknown[0]]!r} is not one the model knows ({', '.join(classes)})",
            path=where,
            row=unknown[0] + 1,
            column=column,
        )
    return np.array([index[name] for name in names.tolist()], dtype=np.int64)


def _task(task: str, max_classes: int, values: np.ndarray, bad: np.ndarray) -> TaskKind:
    if task != "auto":
        return task  # type: ignore[return-value]
    if bad.any():
        return "classification"
    integral = bool(np.all(values == np.round(values)))
    few = len(np.unique(values)) <= max_classes
    return "classification" if integral and few else "regression"


def _regression_target(
    column: pd.Series, values: np.ndarray, bad: np.ndarray, where: str
) -> np.ndarray:
    row = first_row(bad)
    if row is not None:
        raise DataError(
            f"expected a number (data.task=regression), got {_cell(column, row)!r}",
            path=where,
            row=row,
            column=str(column.name),
        )
    if np.all(values == values[0]):
        raise DataError(
            f"the target is constant ({values[0]}); regression needs varying values",
            path=where,
            column=str(column.name),
        )
    return values


def _classes(
    names: np.ndarray, values: np.ndarray, bad: np.ndarray
) -> tuple[list[str], np.ndarray]:
    """Sorted class names (numbers in numeric order) and each row's class index."""
    unique = sorted(set(names.tolist()))
    if not bad.any():
        unique = sorted(unique, key=float)
    index = {c: i for i, c in enumerate(unique)}
    return unique, np.array([index[c] for c in names.tolist()], dtype=np.int64)


def _categorical(frame: pd.DataFrame, columns: list[str], cells: CellReader) -> np.ndarray:
    out = np.empty((len(frame), len(columns)), dtype=object)
    for j, name in enumerate(columns):
        out[:, j] = cells.categories(frame[name])
    return out


def _target_encoding(
    task: TaskKind, classes: list[str], train_target: np.ndarray
) -> TargetEncoding:
    if task == "classification":
        return TargetEncoding(task, classes=classes)
    std = float(train_target.std())
    return TargetEncoding(task, mean=float(train_target.mean()), std=std if std > 0 else 1.0)


def split_rows(
    n: int, labels: np.ndarray | None, cfg: TabularDataConfig, where: str
) -> dict[str, np.ndarray]:
    """Random train/validation/test rows; stratified by class when ``labels`` are given.

    Each class (or, without labels, the whole table) gives ``round(size * frac)`` of its rows to
    validation and to test, and keeps at least one for training (see
    :func:`abyssal.data.splits.stratified_split`).

    Args:
        n: number of rows.
        labels: (n,) class indices, or ``None`` (regression).
        cfg: ``val_frac``, ``test_frac`` and ``split_seed``.
        where: the table's name, for messages.

    Returns:
        Ascending row indices per split.

    Raises:
        DataError: a split would be empty.
    """
    return stratified_split(
        n, labels, val_frac=cfg.val_frac, test_frac=cfg.test_frac, seed=cfg.split_seed, where=where
    )


def _fingerprint(data: TabularData) -> str:
    s = data.schema
    frame = pd.DataFrame(data.numeric, columns=s.numeric)
    for j, name in enumerate(s.categorical):
        frame[name] = data.categorical[:, j]
    classes = np.asarray(data.preprocessor.target.classes, dtype=object)
    frame[s.target] = classes[data.target] if s.task == "classification" else data.target
    split = np.empty(len(frame), dtype=object)
    for name, rows in data.splits.items():
        split[rows] = name
    frame["__split__"] = split
    return fingerprint_frame(frame)


def describe(data: TabularData, where: str, split_seed: int) -> str:
    """One line: source, rows, task and classes, feature kinds, split sizes."""
    s, classes = data.schema, data.preprocessor.target.classes
    if s.task == "regression":
        task = "regression"
    elif len(classes) == 2:
        task = f"binary classification ({', '.join(classes)})"
    else:
        task = f"classification into {len(classes)} classes"
    sizes = "/".join(str(len(data.splits[k])) for k in SPLITS)
    return (
        f"{where}: {len(data.target)} rows, {task} of '{s.target}', {len(s.numeric)} numeric "
        f"and {len(s.categorical)} categorical features; train/val/test {sizes} "
        f"(seed {split_seed})"
    )
