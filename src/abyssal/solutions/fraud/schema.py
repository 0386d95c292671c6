"""The data formats the fraud solution reads.

**Transactions** (CSV, CSV.gz or Parquet), one row per payment:

==================  =========  ==================================================================
column              kind       meaning (other accepted headers)
==================  =========  ==================================================================
``transaction_id``  id         unique per row (``tx_id``, ``txn_id``)
``timestamp``       timestamp  Unix seconds or ISO-8601, UTC (``time``, ``ts``, ``datetime``)
``user_id``         id         the paying user (``user``, ``customer_id``, ``account_id``)
``device_id``       id         the device used (``device``)
``counterparty_id`` id         a merchant, or another user: when it equals a ``user_id`` the
                               payment is a user-to-user transfer (``merchant_id``,
                               ``counterparty``, ``merchant``, ``payee_id``)
``amount``          number     >= 0 (``value``)
``label``           0/1        optional: 1 = fraudulent transaction (``is_fraud``, ``fraud``)
==================  =========  ==================================================================

**Edge list** of a trust or payment network: ``source``, ``target`` (ids), ``timestamp``, optional
``weight`` (``rating``, ``amount``; default 1.0); optional labels file ``node,label`` (1 =
fraudulent) and features file ``node`` plus numeric columns.

Row numbers in errors are 1-based data rows (the header is not counted).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from abyssal.core.errors import DataError
from abyssal.data.tables import (
    ColumnSpec,
    check_unique,
    first_row,
    match_columns,
    read_table,
    validate_columns,
)

PathLike = str | os.PathLike[str]

TRANSACTION_COLUMNS = (
    ColumnSpec("transaction_id", "id", aliases=("tx_id", "txn_id")),
    ColumnSpec("timestamp", "timestamp", aliases=("time", "ts", "datetime")),
    ColumnSpec("user_id", "id", aliases=("user", "customer_id", "account_id")),
    ColumnSpec("device_id", "id", aliases=("device",)),
    ColumnSpec(
        "counterparty_id",
        "id",
        aliases=("merchant_id", "counterparty", "merchant", "payee_id"),
    ),
    ColumnSpec("amount", "number", aliases=("value",)),
    ColumnSpec("label", "label", required=False, aliases=("is_fraud", "fraud")),
)
EDGE_COLUMNS = (
    ColumnSpec("source", "id", aliases=("src", "from", "sender")),
    ColumnSpec("target", "id", aliases=("dst", "to", "receiver")),
    ColumnSpec("timestamp", "timestamp", aliases=("time", "ts")),
    ColumnSpec("weight", "number", required=False, aliases=("rating", "amount")),
)
NODE_COLUMN = ColumnSpec("node", "id", aliases=("node_id", "user", "user_id", "id"))
LABEL_COLUMNS = (NODE_COLUMN, ColumnSpec("label", "label", aliases=("is_fraud", "fraud")))


def read_transactions(
    source: PathLike | pd.DataFrame,
    *,
    require_label: bool = False,
    source_name: str | None = None,
) -> pd.DataFrame:
    """Read and check a transactions table.

    Args:
        source: a table file (see :func:`abyssal.data.tables.read_table`) or a loaded frame.
        require_label: make the ``label`` column required (for training and evaluation).
        source_name: the name used in messages; defaults to the path, or ``"<dataframe>"``.

    Returns:
        A non-empty frame with exactly the columns ``transaction_id, timestamp, user_id,
        device_id, counterparty_id, amount`` (+ ``label`` when given), ids as text, ``timestamp``
        int64 Unix seconds, ``amount`` float64, ``label`` int8; sorted stably by
        ``(timestamp, transaction_id)`` with a fresh 0-based index.

    Raises:
        DataError: a missing column, a bad value, a negative amount or a repeated transaction id,
            naming the source, the 1-based data row and the column.

    Example:
        >>> tx = read_transactions("transactions.csv", require_label=True)  # doctest: +SKIP
        >>> list(tx.columns[-2:])  # doctest: +SKIP
        ['amount', 'label']
    """
    if isinstance(source, pd.DataFrame):
        where = source_name or "<dataframe>"
        if len(source) == 0:
            raise DataError("no rows: the frame is empty", path=where)
        frame = source
    else:
        where = source_name or str(source)
        frame = read_table(source)
    specs = [
        replace(s, required=True) if s.name == "label" and require_label else s
        for s in TRANSACTION_COLUMNS
    ]
    tx = validate_columns(frame, specs, where)
    row = first_row(tx["amount"].to_numpy() < 0)
    if row is not None:
        amount = tx["amount"].iloc[row - 1]
        raise DataError(f"amount must be >= 0, got {amount}", path=where, row=row, column="amount")
    check_unique(tx, "transaction_id", where)
    return tx.sort_values(["timestamp", "transaction_id"], kind="stable").reset_index(drop=True)


@dataclass
class EdgeListData:
    """A trust or payment network read from an edge list.

    Attributes:
        edges: ``source``, ``target`` (text ids), ``timestamp`` (int64 Unix seconds), ``weight``
            (float64; 1.0 where the file has no weight column), in file order.
        labels: ``node``, ``label`` (int8, 1 = fraudulent), or ``None`` without a labels file.
        features: ``node`` plus float64 feature columns, or ``None`` without a features file.
    """

    edges: pd.DataFrame
    labels: pd.DataFrame | None = None
    features: pd.DataFrame | None = None

    def nodes(self) -> pd.Index:
        """Every node in the edges, in order of first appearance.

        Example:
            >>> EdgeListData(pd.DataFrame({"source": ["b"], "target": ["a"]})).nodes().tolist()
            ['b', 'a']
        """
        pairs = np.column_stack([self.edges["source"], self.edges["target"]]).ravel()
        return pd.Index(pd.unique(pairs), name="node")

    def require_labels(self, path: PathLike | None = None) -> pd.DataFrame:
        """The labels, or an error for a task that cannot run without them.

        Args:
            path: the edge list the graph came from, for the message.

        Returns:
            The ``labels`` frame.

        Raises:
            DataError: the graph has no labels.
        """
        if self.labels is None or len(self.labels) == 0:
            raise DataError(
                "graph has no labels: this task needs node labels; expected a labels file with "
                "columns node,label (1 = fraudulent, 0 = benign)",
                path=path,
            )
        return self.labels


def read_edge_list(
    edges_path: PathLike,
    labels_path: PathLike | None = None,
    features_path: PathLike | None = None,
) -> EdgeListData:
    """Read an edge list with optional node labels and node features.

    Args:
        edges_path: table with ``source, target, timestamp`` and optional ``weight``.
        labels_path: table with ``node, label`` (0/1), one row per labelled node.
        features_path: table with ``node`` and numeric feature columns, one row per node.

    Returns:
        The checked :class:`EdgeListData`.

    Raises:
        DataError: a missing column or bad value; a labels or features row for a node that is in
            no edge, or a node listed twice (naming the row and the node).

    Example:
        >>> graph = read_edge_list("edges.csv", labels_path="labels.csv")  # doctest: +SKIP
        >>> labels = graph.require_labels("edges.csv")  # doctest: +SKIP
    """
    edges = validate_columns(read_table(edges_path), EDGE_COLUMNS, edges_path)
    if "weight" not in edges:
        edges["weight"] = 1.0
    data = EdgeListData(edges)
    known = data.nodes()
    if labels_path is not None:
        data.labels = validate_columns(read_table(labels_path), LABEL_COLUMNS, labels_path)
        check_known_nodes(data.labels, known, labels_path)
    if features_path is not None:
        data.features = _read_features(features_path)
        check_known_nodes(data.features, known, features_path)
    return data


def _read_features(path: PathLike) -> pd.DataFrame:
    raw = read_table(path)
    node_header = match_columns(list(raw.columns), [NODE_COLUMN], path)["node"]
    others = [str(c) for c in raw.columns if c != node_header]
    if not others:
        raise DataError(
            "no feature columns: expected node plus one or more numeric columns", path=path
        )
    specs = [NODE_COLUMN] + [ColumnSpec(name, "number") for name in others]
    return validate_columns(raw, specs, path)


def check_known_nodes(
    frame: pd.DataFrame, known: pd.Index, path: PathLike, network: str = "graph"
) -> None:
    """Each ``node`` of ``frame`` is unique and in some edge; else a DataError naming its row."""
    check_unique(frame, "node", path)
    row = first_row(~frame["node"].isin(known).to_numpy())
    if row is not None:
        node = frame["node"].iloc[row - 1]
        raise DataError(
            f"node '{node}' is in no edge of the {network}", path=path, row=row, column="node"
        )


__all__ = [
    "EDGE_COLUMNS",
    "LABEL_COLUMNS",
    "TRANSACTION_COLUMNS",
    "EdgeListData",
    "read_edge_list",
    "read_transactions",
]
