"""Static graphs (no timestamps) and graphs with node attributes: features, model, live scoring."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
import torch

from abyssal.core.errors import ConfigError
from abyssal.solutions.fraud.config import FraudConfig, FraudDataConfig
from abyssal.solutions.fraud.dataset import FraudData, prepare_fraud_data
from abyssal.solutions.fraud.graph import graph_from_edges
from abyssal.solutions.fraud.live import LiveScorer
from abyssal.solutions.fraud.solution import FraudSolution, score_graph
from abyssal.solutions.fraud.task import build_model, check_fixed_keys

WINDOWS = [3600, 86400]
TEMPORAL_WORDS = ("tenure", "gap", "_1h", "_1d")


def edges(timestamps: bool = True) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "source": ["a", "b", "c", "a", "d", "b", "e", "f"],
            "target": ["b", "c", "a", "d", "b", "e", "a", "a"],
            "weight": [5.0, 3.0, 2.0, 10.0, 1.0, 1.0, 4.0, 2.0],
            "timestamp": [10, 20, 30, 40, 50, 60, 70, 80],
        }
    )
    return frame if timestamps else frame.drop(columns="timestamp")


def attributes() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "node": ["a", "b", "c", "d"],
            "age": [30.0, np.nan, 50.0, 20.0],
            "city": np.array(["x", "y", "x", None], dtype=object),
        }
    )


def _model(graph, static: bool) -> torch.nn.Module:
    cfg = FraudConfig()
    cfg.model.hidden, cfg.model.heads = 16, 2
    torch.manual_seed(0)
    spec = {"in_features": graph.x.shape[1], "edge_features": 3, "static": static}
    model = build_model(cfg, spec).eval()
    x = torch.from_numpy(graph.x)
    model.set_feature_scaling(x.mean(0), x.std(0))
    return model


def test_edge_list_without_timestamps_is_static() -> None:
    g = graph_from_edges(edges(timestamps=False), None, WINDOWS)
    assert g.static and (g.edge_time == 0).all()
    assert not [n for n in g.feature_names if any(w in n for w in TEMPORAL_WORDS)]
    assert "edge_in_log_neighbours" in g.feature_names
    temporal = graph_from_edges(edges(), None, WINDOWS)
    assert not temporal.static and "edge_out_log_tenure" in temporal.feature_names


def test_constant_timestamp_is_static_with_a_note(tmp_path, caplog) -> None:
    path = tmp_path / "edges.csv"
    edges().assign(timestamp=1_700_000_000).to_csv(path, index=False)
    labels = tmp_path / "labels.csv"
    nodes = ["a", "b", "c", "d", "e", "f"]
    pd.DataFrame({"node": nodes, "label": [1, 1, 1, 0, 0, 0]}).to_csv(labels, index=False)
    cfg = FraudDataConfig(source="edges", path=str(path), labels_path=str(labels))
    cfg.val_frac = cfg.test_frac = 0.34
    with caplog.at_level(logging.WARNING):
        data = prepare_fraud_data(cfg)
    assert data.graph.static
    assert "every edge has the same timestamp (1700000000)" in data.description
    assert "the graph is static" in caplog.text
    spec = FraudSolution().model_spec(FraudConfig(data=cfg), data)
    assert spec["static"] is True and spec["windows"] is None
    assert "time_dim" not in spec["architecture"]


def test_static_model_has_no_time_encoding() -> None:
    g = graph_from_edges(edges(timestamps=False), None, WINDOWS)
    model = _model(g, static=True)
    assert model.time_encoding is None
    assert not any(k.startswith("time_encoding") for k in model.state_dict())
    node, _ = score_graph(model, FraudData(g, {}, "", ""))
    assert node.shape == (g.num_nodes,)


@pytest.mark.parametrize("timestamps", [False, True])
def test_streamed_edges_with_attributes_equal_full_recomputation(timestamps: bool) -> None:
    every = edges(timestamps)
    history = graph_from_edges(every.iloc[:5], None, WINDOWS, attributes())
    model = _model(history, static=not timestamps)
    scorer = LiveScorer(model, history, on_unknown_account="add")
    for row in every.iloc[5:].to_dict("records"):  # e and f are new: no attributes
        scorer.score_edge(row["source"], row["target"], row.get("timestamp", 0), row["weight"])
    full = graph_from_edges(every, None, WINDOWS, attributes())
    assert full.feature_names == history.feature_names
    node_risk, _ = score_graph(model, FraudData(full, {}, "", ""))
    order = [scorer.index[key] for key in full.node_keys]
    np.testing.assert_allclose(scorer.risks()[order], node_risk, atol=2e-5)


def test_stored_architecture_and_windows_cannot_change() -> None:
    spec = {"architecture": {"hidden": 16, "heads": 2}, "windows": [3600]}
    cfg = FraudConfig()
    cfg.model.hidden, cfg.model.heads, cfg.data.windows = 16, 2, [3600]
    check_fixed_keys(cfg, spec)
    cfg.model.hidden = 8
    with pytest.raises(ConfigError, match=r"model.hidden=8 does not match the stored model"):
        check_fixed_keys(cfg, spec)
    cfg.model.hidden, cfg.data.windows = 16, [60]
    with pytest.raises(ConfigError, match=r"data.windows=\[60\] does not match"):
        check_fixed_keys(cfg, spec)
    check_fixed_keys(cfg, {"in_features": 3})  # older specs record neither
