"""The transaction graph: nodes, timestamped edges, temporal features, labels and splits.

From a transactions table (users, devices and counterparties become nodes; every transaction is an
edge from the user to the counterparty; the first use of a device by a user is an edge to the
device), from an edge list (a trust or payment network, with node attributes from a node file;
static without timestamps), or from a ``torch_geometric`` ``Data`` object prepared elsewhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from abyssal.core.errors import DataError
from abyssal.solutions.fraud.attributes import AttributedActivity, NodeAttributes
from abyssal.solutions.fraud.features import NodeActivity, signed_log

TXN_NODE_TYPES = ("user", "device", "merchant")
TXN_KINDS = ("txn", "device")


@dataclass
class TransactionIndex:
    """Per-transaction columns aligned with the transactions table (T rows)."""

    ids: np.ndarray  # (T,) str
    user: np.ndarray  # (T,) node index
    counterparty: np.ndarray  # (T,) node index
    device: np.ndarray  # (T,) node index
    amount: np.ndarray  # (T,) float64
    time: np.ndarray  # (T,) int64
    label: np.ndarray | None  # (T,) int8, or None when the table had no labels


@dataclass
class FraudGraph:
    """A graph ready for features, models and rings.

    Attributes:
        node_keys: ``(type, id)`` of each node, index = node number.
        node_type: (N,) type index into ``node_types``.
        x: (N, F) float32 node features.
        edge_src, edge_dst: (E,) node indices of each directed edge.
        edge_value: (E,) amount, rating or weight; ``edge_time``: (E,) Unix seconds;
        edge_kind: (E,) index into ``kinds``.
        y: (N,) int8 label, 1 fraud, 0 benign, -1 unknown.
        activity: the incremental feature state (None for graphs given as features only).
        transactions: per-transaction columns (transaction graphs only).
        static: an edge list without timestamps: no temporal features, every edge at time 0.
        attributes: node attributes from a node file, and their encoding (edge lists only).
    """

    node_keys: list[tuple[str, str]]
    node_types: tuple[str, ...]
    node_type: np.ndarray
    kinds: tuple[str, ...]
    x: np.ndarray
    feature_names: list[str]
    edge_src: np.ndarray
    edge_dst: np.ndarray
    edge_value: np.ndarray
    edge_time: np.ndarray
    edge_kind: np.ndarray
    y: np.ndarray
    activity: NodeActivity | None = None
    transactions: TransactionIndex | None = None
    static: bool = False
    attributes: NodeAttributes | None = None

    @property
    def num_nodes(self) -> int:
        return len(self.node_keys)

    @property
    def num_edges(self) -> int:
        return len(self.edge_src)

    def node_index(self) -> dict[tuple[str, str], int]:
        """``(type, id) -> node number``."""
        return {key: i for i, key in enumerate(self.node_keys)}

    def last_time(self) -> np.ndarray:
        """(N,) time of each node's latest event (0 for graphs without times)."""
        if self.activity is None:
            return np.zeros(self.num_nodes, dtype=np.int64)
        return np.array([self.activity.last_time(i) for i in range(self.num_nodes)], np.int64)


def graph_from_transactions(df: pd.DataFrame, windows: Sequence[int]) -> FraudGraph:
    """Build the heterogeneous transaction graph from a validated transactions table.

    A counterparty whose id is also a ``user_id`` is that user (a peer transfer); otherwise it is a
    merchant. A user's label is 1 if any of their transactions is labelled fraudulent.

    Args:
        df: the table from :func:`abyssal.solutions.fraud.schema.read_transactions`, time-sorted.
        windows: feature windows in seconds.

    Returns:
        The graph with temporal features computed by streaming every transaction.

    This is the reference, one transaction at a time; training and prediction use the
    vectorised :func:`abyssal.solutions.fraud.dataset.transaction_graph`, which the tests hold to
    the same nodes, edges and features.
    """
    user_set = set(df["user_id"].tolist())
    keys: list[tuple[str, str]] = []
    index: dict[tuple[str, str], int] = {}
    user = _intern_all(index, keys, [("user", u) for u in df["user_id"].tolist()])
    device = _intern_all(index, keys, [("device", d) for d in df["device_id"].tolist()])
    cp_keys = [("user" if c in user_set else "merchant", c) for c in df["counterparty_id"].tolist()]
    cp = _intern_all(index, keys, cp_keys)
    node_type = np.array([TXN_NODE_TYPES.index(t) for t, _ in keys], dtype=np.int64)
    txn = TransactionIndex(
        ids=df["transaction_id"].to_numpy(dtype=str),
        user=user,
        counterparty=cp,
        device=device,
        amount=df["amount"].to_numpy(dtype=np.float64),
        time=df["timestamp"].to_numpy(dtype=np.int64),
        label=df["label"].to_numpy(dtype=np.int8) if "label" in df else None,
    )
    activity = NodeActivity(TXN_KINDS, windows, TXN_NODE_TYPES)
    for t in node_type.tolist():
        activity.add_node(t)
    edges = TransactionEdges()
    for i in range(len(df)):
        add_transaction(activity, edges, txn, i)
    y = np.full(len(keys), -1, dtype=np.int8)
    if txn.label is not None:
        y[node_type == 0] = 0
        np.maximum.at(y, user, txn.label)
    return FraudGraph(
        node_keys=keys,
        node_types=TXN_NODE_TYPES,
        node_type=node_type,
        kinds=TXN_KINDS,
        x=activity.matrix(),
        feature_names=list(activity.names),
        y=y,
        activity=activity,
        transactions=txn,
        **edges.arrays(),
    )


class TransactionEdges:
    """Edges as they are added: one per transaction, one per first (user, device) pair."""

    def __init__(self) -> None:
        self.src: list[int] = []
        self.dst: list[int] = []
        self.value: list[float] = []
        self.time: list[int] = []
        self.kind: list[int] = []
        self.seen_devices: set[tuple[int, int]] = set()

    def add(self, src: int, dst: int, value: float, t: int, kind: int) -> int:
        self.src.append(src)
        self.dst.append(dst)
        self.value.append(value)
        self.time.append(t)
        self.kind.append(kind)
        return len(self.src) - 1

    def arrays(self) -> dict[str, np.ndarray]:
        return {
            "edge_src": np.asarray(self.src, dtype=np.int64),
            "edge_dst": np.asarray(self.dst, dtype=np.int64),
            "edge_value": np.asarray(self.value, dtype=np.float64),
            "edge_time": np.asarray(self.time, dtype=np.int64),
            "edge_kind": np.asarray(self.kind, dtype=np.int64),
        }


def add_transaction(
    activity: NodeActivity, edges: TransactionEdges, txn: TransactionIndex, i: int
) -> list[int]:
    """Account for transaction ``i``: features of its user, counterparty and device, and its edges.

    Returns:
        The indices of the edges added (the transaction edge, and a device edge on first use).
    """
    u, c, d = int(txn.user[i]), int(txn.counterparty[i]), int(txn.device[i])
    t, amount = int(txn.time[i]), float(txn.amount[i])
    activity.add_event(u, c, t=t, value=amount, kind=0)
    activity.add_event(u, d, t=t, value=amount, kind=1)
    added = [edges.add(u, c, amount, t, 0)]
    if (u, d) not in edges.seen_devices:
        edges.seen_devices.add((u, d))
        added.append(edges.add(u, d, 0.0, t, 1))
    return added


def graph_from_edges(
    edges: pd.DataFrame,
    labels: pd.DataFrame | None,
    windows: Sequence[int],
    features: pd.DataFrame | None = None,
    *,
    max_onehot_values: int = 20,
) -> FraudGraph:
    """Build a graph of accounts from an edge list, its labels and its node attributes.

    Args:
        edges: ``source, target``, optional ``timestamp`` and ``weight`` or ``rating``. Without
            timestamps, or with one value throughout, the graph is static: its features leave
            out everything that depends on time, and its edges all carry time 0.
        labels: ``node, label`` (1 fraud, 0 benign); labels of nodes in no edge are ignored.
        windows: feature windows in seconds (temporal graphs).
        features: ``node`` plus typed attribute columns (see
            :func:`abyssal.solutions.fraud.nodes.typed_attribute`); nodes without a row get
            the encoding of missing values.
        max_onehot_values: categorical attributes with at most this many values are one-hot.

    Returns:
        The graph; its ``activity`` streams new edges (live scoring), attributes included.

    Example:
        >>> edges = pd.DataFrame({"source": ["a", "b"], "target": ["b", "c"]})
        >>> g = graph_from_edges(edges, None, [3600])
        >>> g.static, g.num_nodes, g.num_edges
        (True, 3, 2)
    """
    static = "timestamp" not in edges or edges["timestamp"].nunique() <= 1
    nodes = pd.unique(pd.concat([edges["source"], edges["target"]], ignore_index=True)).tolist()
    index = {n: i for i, n in enumerate(nodes)}
    src, dst, value, time = _time_ordered_edges(edges, index, static)
    attributes = None
    if features is not None:
        aligned = features.set_index("node").reindex(nodes).reset_index(drop=True)
        absent = int((~pd.Index(nodes).isin(features["node"])).sum())
        attributes = NodeAttributes.fit(aligned, max_onehot_values, absent)
    activity = _edge_activity(windows, static, attributes)
    for _ in nodes:
        activity.add_node(0)
    for s, d, t, v in zip(src.tolist(), dst.tolist(), time.tolist(), value.tolist(), strict=True):
        activity.add_event(s, d, t=t, value=v, kind=0)
    return FraudGraph(
        node_keys=[("user", n) for n in nodes],
        node_types=("user",),
        node_type=np.zeros(len(nodes), dtype=np.int64),
        kinds=("edge",),
        x=activity.matrix(),
        feature_names=list(activity.names),
        edge_src=src,
        edge_dst=dst,
        edge_value=value,
        edge_time=time,
        edge_kind=np.zeros(len(src), dtype=np.int64),
        y=_node_labels(labels, index, len(nodes)),
        activity=activity,
        static=static,
        attributes=attributes,
    )


def _time_ordered_edges(
    edges: pd.DataFrame, index: dict[str, int], static: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Source and target rows (E,), values (E,) and times (E,), stably sorted by time (a static
    graph's edges keep file order, at time 0)."""
    value_col = "rating" if "rating" in edges else "weight" if "weight" in edges else None
    time = np.zeros(len(edges), np.int64) if static else edges["timestamp"].to_numpy(np.int64)
    order = np.argsort(time, kind="stable")
    src = np.array([index[s] for s in edges["source"].tolist()], dtype=np.int64)[order]
    dst = np.array([index[t] for t in edges["target"].tolist()], dtype=np.int64)[order]
    value = edges[value_col].to_numpy(dtype=np.float64)[order] if value_col else np.ones(len(src))
    return src, dst, value, time[order]


def _edge_activity(
    windows: Sequence[int], static: bool, attributes: NodeAttributes | None
) -> NodeActivity:
    """The feature state of an account network, with the node attributes when there are any."""
    if attributes is None:
        return NodeActivity(("edge",), windows, ("user",), temporal=not static)
    return AttributedActivity(
        ("edge",),
        windows,
        ("user",),
        not static,
        attributes.matrix(),
        attributes.absent_row(),
        attributes.names,
    )


def _node_labels(labels: pd.DataFrame | None, index: dict[str, int], n: int) -> np.ndarray:
    """(n,) int8 labels: 1 fraud, 0 benign, -1 unknown (labels of nodes in no edge ignored)."""
    y = np.full(n, -1, dtype=np.int8)
    if labels is not None:
        rows = np.array([index.get(n, -1) for n in labels["node"].tolist()], dtype=np.int64)
        known = rows >= 0
        y[rows[known]] = labels["label"].to_numpy(dtype=np.int8)[known]
    return y


def graph_from_pyg(data: object) -> FraudGraph:
    """Wrap a ``torch_geometric.data.Data`` with ``x`` (N, F), ``edge_index`` (2, E) and ``y`` (N,)
    (1 fraud, 0 benign, -1 unknown); optional ``edge_time`` (E,) and ``edge_weight`` (E,).
    Without ``edge_time`` the graph is static (the model gets no time encoding)."""
    for attr in ("x", "edge_index", "y"):
        if getattr(data, attr, None) is None:
            raise DataError(f"torch_geometric Data needs '{attr}'; it has {sorted(data.keys())}")
    x = data.x.detach().cpu().float().numpy()
    n = x.shape[0]
    ei = data.edge_index.detach().cpu().long().numpy()
    y = data.y.detach().cpu().long().numpy().reshape(-1)
    if ei.ndim != 2 or ei.shape[0] != 2:
        raise DataError(f"Data.edge_index must have shape (2, E), got {tuple(ei.shape)}")
    if y.shape[0] != n:
        raise DataError(f"Data.y has {y.shape[0]} entries for {n} nodes")
    if ei.size and (ei.min() < 0 or ei.max() >= n):
        raise DataError(f"Data.edge_index refers to nodes outside 0..{n - 1}")
    if not np.isfinite(x).all():
        raise DataError("Data.x contains NaN or infinite values")
    e = ei.shape[1]
    time = getattr(data, "edge_time", None)
    weight = getattr(data, "edge_weight", None)
    return FraudGraph(
        node_keys=[("user", str(i)) for i in range(n)],
        node_types=("user",),
        node_type=np.zeros(n, dtype=np.int64),
        kinds=("edge",),
        x=x.astype(np.float32),
        feature_names=[f"x{i}" for i in range(x.shape[1])],
        edge_src=ei[0].astype(np.int64),
        edge_dst=ei[1].astype(np.int64),
        edge_value=np.ones(e) if weight is None else weight.detach().cpu().double().numpy(),
        edge_time=np.zeros(e, np.int64) if time is None else time.detach().cpu().long().numpy(),
        edge_kind=np.zeros(e, dtype=np.int64),
        y=np.where(y > 0, 1, np.where(y == 0, 0, -1)).astype(np.int8),
        static=time is None,
    )


def edge_attributes(value: np.ndarray, kind: np.ndarray, num_kinds: int) -> np.ndarray:
    """(E, 1 + K) edge attributes of original edges: signed-log value and kind one-hot."""
    out = np.zeros((len(value), 1 + num_kinds), dtype=np.float32)
    out[:, 0] = [signed_log(v) for v in value.tolist()]
    out[np.arange(len(value)), 1 + kind] = 1.0
    return out


def _intern_all(
    index: dict[tuple[str, str], int], keys: list[tuple[str, str]], items: list[tuple[str, str]]
) -> np.ndarray:
    """Node numbers of ``items``, adding unseen keys to ``index`` and ``keys`` in order."""
    out = np.empty(len(items), dtype=np.int64)
    for i, key in enumerate(items):
        node = index.get(key)
        if node is None:
            node = index[key] = len(keys)
            keys.append(key)
        out[i] = node
    return out
