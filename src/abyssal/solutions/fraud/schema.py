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

**Edge list** of a trust or payment network: ``source``, ``target`` (ids), optional ``timestamp``
(without it, or with one value throughout, the graph is static) and optional ``weight``
(``rating``, ``amount``; default 1.0); node labels and attributes come from node files (see
:mod:`abyssal.solutions.fraud.nodes`).

Row numbers in errors are 1-based data rows (the header is not counted).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from abyssal.core.errors import DataError
from abyssal.data.tables import (
    ColumnSpec,
    check_unique,
    first_row,
    read_table,
    validate_columns,
)
from abyssal.solutions.fraud.nodes import (
    NODE_ALIASES,
    NodeFileOptions,
    check_known_nodes,
    read_node_files,
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
    ColumnSpec("timestamp", "timestamp", required=False, aliases=("time", "ts")),
    ColumnSpec("weight", "number", required=False, aliases=("rating", "amount")),
)
NODE_COLUMN = ColumnSpec("node", "id", aliases=NODE_ALIASES)
LABEL_COLUMNS = (NODE_COLUMN, ColumnSpec("label", "label", aliases=("is_fraud", "fraud")))


def read_transactions(
    source: PathLike | pd.DataFrame,
    *,
    require_label: bool = False,
    source_name: str | None = None,
    sort: bool = True,
) -> pd.DataFrame:
    """Read and check a transactions table.

    Args:
        source: a table file (see :func:`abyssal.data.tables.read_table`) or a loaded frame.
        require_label: make the ``label`` column required (for training and evaluation).
        source_name: the name used in messages; defaults to the path, or ``"<dataframe>"``.
        sort: sort by time; ``False`` keeps the file's order (so that later checks can name
            file rows; :func:`sort_transactions` sorts afterwards).

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
    return sort_transactions(tx) if sort else tx


def sort_transactions(tx: pd.DataFrame) -> pd.DataFrame:
    """Transactions sorted stably by ``(timestamp, transaction_id)``, with a fresh index."""
    return tx.sort_values(["timestamp", "transaction_id"], kind="stable").reset_index(drop=True)


@dataclass
class EdgeListData:
    """A trust or payment network read from an edge list and its node files.

    Attributes:
        edges: ``source``, ``target`` (text ids), ``timestamp`` (int64 Unix seconds; absent in a
            static edge list), ``weight`` (float64; 1.0 where the file has no weight column), in
            file order.
        labels: ``node``, ``label`` (int8, 1 = fraudulent), or ``None`` without labels.
        features: ``node`` plus typed attribute columns (float64 with NaN, or text with
            ``None``; see :func:`abyssal.solutions.fraud.nodes.typed_attribute`), or ``None``.
        node_files: each node file as read, by path (for fingerprints).
        notes: what was left out or assumed, for reports.
    """

    edges: pd.DataFrame
    labels: pd.DataFrame | None = None
    features: pd.DataFrame | None = None
    node_files: dict[str, pd.DataFrame] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def nodes(self) -> pd.Index:
        """Every node in the edges, in order of first appearance.

        Example:
            >>> EdgeListData(pd.DataFrame({"source": ["b"], "target": ["a"]})).nodes().tolist()
            ['b', 'a']
        """
        pairs = np.column_stack([self.edges["source"], self.edges["target"]]).ravel()
        return pd.Index(pd.unique(pairs), name="node")

    @property
    def static(self) -> bool:
        """True without timestamps, or when every edge has the same one."""
        return is_static(self.edges)

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
                "the graph has no node labels to train or evaluate on; expected a node file "
                "with columns node,label (1 = fraudulent, 0 = benign) as data.labels_path (or "
                "data.features_path)",
                path=path,
            )
        return self.labels


def is_static(edges: pd.DataFrame) -> bool:
    """True when an edge list has no ``timestamp`` column, or one value throughout.

    Example:
        >>> is_static(pd.DataFrame({"timestamp": [5, 5]}))
        True
    """
    return "timestamp" not in edges or edges["timestamp"].nunique() <= 1


def read_edge_list(
    edges_path: PathLike,
    labels_path: PathLike | None = None,
    features_path: PathLike | None = None,
    *,
    options: NodeFileOptions | None = None,
) -> EdgeListData:
    """Read an edge list with optional node files (labels and attributes).

    Args:
        edges_path: table with ``source, target``, optional ``timestamp`` and ``weight``.
        labels_path: a node file with a label column (see :mod:`abyssal.solutions.fraud.nodes`).
        features_path: a node file with attributes (it may be the labels file too).
        options: the node files' id, label and ignored columns.

    Returns:
        The checked :class:`EdgeListData`.

    Raises:
        DataError: a missing column or bad value; a node file row for a node that is in no
            edge, or a node listed twice (naming the row and the node).

    Example:
        >>> graph = read_edge_list("edges.csv", labels_path="nodes.csv")  # doctest: +SKIP
        >>> labels = graph.require_labels("edges.csv")  # doctest: +SKIP
    """
    edges = validate_columns(read_table(edges_path), EDGE_COLUMNS, edges_path)
    if "weight" not in edges:
        edges["weight"] = 1.0
    data = EdgeListData(edges)
    if labels_path is not None or features_path is not None:
        table = read_node_files(labels_path, features_path, known=data.nodes(), options=options)
        data.labels, data.features = table.labels, table.attributes
        data.node_files, data.notes = table.files, table.notes
    return data


__all__ = [
    "EDGE_COLUMNS",
    "LABEL_COLUMNS",
    "TRANSACTION_COLUMNS",
    "EdgeListData",
    "check_known_nodes",
    "is_static",
    "read_edge_list",
    "read_transactions",
    "sort_transactions",
]
