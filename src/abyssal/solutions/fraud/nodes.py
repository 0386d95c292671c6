"""Node files: labels and attributes of a graph's nodes, from one table or two.

A node file has an id column (``node``; ``data.node_column``), an optional 0/1 label column
(``label``; ``data.label_column``) and any other columns, which are node attributes unless
``data.ignore_columns`` names them. The label column and the ignored columns are never
attributes. One file can be given as ``data.labels_path`` or ``data.features_path`` (or both),
or labels and attributes can come from two files:

- ``labels_path`` must have a label column; its other columns are attributes too.
- ``features_path`` may have a label column: it gives the labels when there is no other labels
  file, and is otherwise left out (never an attribute).

An empty label cell leaves that node unlabelled. Attribute cells are numbers (a column whose
present cells are all numbers) or text (categorical); empty cells and ``NA``, ``N/A``, ``NaN``,
``nan``, ``null``, ``NULL``, ``None`` and ``?`` are missing.

Example:
    >>> table = read_node_files("nodes.csv", None, known=pd.Index(["a", "b"]))  # doctest: +SKIP
    >>> table.labels.columns.tolist(), table.attributes.columns.tolist()  # doctest: +SKIP
    (['node', 'label'], ['node', 'age', 'city'])
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

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
NODE_ALIASES = ("node_id", "user", "user_id", "id")
LABEL_ALIASES = ("is_fraud", "fraud")
MISSING_TEXT = frozenset({"", "NA", "N/A", "NaN", "nan", "null", "NULL", "None", "?"})


@dataclass(frozen=True)
class NodeFileOptions:
    """Which columns of a node file are what (``data.node_column``, ``data.label_column``,
    ``data.ignore_columns``); the default names also accept their usual aliases."""

    node_column: str = "node"
    label_column: str = "label"
    ignore_columns: tuple[str, ...] = ()

    def node_spec(self) -> ColumnSpec:
        aliases = NODE_ALIASES if self.node_column == "node" else ()
        return ColumnSpec(self.node_column, "id", aliases=aliases)

    def label_spec(self, required: bool) -> ColumnSpec:
        aliases = LABEL_ALIASES if self.label_column == "label" else ()
        return ColumnSpec(self.label_column, "label", required=required, aliases=aliases)


@dataclass
class NodeFile:
    """One node file as read: its rows' node ids, labels (if any) and attribute columns."""

    path: str
    raw: pd.DataFrame
    nodes: pd.Series
    labels: pd.Series | None
    attributes: pd.DataFrame  # typed: float64 (NaN missing) or object (None missing)


@dataclass
class NodeTable:
    """What the node files say about the graph's nodes.

    Attributes:
        labels: ``node``, ``label`` (int8) of the labelled nodes, or ``None``.
        attributes: ``node`` plus typed attribute columns (float64 with NaN, or object text
            with ``None``), or ``None`` without attribute columns.
        files: each file read, by path (for fingerprints).
        notes: what was left out, for reports.
    """

    labels: pd.DataFrame | None = None
    attributes: pd.DataFrame | None = None
    files: dict[str, pd.DataFrame] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def read_node_files(
    labels_path: PathLike | None,
    features_path: PathLike | None,
    *,
    known: pd.Index,
    options: NodeFileOptions | None = None,
) -> NodeTable:
    """Read the node file(s) behind ``data.labels_path`` and ``data.features_path``.

    Args:
        labels_path: a node file with a label column, or ``None``.
        features_path: a node file with attributes (and maybe labels), or ``None``; it may be
            the same file as ``labels_path``.
        known: the ids of the graph's nodes; a node file row for another node is an error.
        options: the id, label and ignored columns.

    Returns:
        The labels and attributes.

    Raises:
        DataError: a missing id or label column, a bad label, a repeated node or one that is in
            no edge, a non-finite number, an ignored column no file has, or an attribute column
            that two different files both give (naming the file, row and column).
    """
    options = options or NodeFileOptions()
    same = labels_path is not None and _same_file(labels_path, features_path)
    paths = [p for p in (labels_path, None if same else features_path) if p is not None]
    files = [_read_node_file(p, options, p == labels_path, known) for p in paths]
    _check_ignored(options, files)
    table = NodeTable(files={f.path: f.raw for f in files})
    label_files = [f for f in files if f.labels is not None]
    if label_files:
        table.labels = _labels(label_files[0])
        table.notes += [
            f"{f.path}: column '{options.label_column}' left out (labels come from "
            f"{label_files[0].path})"
            for f in label_files[1:]
        ]
    table.attributes = _merge_attributes(files)
    return table


def _same_file(a: PathLike, b: PathLike | None) -> bool:
    if b is None:
        return False
    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:
        return str(a) == str(b)


def _read_node_file(
    path: PathLike, options: NodeFileOptions, needs_label: bool, known: pd.Index
) -> NodeFile:
    raw = read_table(path)
    node_spec = options.node_spec()
    headers = match_columns(list(raw.columns), [node_spec, options.label_spec(needs_label)], path)
    nodes = validate_columns(raw, [node_spec], path)[node_spec.name]
    check_known_nodes(pd.DataFrame({"node": nodes}), known, path)
    label_header = headers.get(options.label_column)
    labels = None if label_header is None else _label_cells(raw[label_header], path, label_header)
    taken = set(headers.values()) | set(options.ignore_columns)
    attributes = pd.DataFrame(
        {str(c): typed_attribute(raw[c], path, str(c)) for c in raw.columns if c not in taken}
    )
    return NodeFile(str(path), raw, nodes, labels, attributes)


def _label_cells(column: pd.Series, path: PathLike, header: str) -> pd.Series:
    """0/1 labels as float (NaN where the cell is empty: an unlabelled node).

    Raises:
        DataError: a present cell other than 0, 1, true or false, naming its row.
    """
    gone = _missing_cells(column).to_numpy()
    text = column.astype(str).str.strip().str.lower().replace({"true": "1", "false": "0"})
    values = pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64)
    row = first_row(~gone & ~np.isin(values, (0.0, 1.0)))
    if row is not None:
        raise DataError(
            f"expected 0 or 1 (or true/false, or empty for an unlabelled node), got "
            f"{column.iloc[row - 1]!r}",
            path=path,
            row=row,
            column=header,
        )
    return pd.Series(np.where(gone, np.nan, values), index=column.index)


def _labels(file: NodeFile) -> pd.DataFrame:
    labelled = file.labels.notna().to_numpy()
    return pd.DataFrame(
        {
            "node": file.nodes[labelled].to_numpy(),
            "label": file.labels[labelled].to_numpy().astype(np.int8),
        }
    )


def typed_attribute(column: pd.Series, path: PathLike, header: str) -> pd.Series:
    """An attribute column as float64 (every present cell a number; NaN = missing) or as
    object text (``None`` = missing).

    Raises:
        DataError: an infinite number, naming its row and column.

    Example:
        >>> typed_attribute(pd.Series(["1", "NA", " 2"]), "n.csv", "x").tolist()
        [1.0, nan, 2.0]
    """
    if pd.api.types.is_bool_dtype(column):
        return column.astype("float64")
    if pd.api.types.is_numeric_dtype(column):
        values = column.astype("float64")
    else:
        gone = _missing_cells(column).tolist()
        cells = [None if g else str(v).strip() for v, g in zip(column.tolist(), gone, strict=True)]
        text = pd.Series(cells, index=column.index, dtype=object)
        values = pd.to_numeric(text, errors="coerce").astype("float64")
        if (values.isna() & ~np.asarray(gone)).any():
            return text
    row = first_row(np.isinf(values.to_numpy()))
    if row is not None:
        raise DataError(
            f"not a finite number: {column.iloc[row - 1]!r}", path=path, row=row, column=header
        )
    return values


def _missing_cells(column: pd.Series) -> pd.Series:
    if pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column):
        return column.isna()
    return column.isna() | column.astype(str).str.strip().isin(MISSING_TEXT)


def _check_ignored(options: NodeFileOptions, files: list[NodeFile]) -> None:
    columns = [str(c) for f in files for c in f.raw.columns]
    unknown = [c for c in options.ignore_columns if c not in columns]
    if unknown:
        raise DataError(
            f"data.ignore_columns names '{unknown[0]}', which no node file has; the columns "
            f"are: {', '.join(dict.fromkeys(columns))}",
            path=files[0].path if files else None,
        )


def _merge_attributes(files: list[NodeFile]) -> pd.DataFrame | None:
    merged: pd.DataFrame | None = None
    owner: dict[str, str] = {}
    for f in files:
        if f.attributes.shape[1] == 0:
            continue
        for column in f.attributes.columns:
            if column in owner:
                raise DataError(
                    f"attribute column '{column}' is in two node files ({owner[column]} and "
                    f"{f.path}); keep it in one, or list it in data.ignore_columns",
                    path=f.path,
                    column=column,
                )
            owner[column] = f.path
        part = pd.concat([pd.DataFrame({"node": f.nodes}), f.attributes], axis=1)
        merged = part if merged is None else merged.merge(part, on="node", how="outer")
    return merged


def check_known_nodes(
    frame: pd.DataFrame, known: pd.Index, path: PathLike, network: str = "graph"
) -> None:
    """Each ``node`` of ``frame`` is unique and in some edge; else a DataError naming its row.

    Example:
        >>> check_known_nodes(pd.DataFrame({"node": ["a"]}), pd.Index(["a"]), "n.csv")
    """
    check_unique(frame, "node", path)
    row = first_row(~frame["node"].isin(known).to_numpy())
    if row is not None:
        node = frame["node"].iloc[row - 1]
        raise DataError(
            f"node '{node}' is in no edge of the {network}", path=path, row=row, column="node"
        )


__all__ = [
    "NodeFileOptions",
    "NodeTable",
    "check_known_nodes",
    "read_node_files",
    "typed_attribute",
]
