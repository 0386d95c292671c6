"""Building fraud graphs (transactions, edge lists, PyG ``Data``), their tensors and splits."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch_geometric.data import Data

from abyssal.core.errors import DataError
from abyssal.solutions.fraud.dataset import GraphTensors, edge_feature_size, prepare_pyg_data
from abyssal.solutions.fraud.features import signed_log
from abyssal.solutions.fraud.graph import graph_from_edges, graph_from_pyg, graph_from_transactions
from abyssal.solutions.fraud.schema import TRANSACTION_COLUMNS, read_transactions

WINDOWS = [60, 3600]


def transactions() -> pd.DataFrame:
    """Five payments: u2 pays u1 (a user); u1 uses d1 twice, then d2; u1's t3 is fraud."""
    rows = [
        ("t1", 100, "u1", "d1", "m1", 10.0, 0),
        ("t2", 200, "u2", "d1", "u1", 20.0, 0),
        ("t3", 300, "u1", "d1", "m2", 5.0, 1),
        ("t4", 400, "u1", "d2", "u2", 7.0, 0),
        ("t5", 500, "u3", "d3", "m1", 1.0, 0),
    ]
    columns = [c.name for c in TRANSACTION_COLUMNS]
    return read_transactions(pd.DataFrame(rows, columns=columns), source_name="t")


@pytest.fixture(scope="module")
def txn_graph():
    return graph_from_transactions(transactions(), WINDOWS)


KEYS = [
    ("user", "u1"),
    ("user", "u2"),
    ("user", "u3"),
    ("device", "d1"),
    ("device", "d2"),
    ("device", "d3"),
    ("merchant", "m1"),
    ("merchant", "m2"),
]


def edges_of(g) -> list[tuple[str, str, int, float, int]]:
    return [
        (g.node_keys[s][1], g.node_keys[d][1], k, v, t)
        for s, d, k, v, t in zip(
            g.edge_src, g.edge_dst, g.edge_kind, g.edge_value, g.edge_time, strict=True
        )
    ]


# --- transactions ---------------------------------------------------------------------------------


def test_transaction_nodes_and_types(txn_graph):
    g = txn_graph
    assert g.node_keys == KEYS  # u1 and u2 as counterparties are the users, not merchants
    assert g.node_types == ("user", "device", "merchant")
    assert g.node_type.tolist() == [0, 0, 0, 1, 1, 1, 2, 2]
    assert g.num_nodes == 8
    assert g.node_index()[("merchant", "m2")] == 7


def test_one_edge_per_transaction_and_one_per_first_user_device_pair(txn_graph):
    assert edges_of(txn_graph) == [
        ("u1", "m1", 0, 10.0, 100),
        ("u1", "d1", 1, 0.0, 100),
        ("u2", "u1", 0, 20.0, 200),
        ("u2", "d1", 1, 0.0, 200),
        ("u1", "m2", 0, 5.0, 300),  # (u1, d1) already seen: no device edge
        ("u1", "u2", 0, 7.0, 400),
        ("u1", "d2", 1, 0.0, 400),
        ("u3", "m1", 0, 1.0, 500),
        ("u3", "d3", 1, 0.0, 500),
    ]


def test_user_labels_are_max_of_their_transactions(txn_graph):
    # u1 has one fraudulent payment of three; u2's payment to u1 labels u2, not u1
    assert txn_graph.y.tolist() == [1, 0, 0, -1, -1, -1, -1, -1]


def test_transaction_index_aligned_with_table(txn_graph):
    txn = txn_graph.transactions
    assert txn.ids.tolist() == ["t1", "t2", "t3", "t4", "t5"]
    assert txn.user.tolist() == [0, 1, 0, 0, 2]
    assert txn.counterparty.tolist() == [6, 0, 7, 1, 6]
    assert txn.device.tolist() == [3, 3, 3, 4, 5]
    assert txn.label.tolist() == [0, 0, 1, 0, 0]


def test_transaction_features_shape_and_last_time(txn_graph):
    g = txn_graph
    assert g.x.shape == (8, len(g.feature_names)) and g.x.dtype == np.float32
    assert g.x[:, :3].tolist() == np.eye(3)[g.node_type].tolist()  # type one-hot
    assert g.last_time().tolist() == [400, 400, 500, 300, 400, 500, 500, 300]


def test_unlabelled_transactions_leave_all_nodes_unlabelled():
    g = graph_from_transactions(transactions().drop(columns="label"), WINDOWS)
    assert g.transactions.label is None
    assert (g.y == -1).all()


# --- edge lists -----------------------------------------------------------------------------------


def edge_list() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "source": ["a", "b", "c"],
            "target": ["b", "c", "a"],
            "timestamp": [300, 100, 200],
            "rating": [-5.0, 2.0, 10.0],
        }
    )


def test_graph_from_edges_sorts_by_time_and_keeps_ratings():
    g = graph_from_edges(edge_list(), None, WINDOWS)
    assert g.node_keys == [("user", "a"), ("user", "b"), ("user", "c")]
    assert edges_of(g) == [
        ("b", "c", 0, 2.0, 100),
        ("c", "a", 0, 10.0, 200),
        ("a", "b", 0, -5.0, 300),
    ]
    assert g.kinds == ("edge",) and g.x.shape == (3, len(g.feature_names))
    assert (g.y == -1).all()
    out_min = g.feature_names.index("edge_out_value_min")
    assert g.x[0, out_min] == pytest.approx(signed_log(-5.0))


def test_graph_from_edges_without_value_column_uses_ones():
    g = graph_from_edges(edge_list().drop(columns="rating"), None, WINDOWS)
    assert g.edge_value.tolist() == [1.0, 1.0, 1.0]


def test_graph_from_edges_labels_ignore_nodes_without_edges():
    labels = pd.DataFrame({"node": ["c", "zz", "a"], "label": [1, 1, 0]})
    g = graph_from_edges(edge_list(), labels, WINDOWS)
    assert g.num_nodes == 3
    assert g.y.tolist() == [0, -1, 1]


def test_graph_from_edges_with_given_features():
    features = pd.DataFrame({"node": ["b", "zz"], "score": [0.5, 9.0]})
    g = graph_from_edges(edge_list(), None, WINDOWS, features)
    assert g.feature_names[-2:] == ["given_score", "given_score_missing"]
    # a and c have no row: the median of the graph's nodes (0.5) and a missing indicator
    assert g.x[:, -2:].tolist() == [[0.5, 1.0], [0.5, 0.0], [0.5, 1.0]]
    assert g.activity is not None and g.activity.vector(1)[-2:] == [0.5, 0.0]


# --- torch_geometric Data -------------------------------------------------------------------------


def pyg_data(**extra) -> Data:
    x = torch.arange(8, dtype=torch.float32).reshape(4, 2)
    edge_index = torch.tensor([[0, 1, 2], [1, 2, 3]])
    y = torch.tensor([1, 0, -1, 0])
    return Data(x=x, edge_index=edge_index, y=y, **extra)


def test_graph_from_pyg():
    g = graph_from_pyg(pyg_data(edge_time=torch.tensor([5, 6, 7])))
    assert g.num_nodes == 4 and g.num_edges == 3
    assert g.x.tolist() == [[0, 1], [2, 3], [4, 5], [6, 7]] and g.x.dtype == np.float32
    assert g.feature_names == ["x0", "x1"]
    assert g.edge_src.tolist() == [0, 1, 2] and g.edge_dst.tolist() == [1, 2, 3]
    assert g.y.tolist() == [1, 0, -1, 0] and g.y.dtype == np.int8
    assert g.edge_time.tolist() == [5, 6, 7]
    assert g.edge_value.tolist() == [1.0, 1.0, 1.0]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            Data(x=torch.zeros(3, 2), edge_index=torch.tensor([[0], [1]])),
            "torch_geometric Data needs 'y'; it has ['edge_index', 'x']",
        ),
        (
            Data(
                x=torch.zeros(3, 2),
                edge_index=torch.zeros(3, 2, dtype=torch.long),
                y=torch.zeros(3),
            ),
            "Data.edge_index must have shape (2, E), got (3, 2)",
        ),
        (
            Data(x=torch.zeros(3, 2), edge_index=torch.tensor([[0], [3]]), y=torch.zeros(3)),
            "Data.edge_index refers to nodes outside 0..2",
        ),
        (
            Data(x=torch.zeros(3, 2), edge_index=torch.tensor([[-1], [0]]), y=torch.zeros(3)),
            "Data.edge_index refers to nodes outside 0..2",
        ),
        (
            Data(
                x=torch.tensor([[0.0], [float("nan")], [1.0]]),
                edge_index=torch.tensor([[0], [1]]),
                y=torch.zeros(3),
            ),
            "Data.x contains NaN or infinite values",
        ),
        (
            Data(x=torch.zeros(3, 2), edge_index=torch.tensor([[0], [1]]), y=torch.zeros(2)),
            "Data.y has 2 entries for 3 nodes",
        ),
    ],
    ids=["missing-y", "edge-index-shape", "node-too-large", "negative-node", "nan-x", "short-y"],
)
def test_graph_from_pyg_errors(data, message):
    with pytest.raises(DataError) as info:
        graph_from_pyg(data)
    assert str(info.value) == message


# --- model tensors --------------------------------------------------------------------------------


def test_graph_tensors_both_directions(txn_graph):
    gt = GraphTensors.from_graph(txn_graph)
    e = txn_graph.num_edges
    assert gt.edge_index.shape == (2, 2 * e)
    torch.testing.assert_close(gt.edge_index[:, e:], gt.edge_index[:, :e].flip(0))
    assert gt.edge_index[:, :e].tolist() == [
        txn_graph.edge_src.tolist(),
        txn_graph.edge_dst.tolist(),
    ]
    assert gt.x.shape == (8, txn_graph.x.shape[1])


def test_graph_tensors_edge_attributes(txn_graph):
    gt = GraphTensors.from_graph(txn_graph)
    e, k = txn_graph.num_edges, len(txn_graph.kinds)
    assert gt.edge_attr.shape == (2 * e, edge_feature_size(k)) == (18, 4)
    assert gt.edge_attr[:e, -1].tolist() == [0.0] * e  # direction flag
    assert gt.edge_attr[e:, -1].tolist() == [1.0] * e
    torch.testing.assert_close(gt.edge_attr[:e, :-1], gt.edge_attr[e:, :-1])
    # first edge: u1 -> m1, amount 10, kind txn
    assert gt.edge_attr[0].tolist() == pytest.approx([signed_log(10.0), 1.0, 0.0, 0.0])
    # second edge: u1 -> d1, kind device
    assert gt.edge_attr[1].tolist() == [0.0, 0.0, 1.0, 0.0]


def test_graph_tensors_edge_dt(txn_graph):
    gt = GraphTensors.from_graph(txn_graph)
    dt = gt.edge_dt()
    assert dt.shape == (18,) and dt.dtype == torch.float32
    assert (dt >= 0).all()
    # u1 -> m1 at t=100: m1's latest event is at 500; reversed, u1's latest is at 400
    assert dt[0].item() == 400.0
    assert dt[9].item() == 300.0


def test_graph_tensors_edge_dt_clamps_future_edges():
    g = graph_from_pyg(pyg_data(edge_time=torch.tensor([5, 6, 7])))  # no activity: last_time 0
    dt = GraphTensors.from_graph(g).edge_dt()
    assert dt.tolist() == [0.0] * 6


# --- splits ---------------------------------------------------------------------------------------


def labelled_data(y: list[int], **masks) -> Data:
    n = len(y)
    edge_index = torch.stack([torch.arange(n - 1), torch.arange(1, n)])  # a path
    return Data(x=torch.randn(n, 3), edge_index=edge_index, y=torch.tensor(y), **masks)


def test_prepare_pyg_data_uses_given_masks():
    y = [1, 0, -1, 0, 1, 0]
    masks = {
        "train_mask": torch.tensor([1, 1, 1, 0, 0, 0], dtype=torch.bool),
        "val_mask": torch.tensor([0, 0, 0, 1, 0, 0], dtype=torch.bool),
        "test_mask": torch.tensor([0, 0, 0, 0, 1, 1], dtype=torch.bool),
    }
    data = prepare_pyg_data(labelled_data(y, **masks))
    assert data.masks["train"].tolist() == [True, True, False, False, False, False]  # -1 dropped
    assert data.masks["val"].tolist() == [False, False, False, True, False, False]
    assert data.masks["test"].tolist() == [False, False, False, False, True, True]
    assert data.fingerprint.startswith("sha256:")


def test_prepare_pyg_data_stratified_random_split():
    y = [0] * 10 + [1] * 5 + [-1] * 3
    data = prepare_pyg_data(labelled_data(y), seed=3)
    masks, labels = data.masks, np.array(y)
    total = masks["train"].astype(int) + masks["val"] + masks["test"]
    assert total.tolist() == [1] * 15 + [0] * 3  # disjoint, covering exactly the labelled
    for name, (n_neg, n_pos) in {"train": (6, 3), "val": (2, 1), "test": (2, 1)}.items():
        assert (int((labels[masks[name]] == 0).sum()), int((labels[masks[name]] == 1).sum())) == (
            n_neg,
            n_pos,
        )
    again = prepare_pyg_data(labelled_data(y), seed=3)
    assert all((again.masks[k] == masks[k]).all() for k in masks)  # same seed, same split


def test_prepare_pyg_data_partial_masks_fall_back_to_random_split():
    y = [0] * 5 + [1] * 5
    data = prepare_pyg_data(labelled_data(y, train_mask=torch.ones(10, dtype=torch.bool)))
    assert [int(data.masks[k].sum()) for k in ("train", "val", "test")] == [6, 2, 2]


def test_prepare_pyg_data_without_labels():
    with pytest.raises(DataError) as info:
        prepare_pyg_data(labelled_data([-1, -1, -1]))
    assert str(info.value) == (
        "torch_geometric Data: the graph has no labelled accounts to train or evaluate on"
    )


def test_prepare_pyg_data_single_class():
    with pytest.raises(DataError) as info:
        prepare_pyg_data(labelled_data([0, 0, 0, -1]))
    assert str(info.value) == (
        "torch_geometric Data: all labelled accounts have the same label; need both 0 and 1"
    )


def test_prepare_pyg_data_needs_three_accounts_of_each_class():
    with pytest.raises(
        DataError, match="4 benign and 2 fraudulent labelled accounts; need at least 3"
    ):
        prepare_pyg_data(labelled_data([0, 0, 0, 0, 1, 1]))
