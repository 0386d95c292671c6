"""Neighbour-sampled mini-batches: exact subgraph scores, time respected, sharding, training."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from abyssal.contracts.task import Shard
from abyssal.core.errors import ConfigError
from abyssal.solutions.fraud.config import FraudConfig, FraudSamplingConfig
from abyssal.solutions.fraud.dataset import GraphTensors, transaction_graph
from abyssal.solutions.fraud.graph import graph_from_transactions
from abyssal.solutions.fraud.schema import read_transactions
from abyssal.solutions.fraud.solution import FraudSolution
from abyssal.solutions.fraud.synthetic import generate_transactions

WINDOWS = [3600, 86400, 604800]


def _config(**sampling) -> FraudConfig:
    cfg = FraudConfig()
    cfg.data.synthetic_users, cfg.data.synthetic_rings, cfg.data.synthetic_days = 200, 2, 10
    cfg.model.hidden, cfg.model.heads, cfg.model.neighbour_cap = 16, 2, 3
    cfg.sampling = FraudSamplingConfig(**{"batch_size": 32, **sampling})
    return cfg


@pytest.fixture(scope="module")
def prepared():
    cfg = _config()
    return cfg, FraudSolution().prepare(cfg)


def _task(cfg, data):
    task = FraudSolution().task(cfg, data)
    torch.manual_seed(0)
    return task, task.build_model().eval()


@pytest.mark.parametrize("cap", [3, None])
def test_sampled_account_scores_equal_full_graph(prepared, cap) -> None:
    cfg, data = prepared
    cfg.model.neighbour_cap = cap
    task, model = _task(cfg, data)
    g = task.graph
    nodes = np.flatnonzero(data.masks["train"])[::3]
    with torch.no_grad():
        full, _ = model(g.x, g.edge_index, g.edge_attr, g.edge_dt())
        b = task.sampled_batch(nodes)
        sub, _ = model(b.graph.x, b.graph.edge_index, b.graph.edge_attr, b.graph.edge_dt())
    cfg.model.neighbour_cap = 3
    assert b.graph.x.shape[0] < g.x.shape[0]
    torch.testing.assert_close(sub[b.nodes], full[torch.from_numpy(nodes)], atol=1e-5, rtol=0)


def test_transaction_scored_as_of_itself(prepared) -> None:
    """A transaction's sampled score is the full-graph score of the history up to its row:
    no later transaction (so no later edge or feature) changes it."""
    cfg, data = prepared
    task, model = _task(cfg, data)
    df = data.transactions
    rows = np.array([40, len(df) // 2, len(df) - 7])
    b = task.sampled_batch(np.empty(0, np.int64), rows)
    with torch.no_grad():
        sg = b.graph
        _, sampled = model(sg.x, sg.edge_index, sg.edge_attr, sg.edge_dt(), b.txn, b.txn_amount)
        for k, row in enumerate(rows.tolist()):
            past = graph_from_transactions(df.iloc[: row + 1], WINDOWS)
            p = GraphTensors.from_graph(past)
            t = past.transactions
            txn = torch.tensor([[t.user[row], t.counterparty[row], t.device[row]]])
            amount = b.txn_amount[k : k + 1]
            _, logit = model(p.x, p.edge_index, p.edge_attr, p.edge_dt(), txn, amount)
            torch.testing.assert_close(sampled[k : k + 1], logit, atol=1e-5, rtol=0)


def test_event_log_features_as_of_a_step_equal_streaming(prepared) -> None:
    _, data = prepared
    df = data.transactions
    graph = transaction_graph(df, WINDOWS)
    assert np.array_equal(graph.x, graph_from_transactions(df, WINDOWS).x)
    row = len(df) // 3
    past = graph_from_transactions(df.iloc[: row + 1], WINDOWS)
    # a user who has not paid anyone yet is a merchant to the prefix: compare the others
    index = graph.node_index()
    known = [i for i, k in enumerate(past.node_keys) if k in index]
    nodes = np.array([index[past.node_keys[i]] for i in known])
    assert len(known) > 0.9 * past.num_nodes
    log = graph.activity.log
    assert np.array_equal(log.features(nodes, np.full(len(nodes), row)), past.x[known])
    assert np.array_equal(log.last_time(nodes, row), past.last_time()[known])


def test_logged_activity_streams_when_a_live_scorer_needs_it(prepared) -> None:
    _, data = prepared
    graph = transaction_graph(data.transactions, WINDOWS)
    act = graph.activity
    node = int(data.graph.transactions.user[-1])
    expected = graph_from_transactions(data.transactions, WINDOWS).activity.vector(node)
    assert act.last_time(node) == int(graph.last_time()[node])
    assert act.vector(node) == expected  # streamed on first use


def test_epochs_shuffle_deterministically(prepared) -> None:
    cfg, data = prepared
    task = FraudSolution().task(cfg, data)
    seeds = lambda epoch: [p[0].tolist() for p in task.train_batches(epoch, Shard()).parts]  # noqa: E731
    assert seeds(1) == seeds(1)
    assert seeds(1) != seeds(2)
    assert sorted(np.concatenate(seeds(1)).tolist()) == np.flatnonzero(data.masks["train"]).tolist()


def test_ranks_get_disjoint_covering_parts_in_lockstep(prepared) -> None:
    cfg, data = prepared
    task = FraudSolution().task(cfg, data)
    ranks = [task.train_batches(4, Shard(r, 3)) for r in range(3)]
    assert len({len(b) for b in ranks}) == 1
    accounts = [np.concatenate([p[0] for p in b.parts]) for b in ranks]
    txns = [np.concatenate([p[1] for p in b.parts]) for b in ranks]
    for parts in (accounts, txns):
        every = np.concatenate(parts)
        assert len(every) == len(np.unique(every))
    assert np.array_equal(np.sort(np.concatenate(accounts)), np.flatnonzero(data.masks["train"]))
    batch = next(iter(ranks[1]))
    assert batch.txn.shape == (len(ranks[1].parts[0][1]), 3)


def test_sampled_validation_equals_full_graph_validation(prepared) -> None:
    cfg, data = prepared
    task, model = _task(cfg, data)
    full = task.validation_step(model, task._batch("val", Shard()))
    cfg.sampling.eval_batch_size = 16
    try:
        outs = [task.validation_step(model, b) for b in task.val_batches(Shard())]
    finally:
        cfg.sampling.eval_batch_size = None
    scores = torch.cat([o["score"] for o in outs])
    torch.testing.assert_close(scores, full["score"].detach(), atol=1e-5, rtol=0)


def test_sampling_config_rejects_zero() -> None:
    with pytest.raises(ConfigError, match=r"sampling.batch_size must be >= 1"):
        FraudSamplingConfig(batch_size=0)


def test_sampled_training_registers_a_version_that_evaluates(tmp_path) -> None:
    from abyssal.train.api import train

    overrides = [
        "data.synthetic_users=200", "data.synthetic_rings=2", "data.synthetic_days=10",
        "model.hidden=16", "model.heads=2", "sampling.batch_size=40",
        "sampling.transactions_per_batch=32", "sampling.eval_batch_size=64",
        "train.epochs=2", "train.progress=false", "baselines=false",
    ]  # fmt: skip
    out = train("fraud", None, overrides, home=tmp_path)
    assert out.fit.epochs_run == 2
    assert 0.0 <= out.metrics["test_auprc"] <= 1.0
    assert out.version.config["solution_config"]["sampling"]["batch_size"] == 40


def test_generator_keeps_its_counts_at_a_medium_size() -> None:
    data = generate_transactions(n_users=6000, n_merchants=600, n_rings=30, days=20, seed=5)
    df = read_transactions(data.transactions, source_name="synthetic")
    assert 0.95 * 6000 < df["user_id"].nunique() <= 6000  # a few are idle for 20 days
    assert set(df["user_id"]) <= set(data.user_labels["user_id"])
    assert df["counterparty_id"].str.startswith("M").sum() > 0
    assert df["counterparty_id"][df["counterparty_id"].str.startswith("M")].nunique() <= 600
    assert len(data.rings) == 30
    assert len(data.user_labels) == 6000
    assert 0.01 < data.user_labels["label"].mean() < 0.1
    assert df["timestamp"].is_monotonic_increasing
