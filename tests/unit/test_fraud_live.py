"""The live scorer gives the scores of a full recomputation over the grown graph."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from abyssal.core.errors import DataError
from abyssal.solutions.fraud.attention import AttentionView, softmax_aggregate
from abyssal.solutions.fraud.config import FraudConfig
from abyssal.solutions.fraud.dataset import FraudData, GraphTensors
from abyssal.solutions.fraud.graph import graph_from_edges, graph_from_transactions
from abyssal.solutions.fraud.live import LiveScorer
from abyssal.solutions.fraud.sample import split_stream
from abyssal.solutions.fraud.schema import read_transactions
from abyssal.solutions.fraud.solution import score_graph
from abyssal.solutions.fraud.synthetic import generate_transactions
from abyssal.solutions.fraud.task import build_model

WINDOWS = [3600, 86400]


def _model(
    in_features: int,
    edge_features: int,
    conv: str = "gatv2",
    layers: int = 2,
    cap: int | None = 32,
):
    cfg = FraudConfig()
    cfg.model.conv, cfg.model.layers, cfg.model.hidden, cfg.model.heads = conv, layers, 16, 2
    cfg.model.neighbour_cap = cap
    torch.manual_seed(0)
    spec = {"in_features": in_features, "edge_features": edge_features}
    model = build_model(cfg, {**spec, "architecture": {"neighbour_cap": cap}})
    return model.eval()


@pytest.fixture(scope="module")
def stream() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    frame = generate_transactions(
        n_users=120, n_merchants=20, n_rings=2, days=10, seed=3
    ).transactions
    df = read_transactions(frame, source_name="synthetic")
    history, new = split_stream(df, 0.04)
    return df, history, new


def _aligned(scorer: LiveScorer, graph) -> np.ndarray:
    index = {key: i for i, key in enumerate(scorer.keys)}
    return np.array([index[k] for k in graph.node_keys])


@pytest.mark.parametrize(
    ("conv", "layers", "cap"),
    [("gatv2", 2, 3), ("gat", 2, 3), ("gatv2", 3, 2), ("gatv2", 1, 3), ("gatv2", 2, None)],
)
def test_streamed_scores_equal_full_recomputation(stream, conv, layers, cap) -> None:
    full_df, history, new = stream
    graph = graph_from_transactions(history, WINDOWS)
    assert max(len(r) for r in LiveScorer(_model(graph.x.shape[1], 4), graph).recent) > 3
    graph = graph_from_transactions(history, WINDOWS)
    model = _model(graph.x.shape[1], 4, conv, layers, cap)
    x = torch.from_numpy(graph.x)
    model.set_feature_scaling(x.mean(0), x.std(0))
    scorer = LiveScorer(model, graph, on_unknown_account="add")
    last = [scorer.score_transaction(row) for row in new.to_dict("records")][-1]
    full = graph_from_transactions(full_df, WINDOWS)
    node_risk, txn_risk = score_graph(model, FraudData(full, {}, "", ""))
    live = scorer.risks()[_aligned(scorer, full)]
    np.testing.assert_allclose(live, node_risk, atol=2e-5)
    assert last.transaction_id == full.transactions.ids[-1]
    assert last.risk == pytest.approx(float(txn_risk[-1]), abs=2e-5)


def test_neighbourhood_rescoring_covers_neighbours(stream) -> None:
    _, history, new = stream
    graph = graph_from_transactions(history, WINDOWS)
    model = _model(graph.x.shape[1], 4)
    row = new.to_dict("records")[0]
    narrow = LiveScorer(model, graph_from_transactions(history, WINDOWS), "add", False)
    wide = LiveScorer(model, graph, "add", True)
    a, b = narrow.score_transaction(row), wide.score_transaction(row)
    assert a.rescored <= 3 < b.rescored
    assert a.risk == pytest.approx(b.risk, abs=1e-6)


def test_edge_stream_matches_full_graph() -> None:
    edges = pd.DataFrame(
        {
            "source": ["a", "b", "c", "a", "d", "b", "e"],
            "target": ["b", "c", "a", "d", "b", "e", "a"],
            "rating": [5.0, -3.0, 2.0, 10.0, -10.0, 1.0, 4.0],
            "timestamp": [10, 20, 30, 40, 50, 60, 70],
        }
    )
    labels = pd.DataFrame({"node": ["a", "b"], "label": [1, 0]})
    graph = graph_from_edges(edges.iloc[:5], labels, WINDOWS)
    model = _model(graph.x.shape[1], 3)
    scorer = LiveScorer(model, graph, on_unknown_account="add")
    for row in edges.iloc[5:].itertuples(index=False):
        scorer.score_edge(row.source, row.target, row.timestamp, row.rating)
    full = graph_from_edges(edges, labels, WINDOWS)
    node_risk, _ = score_graph(model, FraudData(full, {}, "", ""))
    np.testing.assert_allclose(scorer.risks()[_aligned(scorer, full)], node_risk, atol=2e-5)


def test_unknown_account_and_repeated_id_are_errors(stream) -> None:
    _, history, new = stream
    graph = graph_from_transactions(history, WINDOWS)
    scorer = LiveScorer(_model(graph.x.shape[1], 4), graph)
    stranger = {**new.to_dict("records")[0], "user_id": "nobody"}
    with pytest.raises(
        DataError, match=r"new\.csv, row 2, column 'user_id': unknown account 'nobody'"
    ):
        scorer.check_transactions([new.to_dict("records")[1], stranger], path="new.csv")
    repeat = history.to_dict("records")[0]
    with pytest.raises(DataError, match="already in the live graph"):
        scorer.check_transactions([repeat], path="new.csv")


def test_live_scoring_needs_an_event_graph() -> None:
    graph = graph_from_transactions(
        read_transactions(
            pd.DataFrame(
                {
                    "transaction_id": ["t1"],
                    "timestamp": [1],
                    "user_id": ["u"],
                    "device_id": ["d"],
                    "counterparty_id": ["m"],
                    "amount": [1.0],
                }
            ),
            source_name="t",
        ),
        WINDOWS,
    )
    graph.activity = None
    with pytest.raises(DataError, match="timestamped events"):
        LiveScorer(_model(graph.x.shape[1], 4), graph)


@pytest.mark.parametrize("conv", ["gatv2", "gat"])
def test_attention_view_matches_the_torch_geometric_layer(conv) -> None:
    torch.manual_seed(1)
    model = _model(5, 3, conv)
    layer = model.convs[0]
    h = torch.randn(6, 16)
    edge_index = torch.tensor([[0, 1, 2, 3, 4, 5, 1], [1, 2, 0, 0, 0, 2, 3]])
    edge_in = torch.randn(7, 3 + model.time_encoding.omega.shape[0])
    view = AttentionView(layer)
    xs = view.senders(h[edge_index[0]])
    logits = view.logits(xs, view.receivers(h[edge_index[1]]), edge_in)
    got = view.finish(softmax_aggregate(logits, xs, edge_index[1], 6))
    torch.testing.assert_close(got, layer(h, edge_index, edge_in), atol=1e-5, rtol=1e-5)
    assert got[[4, 5]].sub(layer.bias).abs().max() == 0  # no incoming edges: bias only


def test_graph_tensors_edge_age_is_relative_to_receiver() -> None:
    edges = pd.DataFrame(
        {"source": ["a", "b"], "target": ["b", "c"], "rating": [1.0, 1.0], "timestamp": [100, 250]}
    )
    t = GraphTensors.from_graph(graph_from_edges(edges, None, WINDOWS))
    # a->b at 100, b->c at 250; reversed b->a, c->b. last times: a 100, b 250, c 250
    assert t.edge_dt().tolist() == [150.0, 0.0, 0.0, 0.0]


def test_alerts_name_accounts_that_cross_the_threshold(stream) -> None:
    _, history, new = stream
    graph = graph_from_transactions(history, WINDOWS)
    scorer = LiveScorer(_model(graph.x.shape[1], 4), graph, "add", alert_threshold=1e-9)
    row = {**new.to_dict("records")[0], "user_id": "newcomer"}
    score = scorer.score_transaction(row)
    # only the new account starts below the threshold (at 0); known accounts were already above
    assert score.alerts == "newcomer"
    assert scorer.score_transaction(new.to_dict("records")[1]).alerts == ""
