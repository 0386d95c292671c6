"""Reading table cells as numbers or category text, the same way for a file and a single request.

A cell comes as text (CSV), as a typed value (Parquet) or as a JSON value (a request). Missing is
``None``, NaN, an empty or blank cell, or one of the configured missing markers (``"NA"``, ...).
Category text is canonical: surrounding spaces are dropped and a whole number is written without
a fraction, so ``3``, ``3.0`` and ``" 3"`` are the same category.

Example:
    >>> cells = CellReader(["NA"])
    >>> cells.number(" 2.5"), cells.category(3.0), cells.category("NA")
    (2.5, '3', None)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd


class CellReader:
    """Converts cells given the text markers that mean "missing".

    Args:
        missing_values: text cells (after stripping spaces) that are missing values.
    """

    def __init__(self, missing_values: Sequence[str]) -> None:
        self.missing_values = frozenset(str(m).strip() for m in missing_values) | {""}

    def is_missing(self, value: Any) -> bool:
        """Whether one cell is a missing value."""
        if value is None:
            return True
        if isinstance(value, str):
            return value.strip() in self.missing_values
        return isinstance(value, float) and math.isnan(value)

    def number(self, value: Any) -> float:
        """One cell as a float (NaN when missing).

        Raises:
            ValueError: the cell is not a finite number (the message shows the cell).
        """
        if self.is_missing(value):
            return math.nan
        if isinstance(value, bool) or not isinstance(value, int | float | str | np.number):
            raise ValueError(f"expected a number, got {value!r}")
        try:
            number = float(value.strip() if isinstance(value, str) else value)
        except ValueError:
            raise ValueError(f"expected a number, got {value!r}") from None
        if not math.isfinite(number):
            raise ValueError(f"expected a finite number, got {value!r}")
        return number

    def category(self, value: Any) -> str | None:
        """One cell as canonical category text (``None`` when missing)."""
        if self.is_missing(value):
            return None
        if isinstance(value, float | np.floating) and float(value).is_integer():
            return str(int(value))
        return str(value).strip()

    def missing_mask(self, column: pd.Series) -> np.ndarray:
        """(N,) bool: which cells of a column are missing."""
        mask = column.isna().to_numpy(dtype=bool, copy=True)
        if _is_text(column):
            text = column.astype(object).where(~mask, "").astype(str).str.strip()
            mask |= text.isin(self.missing_values).to_numpy(dtype=bool)
        return mask

    def numbers(self, column: pd.Series) -> tuple[np.ndarray, np.ndarray]:
        """A column as float64 (NaN where missing) and a mask of cells that are not numbers.

        Returns:
            ``(values (N,), bad (N,))``: ``bad`` marks present cells that are not finite numbers.
        """
        missing = self.missing_mask(column)
        if pd.api.types.is_bool_dtype(column) or pd.api.types.is_datetime64_any_dtype(column):
            return np.full(len(column), np.nan), ~missing
        if pd.api.types.is_numeric_dtype(column):
            values = column.to_numpy(dtype="float64", na_value=np.nan)
        else:
            text = pd.Series(
                [
                    None if m else _stripped(v)
                    for v, m in zip(column.tolist(), missing, strict=True)
                ],
                dtype=object,
            )
            values = pd.to_numeric(text, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
        bad = ~missing & ~np.isfinite(values)
        values = np.where(missing, np.nan, values)
        return values, bad

    def categories(self, column: pd.Series) -> np.ndarray:
        """A column as an object array of canonical category text, ``None`` where missing."""
        missing = self.missing_mask(column)
        out = np.empty(len(column), dtype=object)
        for i, (value, absent) in enumerate(zip(column.tolist(), missing, strict=True)):
            out[i] = None if absent else self.category(value)
        return out


def _is_text(column: pd.Series) -> bool:
    return column.dtype == object or pd.api.types.is_string_dtype(column)


def _stripped(value: Any) -> Any:
    return value.strip() if isinstance(value, str) else value
