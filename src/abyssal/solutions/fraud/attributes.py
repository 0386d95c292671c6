"""Node attributes from a node file, encoded as model features.

Every attribute column of a node file (see :mod:`abyssal.solutions.fraud.nodes`) becomes one or
more numeric features, fitted on the graph's nodes (no labels are used):

- **numeric** (every present cell a number): the value; a missing cell takes the column's median.
- **categorical** (any other text) with at most ``max_onehot_values`` distinct values: one-hot,
  one feature per value (``given_city=Paris``); a missing or unseen value sets none of them.
- **categorical** with more distinct values: frequency encoding, the share of the node file's
  values that equal the node's value (``given_city_frequency``); missing or unseen values get 0.

A column with any missing cell (including nodes that have no row in the node file) also gets a
missing indicator ``given_<column>_missing`` (1 where the value was missing). Nodes that join the
graph later (live scoring) have no attributes: they get the encoding of a missing row.

:class:`AttributedActivity` appends the encoded attributes to the temporal features of
:class:`~abyssal.solutions.fraud.features.NodeActivity`, so a graph with attributes streams new
events (and new nodes) exactly like one without.

Example:
    >>> frame = pd.DataFrame({"age": [30.0, np.nan, 50.0], "city": ["a", "b", None]})
    >>> attrs = NodeAttributes.fit(frame, max_onehot_values=20)
    >>> attrs.names
    ['given_age', 'given_age_missing', 'given_city=a', 'given_city=b', 'given_city_missing']
    >>> attrs.matrix()[1].tolist()
    [40.0, 1.0, 0.0, 1.0, 0.0]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd

from abyssal.solutions.fraud.features import NodeActivity

EncodingKind = Literal["numeric", "onehot", "frequency"]
PREFIX = "given_"


@dataclass
class AttributeColumn:
    """How one attribute column becomes features.

    Attributes:
        name: the column as written in the node file.
        kind: ``numeric``, ``onehot`` or ``frequency``.
        median: numeric: the value a missing cell takes.
        values: onehot: the values, in feature order.
        shares: frequency: each value's share of the present values.
        missing: how many of the graph's nodes lack a value (>0 adds a missing indicator).
    """

    name: str
    kind: EncodingKind
    median: float = 0.0
    values: list[str] = field(default_factory=list)
    shares: dict[str, float] = field(default_factory=dict)
    missing: int = 0

    @property
    def names(self) -> list[str]:
        """The feature names this column gives, in order."""
        base = f"{PREFIX}{self.name}"
        if self.kind == "numeric":
            names = [base]
        elif self.kind == "onehot":
            names = [f"{base}={v}" for v in self.values]
        else:
            names = [f"{base}_frequency"]
        return names + ([f"{base}_missing"] if self.missing else [])

    def encode(self, values: np.ndarray) -> np.ndarray:
        """(n, k) float32 features of (n,) values (float with NaN, or objects with ``None``)."""
        gone = _missing(values)
        if self.kind == "numeric":
            parts = [np.where(gone, self.median, values.astype(np.float64))[:, None]]
        elif self.kind == "onehot":
            parts = [(values[:, None] == np.asarray(self.values, dtype=object)[None, :])]
        else:
            parts = [np.array([self.shares.get(v, 0.0) for v in values.tolist()])[:, None]]
        if self.missing:
            parts.append(gone[:, None])
        return np.concatenate([p.astype(np.float32) for p in parts], axis=1)

    def describe(self) -> str:
        kind = {
            "numeric": "numeric",
            "onehot": f"one-hot over {len(self.values)} values",
            "frequency": f"frequency of {len(self.shares)} values",
        }[self.kind]
        return f"{self.name} ({kind}, {self.missing} missing)"


@dataclass
class NodeAttributes:
    """The attribute columns of a graph's nodes and their encoding.

    Attributes:
        columns: one encoding per attribute column.
        values: column -> (N,) typed values aligned with the graph's nodes (float64 with NaN, or
            objects with ``None``), as the leakage guard and the encoding read them.
        absent: how many of the graph's nodes have no row in the node file.
    """

    columns: list[AttributeColumn]
    values: dict[str, np.ndarray]
    absent: int = 0

    @classmethod
    def fit(
        cls, frame: pd.DataFrame, max_onehot_values: int = 20, absent: int = 0
    ) -> NodeAttributes:
        """Fit the encoding on typed attribute columns aligned with the graph's nodes.

        Args:
            frame: one row per graph node; float64 (NaN = missing) or object (``None`` =
                missing) columns, as :func:`abyssal.solutions.fraud.nodes.typed_attributes`
                gives them.
            max_onehot_values: categorical columns with at most this many values are one-hot.
            absent: how many rows stand for nodes the node file does not list (for reports).
        """
        values = {str(c): frame[c].to_numpy() for c in frame.columns}
        columns = [_fit_column(name, v, max_onehot_values) for name, v in values.items()]
        return cls(columns, values, absent)

    @property
    def names(self) -> list[str]:
        return [n for column in self.columns for n in column.names]

    def matrix(self) -> np.ndarray:
        """(N, A) float32 features of the graph's nodes."""
        n = len(next(iter(self.values.values()))) if self.values else 0
        parts = [c.encode(self.values[c.name]) for c in self.columns]
        return np.concatenate(parts, axis=1) if parts else np.zeros((n, 0), np.float32)

    def absent_row(self) -> list[float]:
        """The features of a node without attributes (every column missing)."""
        row = []
        for column in self.columns:
            empty = np.array([np.nan]) if column.kind == "numeric" else np.array([None], object)
            row += column.encode(empty)[0].tolist()
        return row

    def describe(self) -> str:
        """One line: the columns, their encoding and missing cells."""
        kinds = "; ".join(c.describe() for c in self.columns)
        absent = f"; {self.absent} nodes have no row in the node file" if self.absent else ""
        return f"{len(self.columns)} node attributes: {kinds}{absent}"


def _fit_column(name: str, values: np.ndarray, max_onehot_values: int) -> AttributeColumn:
    gone = _missing(values)
    missing = int(gone.sum())
    if values.dtype.kind == "f":
        present = values[~gone]
        median = float(np.median(present)) if len(present) else 0.0
        return AttributeColumn(name, "numeric", median=median, missing=missing)
    counts = pd.Series(values[~gone]).value_counts()
    if len(counts) <= max_onehot_values:
        return AttributeColumn(name, "onehot", values=sorted(counts.index), missing=missing)
    shares = {str(k): float(v) / counts.sum() for k, v in counts.items()}
    return AttributeColumn(name, "frequency", shares=shares, missing=missing)


def _missing(values: np.ndarray) -> np.ndarray:
    """(n,) True where a value is missing: NaN, or ``None`` / NaN in an object column."""
    return np.asarray(pd.isna(values), dtype=bool)


class AttributedActivity(NodeActivity):
    """:class:`NodeActivity` whose feature vectors end with each node's encoded attributes.

    Args:
        kinds, windows, node_types, temporal: as for :class:`NodeActivity`.
        rows: (N, A) attributes of the first N nodes added, in order.
        absent: (A,) attributes of any later node.
        names: the A attribute feature names.

    Example:
        >>> act = AttributedActivity(("edge",), (), ("user",), False, np.ones((1, 1)), [0.0], ["a"])
        >>> act.add_node(0), act.add_node(0)
        (0, 1)
        >>> act.vector(0)[-1], act.vector(1)[-1], act.names[-1]
        (1.0, 0.0, 'a')
    """

    def __init__(
        self,
        kinds: Sequence[str],
        windows: Sequence[int],
        node_types: Sequence[str],
        temporal: bool,
        rows: np.ndarray,
        absent: Sequence[float],
        names: Sequence[str],
    ) -> None:
        super().__init__(kinds, windows, node_types, temporal)
        self._attributes = [list(map(float, r)) for r in np.asarray(rows, dtype=np.float32)]
        self._absent = [float(v) for v in absent]
        self.names = [*self.names, *names]

    def add_node(self, node_type: int) -> int:
        node = super().add_node(node_type)
        if node >= len(self._attributes):
            self._attributes.append(list(self._absent))
        return node

    def vector(self, node: int) -> list[float]:
        return super().vector(node) + self._attributes[node]
