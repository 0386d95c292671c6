"""The temporal neighbour cap: which edges a node attends to, the same in training, full scoring
and live scoring, and a live cost per transaction that does not grow with a hub's degree."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from abyssal.nn.recent_edges import recent_edge_mask
from abyssal.solutions.fraud.config import FraudConfig
from abyssal.solutions.fraud.dataset import FraudData, GraphTensors
from abyssal.solutions.fraud.graph import graph_from_transactions
from abyssal.solutions.fraud.live import LiveScorer
from abyssal.solutions.fraud.model import edge_groups
from abyssal.solutions.fraud.schema import read_transactions
from abyssal.solutions.fraud.solution import score_graph
from abyssal.solutions.fraud.task import build_model

WINDOWS = [3600, 86400]
HUB_USERS = 60


def test_recent_edge_mask_on_a_four_node_graph() -> None:
    # edges into node 0 from 1, 2, 3 (ages 30, 10, 10), into 1 from 0 and 2, into 2 from 3
    dst = torch.tensor([0, 0, 0, 1, 1, 2])
    age = torch.tensor([30.0, 10.0, 10.0, 5.0, 7.0, 1.0])
    assert recent_edge_mask(dst, age, 1).tolist() == [False, False, True, True, False, True]
    assert recent_edge_mask(dst, age, 2).tolist() == [False, True, True, True, True, True]
    assert recent_edge_mask(dst, age, None).all()
    assert recent_edge_mask(dst[:0], age[:0], 2).shape == (0,)


def test_recent_edge_mask_rejects_a_bad_cap() -> None:
    with pytest.raises(ValueError, match="neighbour cap must be >= 1 or None, got 0"):
        recent_edge_mask(torch.tensor([0]), torch.tensor([1.0]), 0)


def test_config_rejects_a_bad_cap() -> None:
    from abyssal.core.errors import ConfigError
    from abyssal.solutions.fraud.config import FraudModelConfig

    with pytest.raises(ConfigError, match=r"model\.neighbour_cap must be >= 1 or null, got 0"):
        FraudModelConfig(neighbour_cap=0)


def _model(in_features: int, cap: int | None, layers: int = 2):
    cfg = FraudConfig()
    cfg.model.layers, cfg.model.hidden, cfg.model.heads, cfg.model.neighbour_cap = (
        layers,
        16,
        2,
        cap,
    )
    torch.manual_seed(0)
    spec = {"in_features": in_features, "edge_features": 4, "architecture": {"neighbour_cap": cap}}
    return build_model(cfg, spec).eval()


def test_the_stored_cap_is_fixed_and_older_versions_build_without_one() -> None:
    from abyssal.core.errors import ConfigError

    cfg = FraudConfig()
    cfg.model.neighbour_cap = 8
    spec = {"in_features": 3, "edge_features": 4}
    assert build_model(cfg, {**spec, "architecture": {"neighbour_cap": 8}}).neighbour_cap == 8
    assert build_model(cfg, spec).neighbour_cap is None  # stored before the cap existed
    with pytest.raises(ConfigError, match=r"model\.neighbour_cap=8 does not match .*=16"):
        build_model(cfg, {**spec, "architecture": {"neighbour_cap": 16}})


def test_model_ignores_edges_beyond_the_cap() -> None:
    model = _model(5, cap=1)
    x = torch.randn(3, 5)
    edge_index = torch.tensor([[1, 2, 0], [0, 0, 1]])  # node 0 hears 1 (old) and 2 (recent)
    attr = torch.tensor([[0.3, 1.0, 0.0, 0.0]] * 3)  # value, kind one-hot (2 kinds), direction
    dt = torch.tensor([50.0, 0.0, 0.0])
    with torch.no_grad():
        base = model.embed(x, edge_index, attr, dt)[-1]
        attr[0, 0] += 10.0  # the old edge into 0 is beyond the cap: nothing changes
        torch.testing.assert_close(model.embed(x, edge_index, attr, dt)[-1], base)
        model.neighbour_cap = None
        assert not torch.allclose(model.embed(x, edge_index, attr, dt)[-1], base)


def _hub_stream() -> pd.DataFrame:
    """Users paying one hub merchant in bursts of equal timestamps, plus small merchants."""
    rows = []
    for i in range(2 * HUB_USERS):
        user = f"u{i % HUB_USERS}"
        rows.append((f"h{i}", 1000 + 60 * (i // 4), user, f"d{i % 7}", "hub", 10.0 + i))
        rows.append((f"s{i}", 1000 + 60 * (i // 4), user, f"d{i % 7}", f"m{i % 5}", 3.0))
    df = pd.DataFrame(
        rows,
        columns=[
            "transaction_id",
            "timestamp",
            "user_id",
            "device_id",
            "counterparty_id",
            "amount",
        ],
    )
    return read_transactions(df, source_name="hub")


@pytest.mark.parametrize(("layers", "cap"), [(1, 4), (2, 3), (3, 2)])
def test_hub_stream_with_ties_equals_full_recomputation(layers, cap) -> None:
    df = _hub_stream()
    history, new = df.iloc[:100], df.iloc[100:]
    graph = graph_from_transactions(history, WINDOWS)
    model = _model(graph.x.shape[1], cap, layers)
    x = torch.from_numpy(graph.x)
    model.set_feature_scaling(x.mean(0), x.std(0))
    scorer = LiveScorer(model, graph, "add")
    scores = [scorer.score_transaction(r) for r in new.to_dict("records")]
    full = graph_from_transactions(df, WINDOWS)
    hub = full.node_index()[("merchant", "hub")]
    assert int((GraphTensors.from_graph(full).edge_index[1] == hub).sum()) > 10 * cap
    node_risk, txn_risk = score_graph(model, FraudData(full, {}, "", ""))
    index = {key: i for i, key in enumerate(scorer.keys)}
    aligned = np.array([index[k] for k in full.node_keys])
    np.testing.assert_allclose(scorer.risks()[aligned], node_risk, atol=2e-5)
    assert scores[-1].risk == pytest.approx(float(txn_risk[-1]), abs=2e-5)  # scored at the end


@pytest.mark.parametrize("neighbourhood", [False, True])
def test_work_per_transaction_does_not_grow_with_the_hub(neighbourhood) -> None:
    df = _hub_stream()
    cap, k = 3, 3 + 3 * 3  # touched nodes (user, merchant, device) and their recent neighbours
    bound = (k if neighbourhood else 3) * cap + (k * (cap + 1) if neighbourhood else k) * cap

    def work(model_cap: int | None) -> list[int]:
        graph = graph_from_transactions(df.iloc[:20], WINDOWS)
        scorer = LiveScorer(_model(graph.x.shape[1], model_cap), graph, "add", neighbourhood)
        out = []
        for row in df.iloc[20:].to_dict("records"):
            scorer.score_transaction(row)
            out.append(scorer.edges_attended)
        return out

    capped, uncapped = work(cap), work(None)
    assert max(capped) <= bound
    assert max(uncapped[-20:]) > bound  # without the cap the hub's transactions cost more


def test_the_cap_applies_per_kind_and_direction() -> None:
    model = _model(5, cap=1)
    x = torch.randn(3, 5)
    edge_index = torch.tensor([[1, 2, 0], [0, 0, 1]])  # node 0 hears 1 (old) and 2 (recent)
    attr = torch.tensor([[0.3, 0.0, 1.0, 0.0], [0.3, 1.0, 0.0, 0.0], [0.3, 1.0, 0.0, 0.0]])
    dt = torch.tensor([50.0, 0.0, 0.0])  # the old edge is of another kind: it is kept
    with torch.no_grad():
        base = model.embed(x, edge_index, attr, dt)[-1]
        attr[0, 0] += 10.0
        assert not torch.allclose(model.embed(x, edge_index, attr, dt)[-1], base)
    groups = edge_groups(torch.tensor([[0.0, 1.0, 0.0, 1.0], [0.0, 0.0, 1.0, 0.0]]))
    assert groups.tolist() == [1, 2]


def _brute_force_mask(dst: torch.Tensor, age: torch.Tensor, cap: int) -> torch.Tensor:
    keep = torch.zeros(len(dst), dtype=torch.bool)
    for receiver in dst.unique():
        edges = [i for i in range(len(dst)) if dst[i] == receiver]
        for i in sorted(edges, key=lambda i: (float(age[i]), -i))[:cap]:
            keep[i] = True
    return keep


def test_recent_edge_mask_equals_a_brute_force_ranking_with_many_ties() -> None:
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        e = int(torch.randint(1, 60, (1,), generator=gen))
        dst = torch.randint(0, 6, (e,), generator=gen)
        age = torch.randint(0, 4, (e,), generator=gen).float()  # many equal ages
        for cap in (1, 2, 5):
            assert torch.equal(recent_edge_mask(dst, age, cap), _brute_force_mask(dst, age, cap))


def test_recent_edge_mask_exports_to_onnx(tmp_path) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    import onnxruntime as ort

    class Cap(torch.nn.Module):
        def forward(self, dst: torch.Tensor, age: torch.Tensor) -> torch.Tensor:
            return recent_edge_mask(dst, age, 2)

    dst, age = torch.tensor([0, 0, 0, 1, 1, 2]), torch.tensor([3.0, 1.0, 1.0, 5.0, 2.0, 0.0])
    path = tmp_path / "cap.onnx"
    torch.onnx.export(Cap(), (dst, age), path, dynamo=True, verbose=False)
    got = ort.InferenceSession(str(path)).run(None, {"dst": dst.numpy(), "age": age.numpy()})[0]
    assert got.tolist() == recent_edge_mask(dst, age, 2).tolist()
