"""Gradient-boosted tree baselines on the same features and splits as the graph model.

- ``gbdt_own``: trees on each account's own temporal features.
- ``gbdt_graph``: trees on own features plus the mean and max of the 1-hop neighbours' features and
  the mean of the 2-hop neighbours' (the neighbour-aggregation idea of XGBGraph, which leads the
  GADBench benchmark: Tang et al., "GADBench: Revisiting and Benchmarking Supervised Graph Anomaly
  Detection", NeurIPS 2023).

Both use scikit-learn's histogram gradient boosting.
"""

from __future__ import annotations

import numpy as np
import torch

from abyssal.core.optional import require
from abyssal.solutions.fraud.dataset import FraudData
from abyssal.solutions.fraud.graph import FraudGraph
from abyssal.solutions.fraud.metrics import split_metrics


def neighbour_features(graph: FraudGraph) -> np.ndarray:
    """(N, 4F) own features, 1-hop mean and max, 2-hop mean, over the undirected graph."""
    x = torch.from_numpy(graph.x).double()  # (N, F)
    src = torch.from_numpy(np.concatenate([graph.edge_src, graph.edge_dst]))
    dst = torch.from_numpy(np.concatenate([graph.edge_dst, graph.edge_src]))
    mean1 = _mean(x, src, dst)
    mean2 = _mean(mean1, src, dst)
    mx = torch.full_like(x, float("-inf")).scatter_reduce(
        0, dst.unsqueeze(1).expand(-1, x.shape[1]), x[src], reduce="amax", include_self=True
    )
    mx = torch.where(torch.isinf(mx), torch.zeros_like(mx), mx)
    return torch.cat([x, mean1, mx, mean2], dim=1).float().numpy()


def gbdt_scores(features: np.ndarray, y: np.ndarray, train: np.ndarray, seed: int) -> np.ndarray:
    """Fit trees on the ``train`` rows; fraud probability for every row."""
    ensemble = require("sklearn.ensemble", extra="fraud", purpose="tree baselines")
    clf = ensemble.HistGradientBoostingClassifier(
        max_iter=300,
        learning_rate=0.05,
        max_leaf_nodes=31,
        l2_regularization=1.0,
        early_stopping=False,
        random_state=seed,
    )
    clf.fit(features[train], y[train].astype(int))
    return clf.predict_proba(features)[:, 1]


def run_baselines(data: FraudData, seed: int = 0) -> dict[str, float]:
    """Validation and test metrics of both baselines, prefixed ``gbdt_own_`` and ``gbdt_graph_``."""
    g, masks = data.graph, data.masks
    out: dict[str, float] = {}
    for name, feats in (("gbdt_own", g.x), ("gbdt_graph", neighbour_features(g))):
        score = gbdt_scores(feats, g.y, masks["train"], seed)
        out.update(split_metrics(g.y, score, masks, prefix=f"{name}_"))
    return out


def _mean(x: torch.Tensor, src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    total = torch.zeros_like(x).index_add_(0, dst, x[src])
    deg = torch.zeros(x.shape[0], dtype=x.dtype).index_add_(
        0, dst, torch.ones_like(dst, dtype=x.dtype)
    )
    return total / deg.clamp_min(1).unsqueeze(1)
