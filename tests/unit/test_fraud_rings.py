"""Ring detection on a hand-made transaction graph: A, B, C share a device and pay in a cycle."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from abyssal.solutions.fraud.graph import graph_from_transactions
from abyssal.solutions.fraud.rings import find_rings
from abyssal.solutions.fraud.schema import TRANSACTION_COLUMNS, read_transactions

ROWS = [
    ("r1", 100, "A", "dX", "B", 100.0, 1),
    ("r2", 200, "B", "dX", "C", 50.0, 1),
    ("r3", 300, "C", "dX", "A", 25.0, 1),
    ("r4", 400, "D", "dD", "E", 10.0, 0),  # the benign pair
    ("r5", 500, "E", "dE", "m1", 5.0, 0),
    ("r6", 600, "A", "dX", "m1", 30.0, 1),  # money leaving the ring
    ("r7", 700, "F", "dX", "m1", 3.0, 0),  # F shares dX but moves no money with A, B, C
]
COLUMNS = [c.name for c in TRANSACTION_COLUMNS]


@pytest.fixture(scope="module")
def graph():
    df = read_transactions(pd.DataFrame(ROWS, columns=COLUMNS), source_name="t")
    return graph_from_transactions(df, [3600])


def risk_of(graph, **user_risk: float) -> np.ndarray:
    """Risk per node: as given for users (default 0.1); devices and merchants get 0.99."""
    index = graph.node_index()
    risk = np.full(graph.num_nodes, 0.99)
    for node, (kind, _) in enumerate(graph.node_keys):
        if kind == "user":
            risk[node] = 0.1
    for key, value in user_risk.items():
        risk[index[("user", key)]] = value
    return risk


RING_RISK = {"A": 0.9, "B": 0.8, "C": 0.7}


def test_one_ring_with_its_members_and_evidence(graph):
    rings = find_rings(graph, risk_of(graph, **RING_RISK), min_risk=0.5)
    assert len(rings) == 1
    ring = rings[0]
    assert (ring.ring_id, ring.members, ring.size) == (1, ["A", "B", "C"], 3)
    assert ring.mean_risk == pytest.approx(0.8)
    assert ring.shared_devices == {"dX": ["A", "B", "C"]}  # F is not a member
    assert ring.circular_flows == [["A", "B", "C"]]
    assert ring.internal_edges == 3
    assert ring.internal_amount == pytest.approx(175.0)  # 100 + 50 + 25
    assert ring.total_amount == pytest.approx(205.0)  # plus 30 paid to m1
    assert (ring.first_seen, ring.last_seen) == (100, 600)  # F's payment at 700 is not theirs
    assert ring.evidence() == [
        "device dX used by 3 members (A, B, C)",
        "3 transactions between members, 175.00 in total",
        "circular flow A -> B -> C -> A",
    ]
    assert ring.to_dict()["size"] == 3


def test_devices_and_merchants_never_become_members(graph):
    rings = find_rings(graph, risk_of(graph, **RING_RISK), min_risk=0.5)
    members = {m for ring in rings for m in ring.members}
    assert members == {"A", "B", "C"}
    assert not members & {"dX", "dD", "dE", "m1"}


def test_raising_min_risk_above_a_member_shrinks_the_ring(graph):
    (ring,) = find_rings(graph, risk_of(graph, **RING_RISK), min_risk=0.75)
    assert ring.members == ["A", "B"]  # C (0.7) drops out
    assert ring.circular_flows == []  # A -> B alone is no cycle
    assert (ring.internal_edges, ring.internal_amount) == (1, 100.0)
    assert ring.shared_devices == {"dX": ["A", "B"]}


def test_raising_min_risk_above_all_but_one_removes_the_ring(graph):
    assert find_rings(graph, risk_of(graph, **RING_RISK), min_risk=0.85) == []


def test_min_size(graph):
    risk = risk_of(graph, **RING_RISK)
    assert [r.size for r in find_rings(graph, risk, min_risk=0.5, min_size=3)] == [3]
    assert find_rings(graph, risk, min_risk=0.5, min_size=4) == []
    assert find_rings(graph, risk, min_risk=0.75, min_size=3) == []


def test_shared_device_alone_joins_accounts(graph):
    (ring,) = find_rings(graph, risk_of(graph, A=0.9, F=0.9), min_risk=0.5)
    assert ring.members == ["A", "F"]
    assert ring.shared_devices == {"dX": ["A", "F"]}
    assert (ring.internal_edges, ring.internal_amount, ring.circular_flows) == (0, 0.0, [])
    assert ring.evidence() == ["device dX used by 2 members (A, F)"]


def test_separate_rings_ranked_by_total_risk(graph):
    risk = risk_of(graph, **RING_RISK, D=0.95, E=0.95)
    rings = find_rings(graph, risk, min_risk=0.5)
    assert [r.members for r in rings] == [["A", "B", "C"], ["D", "E"]]  # 3 x 0.8 > 2 x 0.95
    assert [r.ring_id for r in rings] == [1, 2]
    assert rings[1].shared_devices == {}
    assert rings[1].internal_amount == pytest.approx(10.0)
