"""Prepared fraud data: the graph, its splits, and the tensors a model consumes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from abyssal.core.errors import DataError
from abyssal.data.fingerprint import fingerprint_frame
from abyssal.solutions.fraud.config import FraudDataConfig
from abyssal.solutions.fraud.graph import (
    FraudGraph,
    edge_attributes,
    graph_from_edges,
    graph_from_pyg,
    graph_from_transactions,
)


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
    """

    graph: FraudGraph
    masks: dict[str, np.ndarray]
    fingerprint: str
    description: str
    transactions: pd.DataFrame | None = None

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
        from abyssal.solutions.fraud.schema import read_edge_list

        el = read_edge_list(cfg.path, cfg.labels_path, cfg.features_path)
        el.require_labels(cfg.labels_path or cfg.path)
        graph = graph_from_edges(el.edges, el.labels, cfg.windows, el.features)
        fp = fingerprint_frame(el.edges) + "+" + fingerprint_frame(el.labels)
        return _with_random_split(graph, cfg, fp, f"edge list {cfg.path}")
    df = load_transactions(cfg)
    if "label" not in df:
        raise DataError(
            "the transactions have no 'label' column, so there is nothing to train on; "
            "expected 0/1 labels (1 = fraudulent transaction)",
            path=cfg.path,
            column="label",
        )
    graph = graph_from_transactions(df, cfg.windows)
    desc = f"transactions {cfg.path}" if cfg.path else _synthetic_description(cfg)
    data = _with_random_split(graph, cfg, fingerprint_frame(df), desc)
    data.transactions = df
    return data


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
        return FraudData(graph, masks, fp, "torch_geometric Data")
    cfg = FraudDataConfig(split_seed=seed, val_frac=val_frac, test_frac=test_frac)
    return _with_random_split(graph, cfg, fp, "torch_geometric Data")


def load_transactions(cfg: FraudDataConfig) -> pd.DataFrame:
    """The validated transactions ``cfg`` names: its file, or synthetic data generated anew."""
    from abyssal.solutions.fraud.schema import read_transactions

    if cfg.source == "transactions":
        return read_transactions(cfg.path)
    from abyssal.solutions.fraud.synthetic import generate_transactions

    synthetic = generate_transactions(
        n_users=cfg.synthetic_users,
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
    fp = fingerprint_frame(otc.edges) + f"/split{cfg.split}"
    return FraudData(graph, masks, fp, f"Bitcoin-OTC split {cfg.split} ({otc.root})")


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
