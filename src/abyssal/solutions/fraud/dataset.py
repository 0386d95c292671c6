"""Prepared fraud data: the graph, its splits, and the tensors a model consumes."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch

from abyssal.core.errors import DataError
from abyssal.data.fingerprint import combine_fingerprints, fingerprint_frame
from abyssal.data.leakage import check_leakage
from abyssal.solutions.fraud.config import FraudDataConfig
from abyssal.solutions.fraud.features import EventLog, LoggedActivity, NodeActivity
from abyssal.solutions.fraud.graph import (
    TXN_KINDS,
    TXN_NODE_TYPES,
    FraudGraph,
    TransactionIndex,
    edge_attributes,
    graph_from_edges,
    graph_from_pyg,
)
from abyssal.solutions.fraud.nodes import NodeFileOptions

if TYPE_CHECKING:
    from abyssal.solutions.fraud.schema import EdgeListData

log = logging.getLogger(__name__)


@dataclass
class GraphTensors:
    """Model inputs for a whole graph; every edge appears in both directions.

    Shapes: x (N, F); edge_index (2, 2E); edge_attr (2E, A); edge_time (2E,); last_time (N,).
    """

    x: torch.Tensor
    edge_index: torch.Tensor
    edge_attr: torch.Tensor
    edge_time: torch.Tensor
    last_time: torch.Tensor

    def edge_dt(self) -> torch.Tensor:
        """(2E,) age of each edge at its receiver's latest event, in seconds (>= 0)."""
        dt = self.last_time[self.edge_index[1]] - self.edge_time
        return dt.clamp_min(0).to(torch.float32)

    def to(self, device: torch.device | str) -> GraphTensors:
        return GraphTensors(*(t.to(device) for t in self.__dict__.values()))

    @staticmethod
    def from_graph(graph: FraudGraph) -> GraphTensors:
        src = torch.from_numpy(graph.edge_src)
        dst = torch.from_numpy(graph.edge_dst)
        attr = torch.from_numpy(
            edge_attributes(graph.edge_value, graph.edge_kind, len(graph.kinds))
        )
        e = len(src)
        direction = torch.cat([torch.zeros(e, 1), torch.ones(e, 1)])  # (2E, 1) 1 = reversed
        time = torch.from_numpy(graph.edge_time)
        return GraphTensors(
            x=torch.from_numpy(graph.x),
            edge_index=torch.stack([torch.cat([src, dst]), torch.cat([dst, src])]),
            edge_attr=torch.cat([torch.cat([attr, attr]), direction], dim=1),
            edge_time=torch.cat([time, time]),
            last_time=torch.from_numpy(graph.last_time()),
        )


def edge_feature_size(num_kinds: int) -> int:
    """Width of ``GraphTensors.edge_attr``: value, kind one-hot, direction."""
    return 2 + num_kinds


@dataclass
class FraudData:
    """A prepared graph with node splits.

    Attributes:
        graph: the graph.
        masks: ``train``/``val``/``test`` boolean arrays over nodes (labelled accounts only).
        fingerprint: identifies the input data (and split).
        description: where the data came from, for reports.
        transactions: the validated transactions table (transactions sources only).
        input_format: ``transactions``, ``edges`` or ``pyg``: which scoring path fits a model
            trained on it.
    """

    graph: FraudGraph
    masks: dict[str, np.ndarray]
    fingerprint: str
    description: str
    transactions: pd.DataFrame | None = None
    input_format: str = "transactions"

    def transaction_masks(self) -> dict[str, np.ndarray] | None:
        """Splits of transactions by their user's split (None without labelled transactions)."""
        txn = self.graph.transactions
        if txn is None or txn.label is None:
            return None
        return {name: mask[txn.user] for name, mask in self.masks.items()}


def prepare_fraud_data(cfg: FraudDataConfig) -> FraudData:
    """Read the data ``cfg`` points at, build the graph and split the labelled accounts."""
    if cfg.source == "bitcoin_otc":
        return _prepare_bitcoin(cfg)
    if cfg.source == "edges":
        return _prepare_edges(cfg)
    df = load_transactions(cfg)
    if "label" not in df:
        raise DataError(
            "the transactions have no 'label' column: there are no labels to train or evaluate "
            "on; expected 0/1 labels (1 = fraudulent transaction)",
            path=cfg.path,
            column="label",
        )
    graph = transaction_graph(df, cfg.windows)
    desc = f"transactions {cfg.path}" if cfg.path else _synthetic_description(cfg)
    data = _with_random_split(graph, cfg, fingerprint_frame(df), desc)
    data.transactions = df
    return data


def transaction_graph(df: pd.DataFrame, windows: Sequence[int]) -> FraudGraph:
    """The graph :func:`~abyssal.solutions.fraud.graph.graph_from_transactions` builds, the same
    nodes, edges and features, without a Python loop per transaction.

    Node features come from an :class:`~abyssal.solutions.fraud.features.EventLog` of the
    transactions (each row is one step: its event to the counterparty, then to the device); the
    graph's ``activity`` streams those events only when a live scorer first needs it.

    Args:
        df: a validated, time-sorted transactions table.
        windows: feature windows in seconds.
    """
    txn, keys, node_type = _transaction_nodes(df)
    log = _transaction_log(txn, node_type, windows)
    y = np.full(len(keys), -1, dtype=np.int8)
    if txn.label is not None:
        y[node_type == 0] = 0
        np.maximum.at(y, txn.user, txn.label)
    return FraudGraph(
        node_keys=keys,
        node_types=TXN_NODE_TYPES,
        node_type=node_type,
        kinds=TXN_KINDS,
        x=log.features(np.arange(len(keys))),
        feature_names=list(log.names),
        y=y,
        activity=LoggedActivity(log, lambda act: _stream_transactions(act, txn)),
        transactions=txn,
        **_transaction_edges(txn),
    )


def transaction_log(graph: FraudGraph) -> EventLog:
    """The event log of a transaction graph (kept by :func:`transaction_graph`, else built)."""
    log = getattr(graph.activity, "log", None)
    if log is not None:
        return log
    windows = graph.activity.windows if graph.activity is not None else ()
    return _transaction_log(graph.transactions, graph.node_type, windows)


def _transaction_log(txn: TransactionIndex, node_type: np.ndarray, windows) -> EventLog:
    """Each transaction row is one step: its event to the counterparty, then to the device."""
    steps = np.arange(len(txn.user), dtype=np.int64)
    both = lambda a: np.concatenate([a, a])  # noqa: E731
    return EventLog(
        node_type,
        TXN_NODE_TYPES,
        TXN_KINDS,
        windows,
        src=both(txn.user),
        dst=np.concatenate([txn.counterparty, txn.device]),
        time=both(txn.time),
        value=both(txn.amount),
        kind=np.repeat([0, 1], len(steps)),
        step=both(steps),
    )  # kind-major: the log orders each node's group by step itself


def _transaction_nodes(
    df: pd.DataFrame,
) -> tuple[TransactionIndex, list[tuple[str, str]], np.ndarray]:
    """Node numbers as ``graph_from_transactions`` gives them: users in order of first
    appearance, then devices, then merchants (a counterparty that is a user is that user)."""
    user, users = pd.factorize(df["user_id"].astype(str), sort=False)
    device, devices = pd.factorize(df["device_id"].astype(str), sort=False)
    cp_ids = df["counterparty_id"].astype(str)
    cp = pd.Index(users).get_indexer(cp_ids)
    merchant_rows = cp < 0
    merchant, merchants = pd.factorize(cp_ids[merchant_rows], sort=False)
    n_u, n_d = len(users), len(devices)
    cp[merchant_rows] = n_u + n_d + merchant
    keys = [("user", str(k)) for k in users] + [("device", str(k)) for k in devices]
    keys += [("merchant", str(k)) for k in merchants]
    node_type = np.repeat(np.arange(3, dtype=np.int64), [n_u, n_d, len(merchants)])
    txn = TransactionIndex(
        ids=df["transaction_id"].to_numpy(dtype=str),
        user=user.astype(np.int64),
        counterparty=cp.astype(np.int64),
        device=n_u + device.astype(np.int64),
        amount=df["amount"].to_numpy(dtype=np.float64),
        time=df["timestamp"].to_numpy(dtype=np.int64),
        label=df["label"].to_numpy(dtype=np.int8) if "label" in df else None,
    )
    return txn, keys, node_type


def _transaction_edges(txn: TransactionIndex) -> dict[str, np.ndarray]:
    """One edge per transaction, then one per first (user, device) pair right after it."""
    n = len(txn.user)
    pair = txn.user * (int(txn.device.max(initial=0)) + 1) + txn.device
    first = np.zeros(n, dtype=bool)
    first[np.unique(pair, return_index=True)[1]] = True
    txn_pos = np.arange(n) + np.cumsum(first) - first  # earlier device edges come before
    dev_pos = txn_pos[first] + 1
    e = n + int(first.sum())
    out = {
        "edge_src": np.empty(e, np.int64), "edge_dst": np.empty(e, np.int64),
        "edge_value": np.empty(e, np.float64), "edge_time": np.empty(e, np.int64),
        "edge_kind": np.empty(e, np.int64),
    }  # fmt: skip
    for name, at_txn, at_dev in (
        ("edge_src", txn.user, txn.user[first]),
        ("edge_dst", txn.counterparty, txn.device[first]),
        ("edge_value", txn.amount, np.zeros(len(dev_pos))),
        ("edge_time", txn.time, txn.time[first]),
        ("edge_kind", np.zeros(n, np.int64), np.ones(len(dev_pos), np.int64)),
    ):
        out[name][txn_pos], out[name][dev_pos] = at_txn, at_dev
    return out


def _stream_transactions(activity: NodeActivity, txn: TransactionIndex) -> None:
    """Every transaction's two events, in order, as ``graph_from_transactions`` streams them."""
    rows = zip(txn.user.tolist(), txn.counterparty.tolist(), txn.device.tolist(),
               txn.time.tolist(), txn.amount.tolist(), strict=True)  # fmt: skip
    for u, c, d, t, amount in rows:
        activity.add_event(u, c, t=t, value=amount, kind=0)
        activity.add_event(u, d, t=t, value=amount, kind=1)


def node_file_options(cfg: FraudDataConfig) -> NodeFileOptions:
    """The node files' id, label and ignored columns that ``cfg`` names."""
    return NodeFileOptions(cfg.node_column, cfg.label_column, tuple(cfg.ignore_columns))


def edge_list_graph(cfg: FraudDataConfig) -> tuple[FraudGraph, EdgeListData]:
    """The graph of the edge list and node files ``cfg`` names, and the edge list as read."""
    from abyssal.solutions.fraud.schema import read_edge_list

    options = node_file_options(cfg)
    el = read_edge_list(cfg.path, cfg.labels_path, cfg.features_path, options=options)
    graph = graph_from_edges(
        el.edges, el.labels, cfg.windows, el.features, max_onehot_values=cfg.max_onehot_values
    )
    return graph, el


def _prepare_edges(cfg: FraudDataConfig) -> FraudData:
    graph, el = edge_list_graph(cfg)
    el.require_labels(cfg.labels_path or cfg.features_path or cfg.path)
    parts = {"edges": el.edges, "labels": el.labels, "attributes": el.features}
    fp = combine_fingerprints(
        {role: None if frame is None else fingerprint_frame(frame) for role, frame in parts.items()}
    )
    data = _with_random_split(graph, cfg, fp, _edges_description(cfg, graph, el))
    data.input_format = "edges"
    _guard_attribute_leakage(data, cfg)
    log.info(data.description)
    return data


def _edges_description(cfg: FraudDataConfig, graph: FraudGraph, el: EdgeListData) -> str:
    parts = [f"edge list {cfg.path}"]
    if graph.static and "timestamp" in el.edges:
        note = (
            f"every edge has the same timestamp ({int(el.edges['timestamp'].iloc[0])}), so the "
            "graph is static: no temporal features and no time encoding"
        )
        log.warning("%s: %s", cfg.path, note)
        parts.append(note)
    elif graph.static:
        parts.append("static (no timestamps): no temporal features and no time encoding")
    if graph.attributes is not None:
        parts.append(graph.attributes.describe())
    return "; ".join(parts + list(el.notes))


def _guard_attribute_leakage(data: FraudData, cfg: FraudDataConfig) -> None:
    """Refuse node attributes that alone separate the training labels (unless allowed)."""
    attributes = data.graph.attributes
    if attributes is None or not cfg.leakage_check:
        return
    train = data.masks["train"]
    allowed = check_leakage(
        {name: values[train] for name, values in attributes.values.items()},
        data.graph.y[train],
        threshold=cfg.leakage_threshold,
        allowed=cfg.allow_leaky_features,
        where=cfg.features_path or cfg.labels_path,
    )
    if allowed:
        listed = ", ".join(f"{f.name} (AUROC {f.auroc:.3f})" for f in allowed)
        log.warning("leaky features allowed by data.allow_leaky_features: %s", listed)
        data.description += f"; leaky features allowed: {listed}"


def prepare_pyg_data(data: object, seed: int = 0, val_frac=0.2, test_frac=0.2) -> FraudData:
    """Prepared data from a ``torch_geometric`` ``Data``; its ``train_mask``/``val_mask``/
    ``test_mask`` are used when present, else labelled nodes are split at random."""
    graph = graph_from_pyg(data)
    fp = "sha256:" + _tensor_digest(graph)
    masks = {}
    for name in ("train", "val", "test"):
        m = getattr(data, f"{name}_mask", None)
        if m is not None:
            masks[name] = m.detach().cpu().numpy().astype(bool) & (graph.y >= 0)
    if len(masks) == 3:
        return FraudData(graph, masks, fp, "torch_geometric Data", input_format="pyg")
    cfg = FraudDataConfig(split_seed=seed, val_frac=val_frac, test_frac=test_frac)
    prepared = _with_random_split(graph, cfg, fp, "torch_geometric Data")
    prepared.input_format = "pyg"
    return prepared


def load_transactions(cfg: FraudDataConfig) -> pd.DataFrame:
    """The validated transactions ``cfg`` names: its file, or synthetic data generated anew."""
    from abyssal.solutions.fraud.schema import read_transactions

    if cfg.source == "transactions":
        return read_transactions(cfg.path)
    from abyssal.solutions.fraud.synthetic import generate_transactions

    synthetic = generate_transactions(
        n_users=cfg.synthetic_users,
        n_merchants=cfg.synthetic_merchants,
        n_rings=cfg.synthetic_rings,
        days=cfg.synthetic_days,
        seed=cfg.synthetic_seed,
    )
    return read_transactions(synthetic.transactions, source_name="synthetic")


def _synthetic_description(cfg: FraudDataConfig) -> str:
    return (
        f"synthetic transactions (seed {cfg.synthetic_seed}, {cfg.synthetic_users} users, "
        f"{cfg.synthetic_rings} planted rings)"
    )


def _prepare_bitcoin(cfg: FraudDataConfig) -> FraudData:
    from abyssal.solutions.fraud.bitcoin_otc import load_bitcoin_otc, load_split

    otc = load_bitcoin_otc(cfg.path)
    split = load_split(cfg.path, cfg.split)
    graph = graph_from_edges(otc.edges, otc.labels, cfg.windows)
    index = {key[1]: i for i, key in enumerate(graph.node_keys)}
    rows = np.array([index.get(str(n), -1) for n in split.nodes])
    if (rows < 0).any():
        missing = split.nodes[int(np.argmax(rows < 0))]
        raise DataError(f"split {cfg.split} names node {missing}, which has no edges")
    graph.y = np.zeros(graph.num_nodes, dtype=np.int8)
    graph.y[rows] = split.labels
    masks = {}
    for name in ("train", "val", "test"):
        mask = np.zeros(graph.num_nodes, dtype=bool)
        mask[rows] = getattr(split, name)
        masks[name] = mask
    masks_frame = pd.DataFrame(
        {"node": split.nodes, "label": split.labels, "train": split.train, "val": split.val}
    )
    inputs = {"edges": otc.edges, "labels": otc.labels, "split": masks_frame}
    fp = combine_fingerprints({k: fingerprint_frame(v) for k, v in inputs.items()})
    fp += f"/split{cfg.split}"
    desc = f"Bitcoin-OTC split {cfg.split} ({otc.root})"
    return FraudData(graph, masks, fp, desc, input_format="edges")


def _with_random_split(graph: FraudGraph, cfg: FraudDataConfig, fp: str, desc: str) -> FraudData:
    labelled = np.flatnonzero(graph.y >= 0)
    if len(labelled) == 0:
        raise DataError(f"{desc}: the graph has no labelled accounts to train or evaluate on")
    if len(np.unique(graph.y[labelled])) < 2:
        raise DataError(f"{desc}: all labelled accounts have the same label; need both 0 and 1")
    counts = np.bincount(graph.y[labelled], minlength=2)
    if counts.min() < 3:
        raise DataError(
            f"{desc}: {counts[0]} benign and {counts[1]} fraudulent labelled accounts; need at "
            "least 3 of each to split into train, validation and test"
        )
    rng = np.random.default_rng(cfg.split_seed)
    masks = {k: np.zeros(graph.num_nodes, dtype=bool) for k in ("train", "val", "test")}
    for cls in (0, 1):  # stratified: each class split in the same proportions
        nodes = rng.permutation(labelled[graph.y[labelled] == cls])
        n_val = max(1, round(cfg.val_frac * len(nodes)))
        n_test = max(1, round(cfg.test_frac * len(nodes)))
        masks["val"][nodes[:n_val]] = True
        masks["test"][nodes[n_val : n_val + n_test]] = True
        masks["train"][nodes[n_val + n_test :]] = True
    return FraudData(graph, masks, f"{fp}/split-seed{cfg.split_seed}", desc)


def _tensor_digest(graph: FraudGraph) -> str:
    import hashlib

    h = hashlib.sha256()
    for arr in (graph.x, graph.edge_src, graph.edge_dst, graph.y):
        h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()
