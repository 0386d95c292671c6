"""Which columns of a table are the target, numeric features and categorical features.

:func:`resolve_schema` applies the config (``data.target``, ``features``, ``ignore``,
``categorical``, ``numeric``) to the table's header and detects the kind of every other feature:
a column whose present cells are all numbers (``"3.5"`` read from CSV counts) is numeric, any
other column is categorical. The result is stored with every model version, so predicting needs
no data.

Example:
    >>> frame = pd.DataFrame({"age": ["31", ""], "city": ["Oslo", "Rome"], "y": ["a", "b"]})
    >>> data = TabularDataConfig(source="file", path="t.csv", target="y")
    >>> schema = resolve_schema(frame, data, "y", "t.csv")
    >>> schema.numeric, schema.categorical
    (['age'], ['city'])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import pandas as pd

from abyssal.core.errors import DataError
from abyssal.solutions.tabular.cells import CellReader
from abyssal.solutions.tabular.config import TabularDataConfig

TaskKind = Literal["classification", "regression"]
_SHOWN = 20


@dataclass
class TableSchema:
    """The roles of a table's columns.

    Args:
        target: the column to predict.
        numeric: numeric feature columns, in order.
        categorical: categorical feature columns, in order.
        missing_values: text cells that mean "missing" (besides empty cells).
        keep: columns copied beside predictions when a file to predict has them (ids, target).
        task: classification or regression, once decided from the target (see ``data.py``).
    """

    target: str
    numeric: list[str]
    categorical: list[str]
    missing_values: list[str]
    keep: list[str] = field(default_factory=list)
    task: TaskKind = "classification"

    @property
    def features(self) -> list[str]:
        """Every feature column: numeric ones, then categorical ones."""
        return [*self.numeric, *self.categorical]

    @property
    def cells(self) -> CellReader:
        """The cell reader for this table's missing markers."""
        return CellReader(self.missing_values)

    def to_dict(self) -> dict[str, Any]:
        """JSON form, for the model spec."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TableSchema:
        """The schema :meth:`to_dict` wrote."""
        return cls(**data)


def resolve_schema(
    frame: pd.DataFrame, data: TabularDataConfig, target: str, path: str
) -> TableSchema:
    """Apply the config to the table's columns and detect each remaining feature's kind.

    Args:
        frame: the table as read (CSV cells as text).
        data: the data config.
        target: the target column's name.
        path: the table's name, for messages.

    Returns:
        The schema (its ``task`` is decided later, from the target's values).

    Raises:
        DataError: a missing target column, a name in ``data.features``, ``ignore``,
            ``categorical`` or ``numeric`` that is not a column (the columns are listed), a
            date-time feature, or no feature at all.
    """
    columns = [str(c) for c in frame.columns]
    if target not in columns:
        raise DataError(
            f"no target column '{target}'; the columns are: {_listed(columns)}", path=path
        )
    for key in ("features", "ignore", "categorical", "numeric"):
        _check_names(key, getattr(data, key) or [], columns, target, path)
    features = _feature_columns(data, columns, target, path)
    cells = CellReader(data.missing_values)
    numeric, categorical = [], []
    for name in features:
        kind = _column_kind(frame[name], name, data, cells, path)
        (numeric if kind == "numeric" else categorical).append(name)
    keep = [c for c in data.ignore if c in columns]
    return TableSchema(target, numeric, categorical, list(data.missing_values), [*keep, target])


def _check_names(
    key: str, names: Sequence[str], columns: list[str], target: str, path: str
) -> None:
    for name in names:
        if name not in columns:
            raise DataError(
                f"data.{key} names '{name}', which is not a column; the columns are: "
                f"{_listed(columns)}",
                path=path,
            )
        if name == target:
            raise DataError(f"data.{key} names the target column '{target}'", path=path)


def _feature_columns(
    data: TabularDataConfig, columns: list[str], target: str, path: str
) -> list[str]:
    ignored = set(data.ignore)
    if data.features is not None:
        clash = [c for c in data.features if c in ignored]
        if clash:
            raise DataError(f"data.features and data.ignore both name {_listed(clash)}", path=path)
        features = list(dict.fromkeys(data.features))
    else:
        features = [c for c in columns if c != target and c not in ignored]
    for key in ("categorical", "numeric"):
        outside = [c for c in getattr(data, key) or [] if c not in features]
        if outside:
            raise DataError(
                f"data.{key} names {_listed(outside)}, not among the features: {_listed(features)}",
                path=path,
            )
    if not features:
        raise DataError(f"no feature columns besides the target '{target}'", path=path)
    return features


def _column_kind(
    column: pd.Series, name: str, data: TabularDataConfig, cells: CellReader, path: str
) -> Literal["numeric", "categorical"]:
    if pd.api.types.is_datetime64_any_dtype(column):
        raise DataError(
            "date-time columns are not features; convert them to numbers or list them in "
            "data.ignore",
            path=path,
            column=name,
        )
    if name in (data.categorical or []):
        return "categorical"
    if name in (data.numeric or []) or data.categorical is not None:
        return "numeric"  # declared: a bad cell is an error when the column is read
    _, bad = cells.numbers(column)
    return "categorical" if bad.any() else "numeric"


def _listed(names: Sequence[str]) -> str:
    shown = ", ".join(names[:_SHOWN])
    return shown + (f", ... ({len(names)} in all)" if len(names) > _SHOWN else "")
