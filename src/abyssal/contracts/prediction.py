"""Predicting a whole table through a :class:`~abyssal.contracts.solution.Predictor`.

Solutions whose requests are independent rows (a table row, an image path) get file prediction
for free: every row is parsed (and so validated) first, then rows are predicted in batches, and
the result is written atomically. A bad row stops everything with its file and row number, and
nothing is written.

Example:
    >>> report = predict_table(predictor, "new.csv", out="scores.csv")  # doctest: +SKIP
    >>> print(report.render(top=5))  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from abyssal.contracts.solution import Predictor
from abyssal.core.display import table
from abyssal.core.errors import DataError
from abyssal.data.tables import read_table, write_table


@dataclass
class TablePredictionReport:
    """Predictions for every row of a table.

    Attributes:
        ref: the model version that predicted.
        frame: one row per input row: the ``keep`` columns of the input, then the response fields.
        output: where the frame was written, if anywhere.
        summary: lines shown above the table of first rows.
    """

    ref: str
    frame: pd.DataFrame
    output: Path | None = None
    summary: tuple[str, ...] = ()

    @property
    def rows(self) -> int:
        """How many rows were predicted."""
        return len(self.frame)

    def render(self, top: int = 10) -> str:
        """The summary, the first ``top`` rows, and where the file went."""
        head = self.frame.head(max(top, 0))
        lines = [f"{self.ref}: predicted {self.rows} rows", *self.summary]
        lines.append(table(list(head.columns), head.values.tolist()))
        if self.output is not None:
            lines.append(f"predictions written to {self.output}")
        return "\n".join(lines)


def predict_table(
    predictor: Predictor,
    path: str | Path,
    *,
    ref: str,
    out: str | Path | None = None,
    keep: Sequence[str] = (),
    batch_size: int = 256,
    summary: Sequence[str] = (),
) -> TablePredictionReport:
    """Parse every row of ``path``, predict in batches, write the result atomically.

    Args:
        predictor: parses one row (a dict of column -> cell) and predicts a list of rows.
        path: a CSV or Parquet table.
        ref: the model version's ref, for the report.
        out: destination (CSV or Parquet), written only when every row succeeded.
        keep: input columns copied in front of the predictions (e.g. an id column), if present.
        batch_size: rows per :meth:`Predictor.predict` call.
        summary: extra lines for the report.

    Returns:
        The report.

    Raises:
        DataError: a row the predictor refuses, named by file and 1-based row.
    """
    frame = read_table(path)
    items = [_parse_row(predictor, row, path, i) for i, row in enumerate(_records(frame), 1)]
    responses: list[dict[str, Any]] = []
    for start in range(0, len(items), batch_size):
        responses.extend(predictor.predict(items[start : start + batch_size]))
    result = pd.DataFrame(responses)
    kept = [c for c in keep if c in frame.columns]
    result = pd.concat([frame[kept].reset_index(drop=True), result], axis=1)
    written = write_table(result, out) if out is not None else None
    return TablePredictionReport(ref, result, written, tuple(summary))


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    # missing cells become None, not NaN, so that a predictor sees "absent" the same way in CSV
    return frame.astype(object).where(frame.notna(), None).to_dict("records")


def _parse_row(predictor: Predictor, row: dict[str, Any], path: str | Path, number: int) -> Any:
    try:
        return predictor.parse(row)
    except DataError as exc:
        raise DataError(exc.reason, path=path, row=number, column=exc.column) from None
