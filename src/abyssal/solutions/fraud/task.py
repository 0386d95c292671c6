"""The fraud solution's training task: full-graph node (and transaction) classification."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

from abyssal.solutions.fraud.config import FraudConfig
from abyssal.solutions.fraud.dataset import FraudData, GraphTensors
from abyssal.solutions.fraud.features import signed_log
from abyssal.solutions.fraud.metrics import ranking_metrics
from abyssal.solutions.fraud.model import TemporalGAT


@dataclass
class FraudBatch:
    """The whole graph plus the labelled rows of the training split."""

    graph: GraphTensors
    nodes: torch.Tensor  # (n,) node indices of labelled training accounts
    node_y: torch.Tensor  # (n,) 0/1
    txn: torch.Tensor | None  # (t, 4) user, counterparty, device, row of labelled transactions
    txn_amount: torch.Tensor | None  # (t,) signed-log amounts
    txn_y: torch.Tensor | None  # (t,) 0/1

    def to(self, device: torch.device | str) -> FraudBatch:
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return FraudBatch(
            self.graph.to(device),
            *(move(t) for t in (self.nodes, self.node_y, self.txn, self.txn_amount, self.txn_y)),
        )


def build_model(cfg: FraudConfig, spec: dict) -> TemporalGAT:
    """The model for ``cfg`` and a spec from :func:`model_spec`."""
    m = cfg.model
    return TemporalGAT(
        in_features=spec["in_features"],
        edge_features=spec["edge_features"],
        hidden=m.hidden,
        heads=m.heads,
        layers=m.layers,
        time_dim=m.time_dim,
        dropout=m.dropout,
        conv=m.conv,
    )


def make_batch(data: FraudData, split: str) -> FraudBatch:
    """The batch that trains (or evaluates) on one split."""
    graph = data.graph
    nodes = np.flatnonzero(data.masks[split])
    txn_parts = (None, None, None)
    tmasks = data.transaction_masks()
    if tmasks is not None:
        txn = graph.transactions
        rows = np.flatnonzero(tmasks[split])
        idx = np.stack([txn.user[rows], txn.counterparty[rows], txn.device[rows], rows], axis=1)
        amount = np.array([signed_log(a) for a in txn.amount[rows].tolist()], dtype=np.float32)
        txn_parts = (
            torch.from_numpy(idx),
            torch.from_numpy(amount),
            torch.from_numpy(txn.label[rows].astype(np.float32)),
        )
    return FraudBatch(
        GraphTensors.from_graph(graph),
        torch.from_numpy(nodes),
        torch.from_numpy(graph.y[nodes].astype(np.float32)),
        *txn_parts,
    )


class FraudTask:
    """Implements :class:`~abyssal.train.task.TrainTask` for the fraud solution."""

    def __init__(self, cfg: FraudConfig, data: FraudData, spec: dict) -> None:
        self.cfg = cfg
        self.data = data
        self.spec = spec
        self.train_batch = make_batch(data, "train")
        self.val_batch = make_batch(data, "val")
        self.device: torch.device = torch.device("cpu")
        y = self.train_batch.node_y
        self.pos_weight = _pos_weight(y, cfg.model.max_pos_weight)
        self.txn_pos_weight = (
            _pos_weight(self.train_batch.txn_y, cfg.model.max_pos_weight)
            if self.train_batch.txn_y is not None
            else None
        )

    def build_model(self) -> TemporalGAT:
        model = build_model(self.cfg, self.spec)
        x = self.train_batch.graph.x  # statistics over all nodes: unsupervised, no label leak
        model.set_feature_scaling(x.mean(0), x.std(0))
        return model

    def train_batches(self, epoch: int) -> Iterable[FraudBatch]:
        return [self.train_batch]

    def move_batch(self, batch: FraudBatch, device: torch.device) -> FraudBatch:
        self.device = torch.device(device)
        return batch.to(device)

    def training_loss(self, model: TemporalGAT, batch: FraudBatch) -> torch.Tensor:
        g = batch.graph
        hs = model.embed(g.x, g.edge_index, g.edge_attr, g.edge_dt())
        logits = model.node_logits(hs[-1], hs[0])[batch.nodes]
        loss = F.binary_cross_entropy_with_logits(
            logits.float(), batch.node_y, pos_weight=self.pos_weight.to(logits.device)
        )
        if batch.txn is not None and self.cfg.model.transaction_loss_weight > 0:
            t = batch.txn
            tl = model.transaction_logits(hs[-1], t[:, 0], t[:, 1], t[:, 2], batch.txn_amount)
            loss = (
                loss
                + self.cfg.model.transaction_loss_weight
                * F.binary_cross_entropy_with_logits(
                    tl.float(), batch.txn_y, pos_weight=self.txn_pos_weight.to(tl.device)
                )
            )
        return loss

    @torch.no_grad()
    def validate(self, model: TemporalGAT) -> dict[str, float]:
        batch = self.val_batch.to(self.device)
        g = batch.graph
        logits, _ = model(g.x, g.edge_index, g.edge_attr, g.edge_dt())
        score = logits[batch.nodes].float().cpu().numpy()
        metrics = ranking_metrics(batch.node_y.cpu().numpy(), score)
        return {f"val_{k}": v for k, v in metrics.items()}


def _pos_weight(y: torch.Tensor, cap: float) -> torch.Tensor:
    pos = float(y.sum())
    neg = float(len(y) - pos)
    return torch.tensor(min(cap, neg / max(pos, 1.0)))
