"""The fraud solution's training task: full-graph node (and transaction) classification."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

from abyssal.contracts.task import Shard
from abyssal.core.devices import derive_seed
from abyssal.core.errors import ConfigError
from abyssal.solutions.fraud.config import FraudConfig
from abyssal.solutions.fraud.dataset import FraudData, GraphTensors, transaction_log
from abyssal.solutions.fraud.features import exact_log1p
from abyssal.solutions.fraud.metrics import ranking_metrics
from abyssal.solutions.fraud.model import TemporalGAT
from abyssal.solutions.fraud.sampling import (
    LazyBatches,
    NeighbourSampler,
    balanced_parts,
    deal,
    transaction_edge_steps,
)


@dataclass
class FraudBatch:
    """The whole graph plus the labelled rows of the training split."""

    graph: GraphTensors
    nodes: torch.Tensor  # (n,) node indices of labelled training accounts
    node_y: torch.Tensor  # (n,) 0/1
    txn: torch.Tensor | None  # (t, 3) user, counterparty, device of labelled transactions
    txn_amount: torch.Tensor | None  # (t,) signed-log amounts
    txn_y: torch.Tensor | None  # (t,) 0/1

    def to(self, device: torch.device | str) -> FraudBatch:
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return FraudBatch(
            self.graph.to(device),
            *(move(t) for t in (self.nodes, self.node_y, self.txn, self.txn_amount, self.txn_y)),
        )


ARCHITECTURE_KEYS = ("conv", "hidden", "heads", "layers", "time_dim", "neighbour_cap")
"""``model.*`` keys that shape the weights: fixed once a version is stored."""


def build_model(cfg: FraudConfig, spec: dict) -> TemporalGAT:
    """The model for ``cfg`` and a spec from ``FraudSolution.model_spec``.

    A static graph's model (``spec["static"]``) has no time encoding. The neighbour cap is the
    one the spec records (``spec["architecture"]["neighbour_cap"]``); a spec without it (a version
    stored before the cap existed) builds a model without a cap, as it was trained.

    Raises:
        ConfigError: ``cfg`` changes a key the stored weights or features depend on (see
            :func:`check_fixed_keys`).
    """
    check_fixed_keys(cfg, spec)
    m = cfg.model
    return TemporalGAT(
        in_features=spec["in_features"],
        edge_features=spec["edge_features"],
        hidden=m.hidden,
        heads=m.heads,
        layers=m.layers,
        time_dim=0 if spec.get("static") else m.time_dim,
        dropout=m.dropout,
        conv=m.conv,
        neighbour_cap=spec.get("architecture", {}).get("neighbour_cap"),
    )


def check_fixed_keys(cfg: FraudConfig, spec: dict) -> None:
    """Refuse a config that changes what a stored version's weights or features depend on.

    The spec records the architecture (``model.conv``, ``hidden``, ``heads``, ``layers``,
    ``time_dim``) and the feature windows (``data.windows``); overriding them at evaluation or
    prediction would build a model the stored weights do not fit, or features it never saw.
    Specs without these records (older versions) are not checked.

    Raises:
        ConfigError: names the key, the stored value and the value given.

    Example:
        >>> check_fixed_keys(FraudConfig(), {"architecture": {"hidden": 8}})  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        abyssal.core.errors.ConfigError: model.hidden=64 does not match ... (model.hidden=8): ...
    """
    for key, stored in spec.get("architecture", {}).items():
        given = getattr(cfg.model, key)
        if given != stored:
            raise ConfigError(
                f"model.{key}={given} does not match the stored model (model.{key}={stored}): "
                "the architecture cannot be changed at evaluation or prediction; drop the override"
            )
    windows = spec.get("windows")
    if windows is not None and [int(w) for w in cfg.data.windows] != list(windows):
        raise ConfigError(
            f"data.windows={list(cfg.data.windows)} does not match the stored model "
            f"(data.windows={list(windows)}): the model's features were computed over those "
            "windows, so they cannot be changed at evaluation or prediction; drop the override"
        )


def make_batch(
    data: FraudData, split: str, shard: Shard, graph: GraphTensors | None = None
) -> FraudBatch:
    """The batch that trains (or evaluates) on this shard's part of one split.

    The whole graph is in every batch (message passing needs it); the shard decides which
    labelled accounts and transactions the loss or the metrics use, so ranks share the labels.
    """
    g = data.graph
    nodes = shard.split(np.flatnonzero(data.masks[split]))
    txn_parts = (None, None, None)
    tmasks = data.transaction_masks()
    if tmasks is not None:
        txn = g.transactions
        rows = shard.split(np.flatnonzero(tmasks[split]))
        idx = np.stack([txn.user[rows], txn.counterparty[rows], txn.device[rows]], axis=1)
        txn_parts = (
            torch.from_numpy(idx),
            torch.from_numpy(signed_log_amounts(txn.amount[rows])),
            torch.from_numpy(txn.label[rows].astype(np.float32)),
        )
    return FraudBatch(
        graph if graph is not None else GraphTensors.from_graph(g),
        torch.from_numpy(nodes),
        torch.from_numpy(g.y[nodes].astype(np.float32)),
        *txn_parts,
    )


def signed_log_amounts(amount: np.ndarray) -> np.ndarray:
    """(T,) float32 ``signed_log`` of each amount, vectorised (the same values)."""
    amount = np.asarray(amount, dtype=np.float64)
    return np.copysign(exact_log1p(np.abs(amount)), amount).astype(np.float32)


class FraudTask:
    """Implements :class:`~abyssal.contracts.task.TrainTask` for the fraud solution.

    Full-graph training (``sampling.batch_size`` null): one batch per epoch, the whole graph,
    the shard's labelled accounts. Sampled (:mod:`~abyssal.solutions.fraud.sampling`): each
    epoch the training accounts are shuffled by ``(train.seed, epoch)``, dealt to the ranks,
    cut into batches (as many on every rank), and each batch is the computation subgraph of its
    accounts and of up to ``sampling.transactions_per_batch`` labelled transactions (each as
    of itself).
    """

    def __init__(self, cfg: FraudConfig, data: FraudData, spec: dict) -> None:
        self.cfg = cfg
        self.data = data
        self.spec = spec
        self.graph = GraphTensors.from_graph(data.graph)
        self._batches: dict[tuple[str, Shard], FraudBatch] = {}
        self.sampler = self._sampler() if self._sampled else None
        cap = cfg.model.max_pos_weight
        y = data.graph.y[data.masks["train"]]
        self.pos_weight = _pos_weight(torch.from_numpy(y.astype(np.float32)), cap)
        tmasks = data.transaction_masks()
        self.txn_pos_weight = None
        if tmasks is not None:
            label = data.graph.transactions.label[tmasks["train"]]
            self.txn_pos_weight = _pos_weight(torch.from_numpy(label.astype(np.float32)), cap)

    @property
    def _sampled(self) -> bool:
        s = self.cfg.sampling
        return s.batch_size is not None or s.eval_batch_size is not None

    def _sampler(self) -> NeighbourSampler:
        g, m = self.data.graph, self.cfg.model
        limit = m.neighbour_cap if m.neighbour_cap is not None else self.cfg.sampling.fanout
        timed = g.transactions is not None and g.activity is not None
        return NeighbourSampler(
            self.graph,
            g.edge_kind,
            len(g.kinds),
            m.layers,
            limit,
            edge_step=transaction_edge_steps(g.edge_kind) if timed else None,
            log=transaction_log(g) if timed else None,
        )

    def build_model(self) -> TemporalGAT:
        model = build_model(self.cfg, self.spec)
        x = self.graph.x  # statistics over all nodes: unsupervised, no label leak
        model.set_feature_scaling(x.mean(0), x.std(0))
        return model

    def train_batches(self, epoch: int, shard: Shard) -> list[FraudBatch] | LazyBatches:
        size = self.cfg.sampling.batch_size
        if size is None:
            return [self._batch("train", shard)]
        seed = derive_seed(self.cfg.train.seed, epoch)
        labelled = np.flatnonzero(self.data.masks["train"])
        parts = balanced_parts(shard.split(labelled, seed=seed), len(labelled), shard, size)
        txn = self._transaction_rows("train")
        rows = [np.empty(0, np.int64)] * len(parts)
        if txn is not None:
            per = self.cfg.sampling.transactions_per_batch
            rows = deal(shard.split(txn, seed=seed), len(parts), per)
        return LazyBatches(list(zip(parts, rows, strict=True)), self.sampled_batch)

    def _transaction_rows(self, split: str) -> np.ndarray | None:
        """Rows of the split's labelled transactions, when they are trained on."""
        tmasks = self.data.transaction_masks()
        if tmasks is None or self.cfg.model.transaction_loss_weight <= 0:
            return None
        return np.flatnonzero(tmasks[split])

    def sampled_batch(self, nodes: np.ndarray, txn_rows: np.ndarray | None = None) -> FraudBatch:
        """The batch of seed accounts ``nodes`` (scored on the whole graph) and labelled
        transactions ``txn_rows`` (each scored as of itself), on their computation subgraph."""
        g = self.data.graph
        seeds, steps = [nodes], [np.full(len(nodes), self.sampler.end)]
        with_txn = txn_rows is not None and len(txn_rows) > 0
        if with_txn:
            t = g.transactions
            seeds += [t.user[txn_rows], t.counterparty[txn_rows], t.device[txn_rows]]
            steps += [txn_rows] * 3
        sub = self.sampler.subgraph(np.concatenate(seeds), np.concatenate(steps))
        rows = torch.from_numpy(sub.seeds)
        n = len(nodes)
        node_y = torch.from_numpy(g.y[nodes].astype(np.float32))
        if not with_txn:
            return FraudBatch(sub.graph, rows[:n], node_y, None, None, None)
        t = g.transactions
        txn = rows[n:].view(3, -1).T.contiguous()  # (t, 3) user, counterparty, device rows
        amount = torch.from_numpy(signed_log_amounts(t.amount[txn_rows]))
        label = torch.from_numpy(t.label[txn_rows].astype(np.float32))
        return FraudBatch(sub.graph, rows[:n], node_y, txn, amount, label)

    def _batch(self, split: str, shard: Shard) -> FraudBatch:
        """The split's batch for ``shard``, built once (full-graph batches do not change)."""
        key = (split, shard)
        if key not in self._batches:
            self._batches[key] = make_batch(self.data, split, shard, self.graph)
        return self._batches[key]

    def move_batch(self, batch: FraudBatch, device: torch.device) -> FraudBatch:
        return batch.to(device)

    def training_loss(self, model: TemporalGAT, batch: FraudBatch) -> torch.Tensor:
        g = batch.graph
        weight = self.cfg.model.transaction_loss_weight
        with_txn = batch.txn is not None and weight > 0
        txn = (batch.txn, batch.txn_amount) if with_txn else (None, None)
        node_logits, txn_logits = model(g.x, g.edge_index, g.edge_attr, g.edge_dt(), *txn)
        logits = node_logits[batch.nodes]
        loss = F.binary_cross_entropy_with_logits(
            logits.float(), batch.node_y, pos_weight=self.pos_weight.to(logits.device)
        )
        if txn_logits is not None:
            pos_weight = self.txn_pos_weight.to(txn_logits.device)
            txn_loss = F.binary_cross_entropy_with_logits(
                txn_logits.float(), batch.txn_y, pos_weight=pos_weight
            )
            loss = loss + weight * txn_loss
        return loss

    def val_batches(self, shard: Shard) -> list[FraudBatch] | LazyBatches:
        size = self.cfg.sampling.eval_batch_size
        if size is None:
            return [self._batch("val", shard)]
        labelled = np.flatnonzero(self.data.masks["val"])
        parts = balanced_parts(shard.split(labelled), len(labelled), shard, size)
        return LazyBatches([(p,) for p in parts], self.sampled_batch)

    def validation_step(self, model: TemporalGAT, batch: FraudBatch) -> dict[str, torch.Tensor]:
        g = batch.graph
        logits, _ = model(g.x, g.edge_index, g.edge_attr, g.edge_dt())
        return {"score": logits[batch.nodes], "label": batch.node_y}

    def validation_metrics(self, outputs: Mapping[str, np.ndarray]) -> dict[str, float]:
        metrics = ranking_metrics(outputs["label"], outputs["score"])
        return {f"val_{k}": v for k, v in metrics.items()}


def _pos_weight(y: torch.Tensor, cap: float) -> torch.Tensor:
    pos = float(y.sum())
    neg = float(len(y) - pos)
    return torch.tensor(min(cap, neg / max(pos, 1.0)))
