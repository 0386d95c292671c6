"""Temporal node features on hand-made events with answers worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from abyssal.solutions.fraud.features import (
    ActivityStats,
    NodeActivity,
    feature_names,
    signed_log,
)

WINDOWS = (60, 3600)
BASE = 10  # base features per (kind, direction) group
GROUP = BASE + 3 * len(WINDOWS)  # + count, amount, max burst per window
L = math.log1p


def stats_of(events: list[tuple[int, float, int]], windows=WINDOWS) -> ActivityStats:
    s = ActivityStats(windows)
    for t, value, neighbour in events:
        s.add(t, value, neighbour)
    return s


# Node 0's outgoing events: (time, value, neighbour)
EVENTS = [(100, 10.0, 1), (130, -5.0, 1), (1000, 0.0, 2)]


def test_signed_log():
    assert signed_log(0.0) == 0.0
    assert signed_log(math.e - 1) == pytest.approx(1.0)
    assert signed_log(-(math.e - 1)) == pytest.approx(-1.0)


def test_counts_and_value_statistics():
    s = stats_of(EVENTS)
    v = [L(10), -L(5), 0.0]
    mean = sum(v) / 3
    std = math.sqrt(sum((x - mean) ** 2 for x in v) / 3)
    out = s.vector()
    assert s.count == 3
    assert out[0] == pytest.approx(L(3))
    assert out[1] == pytest.approx(mean)
    assert out[2] == pytest.approx(std)
    assert out[3] == pytest.approx(-L(5))  # min
    assert out[4] == pytest.approx(L(10))  # max
    assert out[5] == pytest.approx(1 / 3)  # one negative of three


def test_neighbours_tenure_and_gaps():
    out = stats_of(EVENTS).vector()
    assert out[6] == pytest.approx(L(2))  # distinct neighbours 1 and 2
    assert out[7] == pytest.approx(L(900))  # tenure 1000 - 100
    assert out[8] == pytest.approx(L(450))  # mean gap 900 / 2
    assert out[9] == pytest.approx(L(30))  # min gap 130 - 100


def test_windows_at_latest_event_and_max_burst():
    s = stats_of(EVENTS)
    # at t=1000: the 60 s window holds only the last event (amount 0); 3600 s holds all three
    assert s.window_count == [1, 3]
    assert s.window_amount == pytest.approx([0.0, 15.0])  # absolute amounts
    # the 60 s window held two events at t=130 (100 and 130), more than at t=1000
    assert s.max_burst == [2, 3]
    out = s.vector()
    assert out[BASE:] == pytest.approx([L(1), L(3), L(0), L(15), L(2), L(3)])


def test_window_excludes_event_exactly_one_window_old():
    s = stats_of([(0, 1.0, 1), (60, 1.0, 1)], windows=(60,))
    assert s.window_count == [1]  # the window is (t - 60, t]
    assert s.window_amount == [1.0]


def test_single_event_has_zero_gaps_and_spread():
    out = stats_of([(500, 3.0, 9)]).vector()
    assert out[:BASE] == pytest.approx([L(1), L(3), 0.0, L(3), L(3), 0.0, L(1), 0.0, 0.0, 0.0])


def test_no_events_gives_zero_vector():
    assert ActivityStats(WINDOWS).vector() == [0.0] * GROUP


# --- NodeActivity ---------------------------------------------------------------------------------


def activity() -> NodeActivity:
    """Node 0 (user) sends EVENTS to 1 (merchant) and 2 (user); node 3 (merchant) has no event."""
    act = NodeActivity(("edge",), WINDOWS, ("user", "merchant"))
    for node_type in (0, 1, 0, 1):
        act.add_node(node_type)
    for t, value, dst in EVENTS:
        act.add_event(0, dst, t=t, value=value, kind=0)
    return act


def test_feature_names_match_vector_length():
    act = activity()
    assert act.num_features == 2 + 2 * GROUP
    assert len(act.names) == len(act.vector(0)) == len(set(act.names))
    assert act.names[:3] == ["type_user", "type_merchant", "edge_out_log_count"]
    assert "edge_in_log_max_burst_1h" in act.names
    assert "edge_out_log_amount_1m" in act.names


def test_feature_names_for_two_kinds():
    names = feature_names(("txn", "device"), (90, 86400), ("user", "device", "merchant"))
    assert len(names) == 3 + 2 * 2 * (BASE + 3 * 2)
    assert names[-1] == "device_in_log_max_burst_1d"
    assert "txn_out_log_count_90s" in names


def test_out_and_in_groups_of_nodes():
    act = activity()
    x0, x1 = act.vector(0), act.vector(1)
    assert x0[:2] == [1.0, 0.0]
    assert x0[2 : 2 + GROUP] == pytest.approx(stats_of(EVENTS).vector())
    assert x0[2 + GROUP :] == [0.0] * GROUP  # node 0 received nothing
    assert x1[:2] == [0.0, 1.0]
    assert x1[2 : 2 + GROUP] == [0.0] * GROUP  # node 1 sent nothing
    in1 = x1[2 + GROUP :]
    assert in1[0] == pytest.approx(L(2))  # two events received
    assert in1[6] == pytest.approx(L(1))  # from one neighbour
    assert in1[7] == pytest.approx(L(30))  # tenure 130 - 100


def test_node_without_events_is_zero_except_its_type():
    act = activity()
    expected = np.zeros(act.num_features, dtype=np.float32)
    expected[1] = 1.0  # merchant
    np.testing.assert_array_equal(act.matrix([3])[0], expected)


def test_matrix_shape_dtype_and_rows():
    act = activity()
    m = act.matrix()
    assert m.shape == (4, act.num_features) and m.dtype == np.float32
    np.testing.assert_allclose(m[2], np.asarray(act.vector(2), dtype=np.float32))
    assert act.matrix([]).shape == (0, act.num_features)


def test_last_time_per_node():
    act = activity()
    assert [act.last_time(n) for n in range(4)] == [1000, 130, 1000, 0]
    assert len(act) == 4
