"""Predict raw rows with a stored tabular model: one request (a row as a dict) or a whole file.

A row is a mapping of column name to cell: text as read from CSV, numbers or ``null`` from JSON.
A feature column the row lacks is a missing value (imputed as in training); other keys, the
target included, are ignored. Responses:

- classification: ``{"prediction": "malignant", "probability": 0.97, "p_malignant": 0.97}``: the
  predicted class, its probability, and ``p_<class>`` for every class (for two classes, only the
  second, "positive", class);
- regression: ``{"prediction": 151.2}`` in the target's units.

Example:
    >>> predictor = TabularPredictor.from_spec(model, spec)  # doctest: +SKIP
    >>> row = predictor.parse({"mean radius": "17.9", "mean texture": None})  # doctest: +SKIP
    >>> predictor.predict([row])  # doctest: +SKIP
    [{'prediction': 'malignant', 'probability': 0.98, 'p_malignant': 0.98}]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from abyssal.contracts.prediction import TablePredictionReport, predict_table
from abyssal.core.errors import DataError
from abyssal.core.optional import require
from abyssal.data.pii import guard_value
from abyssal.solutions.tabular.preprocessing import TablePreprocessor
from abyssal.solutions.tabular.schema import TableSchema


@dataclass(frozen=True)
class TableRow:
    """One parsed request: numeric cells (NaN = missing) and category text (``None`` = missing)."""

    numeric: tuple[float, ...]
    categorical: tuple[str | None, ...]


class TabularPredictor:
    """Serves one tabular model version (a :class:`~abyssal.contracts.solution.Predictor`).

    Args:
        model: the network, in eval mode, on any device.
        schema: the columns it was trained on.
        preprocessor: the encoders fitted in training.
    """

    def __init__(
        self, model: torch.nn.Module, schema: TableSchema, preprocessor: TablePreprocessor
    ) -> None:
        self.model = model
        self.schema = schema
        self.preprocessor = preprocessor
        self.cells = schema.cells
        self.pii = "mask"

    @classmethod
    def from_spec(cls, model: torch.nn.Module, spec: Mapping[str, Any]) -> TabularPredictor:
        """A predictor over ``model`` and the model spec stored with it."""
        predictor = cls(
            model,
            TableSchema.from_dict(dict(spec["schema"])),
            TablePreprocessor.from_dict(dict(spec["preprocessing"])),
        )
        predictor.pii = str(spec.get("pii", "mask"))  # versions before data.pii: masked
        return predictor

    def parse(self, payload: Mapping[str, Any]) -> TableRow:
        """One row, validated.

        Raises:
            DataError: the payload is not a mapping, or a numeric column holds a non-number (the
                error names the column).
        """
        if not isinstance(payload, Mapping):
            raise DataError(f"expected a mapping of column to value, got {type(payload).__name__}")
        numbers = []
        for name in self.schema.numeric:
            try:
                numbers.append(self.cells.number(payload.get(name)))
            except ValueError as exc:
                raise DataError(str(exc), column=name) from None
        categories = []
        for name in self.schema.categorical:
            value = payload.get(name)
            if isinstance(value, Mapping | list | tuple):
                raise DataError(f"expected text or a number, got {value!r}", column=name)
            categories.append(self.cells.category(guard_value(value, name, self.pii)))
        return TableRow(tuple(numbers), tuple(categories))

    @torch.no_grad()
    def predict(self, items: Sequence[TableRow]) -> list[dict[str, Any]]:
        """Responses for parsed rows, in order."""
        if not items:
            return []
        pre = self.preprocessor
        numeric = np.array([r.numeric for r in items], dtype=np.float64).reshape(len(items), -1)
        codes = np.array([r.categorical for r in items], dtype=object).reshape(len(items), -1)
        device = next(self.model.parameters()).device
        out = self.model(
            torch.from_numpy(pre.encode_numeric(numeric)).to(device),  # (B, W)
            torch.from_numpy(pre.encode_categorical(codes)).to(device),  # (B, Fc)
        ).float()
        if pre.target.task == "regression":
            values = pre.target.restore(out[:, 0].cpu().numpy())
            return [{"prediction": float(v)} for v in values]
        return self._classes(torch.softmax(out, dim=1).cpu().numpy())

    def _classes(self, probabilities: np.ndarray) -> list[dict[str, Any]]:
        classes = self.preprocessor.target.classes
        shown = classes[1:] if len(classes) == 2 else classes
        responses = []
        for row in probabilities:
            best = int(row.argmax())
            response = {"prediction": classes[best], "probability": float(row[best])}
            response.update({f"p_{c}": float(row[classes.index(c)]) for c in shown})
            responses.append(response)
        return responses


def predict_rows_file(
    predictor: TabularPredictor, path: str | Path, *, ref: str, out: str | Path | None = None
) -> TablePredictionReport:
    """Predict every row of a CSV/Parquet table; write ``out`` atomically if given.

    The output holds the input's ``data.ignore`` columns and target (when present), then the
    response fields. Every row is parsed before anything is predicted or written.

    Raises:
        DataError: the table has none of the model's feature columns, or a bad cell (its row and
            column).
    """
    schema = predictor.schema
    header = _header(path)
    absent = [c for c in schema.features if c not in header]
    if len(absent) == len(schema.features):
        raise DataError(
            f"none of the model's feature columns is in the table; expected: "
            f"{', '.join(schema.features)}",
            path=path,
        )
    summary = [_task_line(predictor)]
    if absent:
        summary.append(f"columns not in this table (treated as missing): {', '.join(absent)}")
    return predict_table(predictor, path, ref=ref, out=out, keep=schema.keep, summary=summary)


def _header(path: str | Path) -> list[str]:
    """The table's column names, read without its rows where the format allows."""
    from abyssal.data.tables import read_table, table_format

    try:
        fmt = table_format(path)
        if fmt == "csv":
            return [str(c).strip() for c in pd.read_csv(path, nrows=0).columns]
        if fmt == "parquet":
            parquet = require("pyarrow.parquet", extra="parquet", purpose="Parquet files")
            return [str(c).strip() for c in parquet.read_schema(path).names]
        return list(read_table(path).columns)  # a plugin reader's format: read it whole
    except (ValueError, OSError, UnicodeDecodeError):
        return list(read_table(path).columns)  # which explains what is wrong with the file


def _task_line(predictor: TabularPredictor) -> str:
    target, schema = predictor.preprocessor.target, predictor.schema
    kind = "regression" if target.task == "regression" else f"classes {', '.join(target.classes)}"
    return (
        f"target '{schema.target}' ({kind}) from {len(schema.numeric)} numeric and "
        f"{len(schema.categorical)} categorical columns"
    )
