"""Decisions on batch predictions (``abyssal predict``): every predicted row of a version with
kept operating points gains its decision, the score it was made on, the point and the reason,
the same answer the service gives for that row.

The scores are read from the prediction rows with the solution's
:meth:`~abyssal.contracts.solution.Solution.decision_score` (fraud ``risk``, nodule
``malignancy_probability``, a tabular model's ``p_<class>``, ...).

Example:
    >>> frame = decide_rows(loaded, report.frame)  # doctest: +SKIP
    >>> frame["decision"].value_counts().to_dict()  # doctest: +SKIP
    {'approve': 980, 'review': 15, 'block': 5}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from abyssal.core.errors import AbyssalError, DataError

COLUMNS = ("decision", "decision_score", "decision_point", "decision_reason")
"""The columns a decided prediction file gains, after the prediction's own."""


def kept_point(loaded: Any, point_name: str | None = None) -> Any:
    """The operating point decisions use for ``loaded`` (``point_name``, else its default), or
    ``None`` when the version has no kept points or its solution decides nothing."""
    from abyssal.decide.store import point, points_path

    if loaded.solution.decision_score(loaded) is None:
        if point_name is not None:
            raise AbyssalError(f"{loaded.version.ref}: its solution makes no decisions")
        return None
    if not points_path(loaded.version.ref).is_file():
        if point_name is not None:
            raise AbyssalError(
                f"{loaded.version.ref} has no operating points (abyssal decide points "
                f"{loaded.version.ref} ...)"
            )
        return None
    return point(loaded.version.ref, point_name)


def decide_rows(loaded: Any, frame: pd.DataFrame, point: Any) -> pd.DataFrame:
    """``frame`` (one prediction per row) with :data:`COLUMNS` added from ``point``.

    Raises:
        DataError: a row lacks the field its score is read from, or the score is not a
            probability (the row is named, 1-based).
    """
    score_of = loaded.solution.decision_score(loaded)
    decisions = []
    for i, row in enumerate(frame.to_dict("records"), start=1):
        try:
            decisions.append(point.decide(score_of(row)).as_dict())
        except KeyError as e:
            raise DataError(
                f"prediction row {i} has no {e} field to decide on; it has {list(row)}"
            ) from None
        except (DataError, TypeError, ValueError) as e:
            raise DataError(f"prediction row {i}: {e}") from None
    out = frame.copy()
    out["decision"] = [d["action"] for d in decisions]
    out["decision_score"] = [d["score"] for d in decisions]
    out["decision_point"] = [d["point"] for d in decisions]
    out["decision_reason"] = [d["reason"] for d in decisions]
    return out


def decide_file(loaded: Any, path: str | Path, point: Any) -> pd.DataFrame:
    """Add the decisions to a prediction file (CSV or Parquet) in place, atomically; returns
    the decided frame."""
    from abyssal.data.tables import read_table, write_table

    frame = read_table(path)  # CSV cells as text: ids keep their leading zeros when rewritten
    decided = decide_rows(loaded, frame, point)
    write_table(decided, path)
    return decided


def log_decided(loaded: Any, decided: pd.DataFrame) -> int:
    """Write the decided rows that have an id (``id``, else ``transaction_id``) to the model
    name's prediction log, so confirmed labels can come back for them
    (:mod:`abyssal.decide.feedback`); the event time is the row's ``timestamp`` when it has
    one, else now. Returns how many were logged (0 without an id column)."""
    from abyssal.decide.feedback import ID_KEYS, log_predictions

    key = next((k for k in ID_KEYS if k in decided.columns), None)
    if key is None:
        return 0
    times = decided["timestamp"] if "timestamp" in decided.columns else None
    rows = [
        {
            "id": str(ident),
            "version": loaded.version.ref,
            "score": float(score),
            "action": action,
            **({"event_time": times.iloc[i]} if times is not None else {}),
        }
        for i, (ident, score, action) in enumerate(
            zip(decided[key], decided["decision_score"], decided["decision"], strict=True)
        )
        if not pd.isna(ident)
    ]
    return log_predictions(loaded.version.name, rows)


def summary_line(decided: pd.DataFrame, point: Any) -> str:
    """``decisions (cost): approve 980, review 15, block 5``."""
    counts = decided["decision"].value_counts()
    order = [a for a in ("approve", "accept", "review", "block") if a in counts]
    return f"decisions ({point.name}): " + ", ".join(f"{a} {int(counts[a])}" for a in order)
