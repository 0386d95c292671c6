"""New events for the live graph: reading and checking new edges, and the checks every stream of
new transactions or edges passes before anything is scored.

**New edges** (for a model trained on an edge list) have the edge-list columns: ``source``,
``target``, ``timestamp`` (required when the model was trained with timestamps; ignored by a
static model) and optional ``weight`` (``rating``, ``amount``; default 1.0). They are scored in
time order.

**Dates**: a new event dated before the first event of the history graph is an error (naming its
row): it almost always means the wrong file, or timestamps in other units. Events after the start
of the history but before its last event are scored as they come.

Example:
    >>> new = read_new_edges(pd.DataFrame({"source": ["a"], "target": ["b"]}), static=True)
    >>> new.columns.tolist()
    ['source', 'target', 'weight']
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

from abyssal.core.errors import DataError
from abyssal.data.tables import first_row, read_table, validate_columns
from abyssal.solutions.fraud.live import LiveScore, LiveScorer
from abyssal.solutions.fraud.schema import EDGE_COLUMNS

PathLike = str | os.PathLike[str]
EDGE_SCORE_COLUMNS = ("risk", "source_risk", "target_risk", "rescored", "latency_ms", "alerts")


def read_new_edges(
    source: PathLike | pd.DataFrame, *, static: bool, source_name: str | None = None
) -> pd.DataFrame:
    """Read and check new edges to score.

    Args:
        source: a table file or a loaded frame.
        static: the model was trained without timestamps (a ``timestamp`` column is dropped);
            otherwise ``timestamp`` is required.
        source_name: the name used in messages; defaults to the path, or ``"<dataframe>"``.

    Returns:
        ``source``, ``target`` (text), ``timestamp`` (int64; temporal models only) and
        ``weight`` (float64), in file order.

    Raises:
        DataError: a missing column or bad value, naming the source, row and column.
    """
    if isinstance(source, pd.DataFrame):
        where, frame = source_name or "<dataframe>", source
        if len(frame) == 0:
            raise DataError("no rows: the frame is empty", path=where)
    else:
        where, frame = source_name or str(source), read_table(source)
    specs = [replace(s, required=not static) if s.name == "timestamp" else s for s in EDGE_COLUMNS]
    edges = validate_columns(frame, specs, where)
    if static:
        edges = edges.drop(columns=["timestamp"], errors="ignore")
    if "weight" not in edges:
        edges["weight"] = 1.0
    return edges


def parse_edge_request(payload: Mapping[str, Any], *, static: bool) -> dict[str, Any]:
    """One new edge from a JSON request (values as a CSV reader would give them).

    Raises:
        DataError: a missing field or bad value, naming the field.

    Example:
        >>> parse_edge_request({"source": "a", "target": "b", "weight": 2}, static=True)
        {'source': 'a', 'target': 'b', 'weight': 2.0}
    """
    if not isinstance(payload, Mapping):
        raise DataError(f"an edge must be an object, got {type(payload).__name__}")
    cells = {k: None if v is None else str(v) for k, v in payload.items()}
    frame = read_new_edges(pd.DataFrame([cells]), static=static, source_name="request")
    return frame.to_dict("records")[0]


def check_new_edges(scorer: LiveScorer, rows: Iterable[dict], path: str | None = None) -> None:
    """Raise for the first edge whose source or target the live graph does not know, when
    unknown accounts are errors (``live.on_unknown_account=error``)."""
    if scorer.on_unknown != "error":
        return
    for i, row in enumerate(rows, start=1):
        for column in ("source", "target"):
            if ("user", str(row[column])) not in scorer.index:
                raise DataError(
                    f"unknown account '{row[column]}': it is not in the history graph "
                    "(set live.on_unknown_account=add to score new accounts)",
                    path=path,
                    row=i,
                    column=column,
                )


def score_edge_row(scorer: LiveScorer, row: Mapping[str, Any]) -> dict[str, Any]:
    """Add one checked edge to the live graph and score it (a static graph's edges at time 0).

    Returns:
        ``source``, ``target`` (and ``timestamp``), then :data:`EDGE_SCORE_COLUMNS`; ``risk`` is
        the source account's risk after the edge.
    """
    t = int(row.get("timestamp", 0))
    score: LiveScore = scorer.score_edge(row["source"], row["target"], t, float(row["weight"]))
    ids = {k: row[k] for k in ("source", "target", "timestamp") if k in row}
    return {
        **ids,
        "risk": score.risk,
        "source_risk": score.user_risk,
        "target_risk": score.counterparty_risk,
        "rescored": score.rescored,
        "latency_ms": score.latency_ms,
        "alerts": score.alerts,
    }


def check_not_before_history(
    times: np.ndarray | pd.Series, start: int | None, path: str | None, column: str = "timestamp"
) -> None:
    """Refuse new events dated before the first event of the history graph.

    Args:
        times: (n,) Unix seconds of the new events, in the order of their rows.
        start: the history's first event (``None``: no history times to compare with).
        path: the source, for messages.
        column: the time column, for messages.

    Raises:
        DataError: names the first such row, its date and the history's start.

    Example:
        >>> check_not_before_history(np.array([5]), 10, "new.csv")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        abyssal.core.errors.DataError: new.csv, row 1, column 'timestamp': dated 1970-01-01 ...
    """
    if start is None:
        return
    row = first_row(np.asarray(times) < start)
    if row is not None:
        when = _utc(int(np.asarray(times)[row - 1]))
        raise DataError(
            f"dated {when}, before the whole history (which starts {_utc(start)}); new events "
            "must not predate the history the model scores them against (check the file and "
            "the timestamp units)",
            path=path,
            row=row,
            column=column,
        )


def history_start(scorer: LiveScorer) -> int | None:
    """Time of the history graph's first event, or ``None`` for a static graph or no edges."""
    graph = scorer.graph
    if graph.static or graph.num_edges == 0:
        return None
    return int(graph.edge_time.min())


def _utc(seconds: int) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


__all__ = [
    "EDGE_SCORE_COLUMNS",
    "check_new_edges",
    "check_not_before_history",
    "history_start",
    "parse_edge_request",
    "read_new_edges",
    "score_edge_row",
]
