"""The fraud solution: transaction-graph fraud detection with GAT plus temporal features."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch

from abyssal.solutions.base import Solution
from abyssal.solutions.fraud.baselines import run_baselines
from abyssal.solutions.fraud.config import FraudConfig
from abyssal.solutions.fraud.dataset import (
    FraudData,
    GraphTensors,
    edge_feature_size,
    prepare_fraud_data,
)
from abyssal.solutions.fraud.features import signed_log
from abyssal.solutions.fraud.metrics import split_metrics
from abyssal.solutions.fraud.model import TemporalGAT
from abyssal.solutions.fraud.rings import Ring, find_rings
from abyssal.solutions.fraud.task import FraudTask, build_model


class FraudSolution(Solution):
    """Risk scores for accounts and transactions, fraud rings, and live scoring.

    Example:
        >>> sol = FraudSolution()
        >>> cfg = sol.config_cls()
        >>> data = sol.prepare(cfg)  # doctest: +SKIP
    """

    name: ClassVar[str] = "fraud"
    summary: ClassVar[str] = "transaction-graph fraud detection: GAT + temporal features"
    config_cls: ClassVar[type] = FraudConfig
    default_metric: ClassVar[str] = "val_auprc"

    def prepare(self, cfg: FraudConfig) -> FraudData:
        return prepare_fraud_data(cfg.data)

    def task(self, cfg: FraudConfig, data: FraudData) -> FraudTask:
        return FraudTask(cfg, data, self.model_spec(cfg, data))

    def model_spec(self, cfg: FraudConfig, data: FraudData) -> dict[str, Any]:
        g = data.graph
        return {
            "in_features": int(g.x.shape[1]),
            "edge_features": edge_feature_size(len(g.kinds)),
            "feature_names": list(g.feature_names),
            "node_types": list(g.node_types),
            "kinds": list(g.kinds),
        }

    def build_model(self, cfg: FraudConfig, spec: dict[str, Any]) -> TemporalGAT:
        return build_model(cfg, spec)

    def evaluate(
        self, cfg: FraudConfig, model: torch.nn.Module, data: FraudData
    ) -> dict[str, float]:
        node_risk, txn_risk = score_graph(model, data)
        metrics = split_metrics(data.graph.y, node_risk, data.masks)
        tmasks = data.transaction_masks()
        if tmasks is not None and txn_risk is not None:
            label = data.graph.transactions.label
            metrics.update(split_metrics(label, txn_risk, tmasks, prefix="txn_"))
        return metrics

    def baselines(self, cfg: FraudConfig, data: FraudData) -> dict[str, float]:
        return run_baselines(data, seed=cfg.train.seed) if cfg.baselines else {}

    def rings(
        self, cfg: FraudConfig, model: torch.nn.Module, data: FraudData, threshold: float
    ) -> list[Ring]:
        """Rings among accounts at or above ``cfg.rings.min_risk`` (else ``threshold``)."""
        node_risk, _ = score_graph(model, data)
        min_risk = cfg.rings.min_risk if cfg.rings.min_risk is not None else threshold
        return find_rings(data.graph, node_risk, min_risk, cfg.rings.min_size)


@torch.no_grad()
def score_graph(model: torch.nn.Module, data: FraudData) -> tuple[np.ndarray, np.ndarray | None]:
    """Account risk (N,) and, for transaction graphs, transaction risk (T,), in [0, 1]."""
    model.eval()
    device = next(model.parameters()).device
    g = GraphTensors.from_graph(data.graph).to(device)
    hs = model.embed(g.x, g.edge_index, g.edge_attr, g.edge_dt())
    node = torch.sigmoid(model.node_logits(hs[-1], hs[0])).float().cpu().numpy()
    txn = data.graph.transactions
    if txn is None:
        return node, None
    amount = torch.tensor([signed_log(a) for a in txn.amount.tolist()], dtype=torch.float32)
    idx = [torch.from_numpy(a).to(device) for a in (txn.user, txn.counterparty, txn.device)]
    logits = model.transaction_logits(hs[-1], *idx, amount.to(device))
    return node, torch.sigmoid(logits).float().cpu().numpy()
