"""The tabular solution's benchmark hooks: noisy test rows and the rows' own columns.

``feature_noise`` perturbs the numbers of the test rows as read (before imputation and scaling),
so the network sees them through its usual encoders: Gaussian noise of ``level`` times the
column's standard deviation over the training rows' present cells. Missing cells stay missing;
categorical columns, the target, the split and the ids stay as they were.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from abyssal.data.perturb import Perturbation, check_kind, perturbed_identity
from abyssal.data.perturb_records import column_std, feature_noise
from abyssal.solutions.tabular.data import TabularData

KINDS = ("feature_noise",)
"""The perturbations a table takes."""


def perturb_table(data: TabularData, perturbation: Perturbation) -> TabularData:
    """A copy of ``data`` whose test rows' numeric features carry ``perturbation``.

    The copy's numbers (and its kept table, which a model trained with other encoders reads
    again) hold the perturbed values; it is encoded afresh with ``data``'s fitted encoders.
    ``data`` is unchanged.

    Raises:
        ConfigError: another kind (the message lists :data:`KINDS`).
    """
    perturbation = check_kind(perturbation, KINDS, "solution 'tabular'")
    fingerprint, description = perturbed_identity(data.fingerprint, data.description, perturbation)
    test = data.rows("test")
    numeric = feature_noise(
        data.numeric,
        column_std(data.numeric[data.rows("train")]),
        perturbation.level,
        perturbation.seed,
        rows=test,
    )
    frame = data.frame
    if frame is not None:
        frame = frame.copy()
        for j, name in enumerate(data.schema.numeric):
            if name in frame.columns:
                frame[name] = _with_values(frame[name], test, numeric[test, j])
    return dataclasses.replace(
        data,
        numeric=numeric,
        splits={name: rows.copy() for name, rows in data.splits.items()},
        frame=frame,
        fingerprint=fingerprint,
        description=description,
    )


def row_attributes(data: TabularData, ids: np.ndarray) -> pd.DataFrame:
    """One row per test row, in file order: ``id`` (``ids``, as ``held_out`` gives them), then
    every feature column under its name in the file, in the file's order, with the values as read
    (numbers as floats, NaN where missing; categories as text, ``None`` where missing).

    Columns that are not features (the target, ``data.ignore`` columns, which may hold personal
    data the features were checked for) are left out, and so is a feature named ``id``.
    """
    rows = data.rows("test")
    schema = data.schema
    values = {name: data.numeric[rows, j] for j, name in enumerate(schema.numeric)}
    values |= {name: data.categorical[rows, j] for j, name in enumerate(schema.categorical)}
    order = list(data.frame.columns) if data.frame is not None else []
    order = [str(c) for c in order if str(c) in values]
    order += [name for name in schema.features if name not in order]
    frame = pd.DataFrame({"id": list(ids)})
    for name in order:
        if name != "id":
            frame[name] = values[name]
    return frame


def _with_values(column: pd.Series, rows: np.ndarray, values: np.ndarray) -> pd.Series:
    """``column`` with its present cells at ``rows`` replaced by ``values`` (NaN: left as is)."""
    present = ~np.isnan(values)
    where, values = rows[present], values[present]
    if pd.api.types.is_float_dtype(column):
        out = column.to_numpy(dtype=np.float64, copy=True)
    else:  # text cells (CSV) or integers: numbers as Python floats, read back the same
        out = column.to_numpy(dtype=object, copy=True)
        values = values.astype(object)
    out[where] = values
    return pd.Series(out, index=column.index, name=column.name)
