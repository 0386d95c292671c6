"""A graph prepared elsewhere as a torch_geometric ``Data`` trains, registers and reloads."""

from __future__ import annotations

import numpy as np
import torch
from torch_geometric.data import Data

from abyssal.core.config import load_config
from abyssal.solutions import get_solution
from abyssal.solutions.fraud.dataset import prepare_pyg_data
from abyssal.solutions.fraud.solution import score_graph
from abyssal.solutions.loading import load_model
from abyssal.train.api import train_prepared


def test_pyg_data_trains_and_reloads_with_equal_scores() -> None:
    g = torch.Generator().manual_seed(0)
    n = 60
    y = (torch.arange(n) % 6 == 0).long()  # 10 frauds
    x = torch.randn(n, 5, generator=g) + 2.0 * y.unsqueeze(1)  # frauds are shifted
    ring = torch.nonzero(y).flatten()
    edge_index = torch.cat(
        [torch.randint(0, n, (2, 150), generator=g), torch.stack([ring, ring.roll(1)])], dim=1
    )
    sol = get_solution("fraud")
    cfg = load_config(
        sol.config_cls, overrides=["train.epochs=30", "train.progress=false", "baselines=false"]
    )
    data = prepare_pyg_data(Data(x=x, edge_index=edge_index, y=y), seed=1)
    out = train_prepared(sol, cfg, data)
    assert out.metrics["test_auroc"] > 0.8
    loaded = load_model(out.version.ref)
    before, _ = score_graph(out.fit.model, data)
    after, _ = score_graph(loaded.model, data)
    np.testing.assert_allclose(before, after, atol=1e-6)
