"""Temporal node features, maintained incrementally.

Every node keeps one :class:`ActivityStats` per (direction, event kind): counts, value statistics,
distinct neighbours, tenure, inter-event gaps, and for each time window the count and amount of
events in the window ending at the node's latest event, plus the largest such burst ever seen.
All features are relative to the node's own latest event, so a node's features change only when
one of its own events arrives: the live scorer updates exactly the touched nodes, and a batch build
over the same events gives the same numbers (the batch build streams through this same code).

Values (amounts, ratings) enter the statistics as ``sign(v) * log1p(|v|)``.

A static graph (an edge list without timestamps) keeps only the features that do not depend on
time: counts, value statistics and distinct neighbours (``NodeActivity(..., temporal=False)``).
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

DIRECTIONS = ("out", "in")
_STATIC_FEATURES = (
    "log_count",
    "value_mean",
    "value_std",
    "value_min",
    "value_max",
    "frac_negative",
    "log_neighbours",
)
_TIME_FEATURES = ("log_tenure", "log_mean_gap", "log_min_gap")
_BASE_FEATURES = _STATIC_FEATURES + _TIME_FEATURES
_WINDOW_FEATURES = ("log_count", "log_amount", "log_max_burst")


def signed_log(value: float) -> float:
    """``sign(v) * log1p(|v|)``: amounts over many orders of magnitude on one scale."""
    return math.copysign(math.log1p(abs(value)), value)


@dataclass(slots=True)
class ActivityStats:
    """Running statistics of one node's events of one kind in one direction."""

    windows: Sequence[int]
    count: int = 0
    total: float = 0.0
    sumsq: float = 0.0
    vmin: float = math.inf
    vmax: float = -math.inf
    negatives: int = 0
    neighbours: set = field(default_factory=set)
    first_t: int = 0
    last_t: int = 0
    gap_min: float = math.inf
    times: list = field(default_factory=list)
    cum_abs: list = field(default_factory=lambda: [0.0])
    window_count: list = field(default_factory=list)
    window_amount: list = field(default_factory=list)
    max_burst: list = field(default_factory=list)

    def add(self, t: int, value: float, neighbour: int) -> None:
        """Account for one event at time ``t`` (seconds, non-decreasing per node)."""
        v = signed_log(value)
        if self.count == 0:
            self.first_t = t
            self.window_count = [0] * len(self.windows)
            self.window_amount = [0.0] * len(self.windows)
            self.max_burst = [0] * len(self.windows)
        else:
            self.gap_min = min(self.gap_min, float(max(t - self.last_t, 0)))
        self.count += 1
        self.total += v
        self.sumsq += v * v
        self.vmin = min(self.vmin, v)
        self.vmax = max(self.vmax, v)
        self.negatives += value < 0
        self.neighbours.add(neighbour)
        self.last_t = max(self.last_t, t)
        self.times.append(t)
        self.cum_abs.append(self.cum_abs[-1] + abs(value))
        self._update_windows(t)

    def _update_windows(self, t: int) -> None:
        n = len(self.times)
        for i, w in enumerate(self.windows):
            start = bisect_right(self.times, t - w)
            self.window_count[i] = n - start
            self.window_amount[i] = self.cum_abs[n] - self.cum_abs[start]
            self.max_burst[i] = max(self.max_burst[i], n - start)

    def vector(self, temporal: bool = True) -> list[float]:
        """The features of this group, in the order of :func:`feature_names` (``temporal=False``:
        only those that do not depend on time)."""
        if not temporal:
            return self._vector()[: len(_STATIC_FEATURES)]
        return self._vector()

    def _vector(self) -> list[float]:
        w = len(self.windows)
        if self.count == 0:
            return [0.0] * (len(_BASE_FEATURES) + len(_WINDOW_FEATURES) * w)
        mean = self.total / self.count
        var = max(self.sumsq / self.count - mean * mean, 0.0)
        tenure = float(self.last_t - self.first_t)
        mean_gap = tenure / (self.count - 1) if self.count > 1 else 0.0
        gap_min = self.gap_min if self.count > 1 else 0.0
        out = [
            math.log1p(self.count),
            mean,
            math.sqrt(var),
            self.vmin,
            self.vmax,
            self.negatives / self.count,
            math.log1p(len(self.neighbours)),
            math.log1p(tenure),
            math.log1p(mean_gap),
            math.log1p(gap_min),
        ]
        out += [math.log1p(c) for c in self.window_count]
        out += [math.log1p(a) for a in self.window_amount]
        out += [math.log1p(b) for b in self.max_burst]
        return out


def feature_names(
    kinds: Sequence[str],
    windows: Sequence[int],
    node_types: Sequence[str],
    temporal: bool = True,
) -> list[str]:
    """Names of the columns that :class:`NodeActivity` produces, in order.

    Example:
        >>> feature_names(("edge",), (), ("user",), temporal=False)[:3]
        ['type_user', 'edge_out_log_count', 'edge_out_value_mean']
    """
    names = [f"type_{t}" for t in node_types]
    for kind in kinds:
        for direction in DIRECTIONS:
            prefix = f"{kind}_{direction}"
            names += [f"{prefix}_{n}" for n in (_BASE_FEATURES if temporal else _STATIC_FEATURES)]
            if not temporal:
                continue
            for stat in _WINDOW_FEATURES:
                names += [f"{prefix}_{stat}_{_window_label(w)}" for w in windows]
    return names


class NodeActivity:
    """Temporal features for a growing set of nodes.

    Args:
        kinds: event kinds (``("txn", "device")`` or ``("edge",)``).
        windows: window lengths in seconds (ignored when not ``temporal``).
        node_types: names of node types, one-hot encoded first.
        temporal: keep the features that depend on time (tenure, gaps, windows); ``False`` for
            a static graph, whose events all carry time 0.

    Example:
        >>> act = NodeActivity(("edge",), (86400,), ("user",))
        >>> act.add_node(0), act.add_node(1)
        (0, 1)
        >>> act.add_event(0, 1, t=100, value=5.0, kind=0)
        >>> act.vector(0)[:2]
        [1.0, 0.6931471805599453]
    """

    def __init__(
        self,
        kinds: Sequence[str],
        windows: Sequence[int],
        node_types: Sequence[str],
        temporal: bool = True,
    ):
        self.kinds = tuple(kinds)
        self.temporal = temporal
        self.windows = tuple(int(w) for w in windows) if temporal else ()
        self.node_types = tuple(node_types)
        self.names = feature_names(self.kinds, self.windows, self.node_types, temporal)
        self._groups: list[list[ActivityStats]] = []
        self._types: list[int] = []

    @property
    def num_features(self) -> int:
        return len(self.names)

    def __len__(self) -> int:
        return len(self._groups)

    def add_node(self, node_type: int) -> int:
        """Add a node of type index ``node_type``; returns its index."""
        groups = [ActivityStats(self.windows) for _ in range(len(self.kinds) * len(DIRECTIONS))]
        self._groups.append(groups)
        self._types.append(node_type)
        return len(self._groups) - 1

    def add_event(self, src: int, dst: int, *, t: int, value: float, kind: int) -> None:
        """One event from ``src`` to ``dst``: updates src's out-group and dst's in-group."""
        self._groups[src][2 * kind].add(t, value, dst)
        self._groups[dst][2 * kind + 1].add(t, value, src)

    def last_time(self, node: int) -> int:
        """Time of the node's latest event of any kind (0 if none)."""
        return max((g.last_t for g in self._groups[node]), default=0)

    def vector(self, node: int) -> list[float]:
        """The feature vector of one node."""
        out = [0.0] * len(self.node_types)
        out[self._types[node]] = 1.0
        for group in self._groups[node]:
            out += group.vector(self.temporal)
        return out

    def matrix(self, nodes: Sequence[int] | None = None) -> np.ndarray:
        """Features of ``nodes`` (default all) as a float32 array of shape (n, F)."""
        nodes = range(len(self)) if nodes is None else nodes
        rows = [self.vector(n) for n in nodes]
        return np.asarray(rows, dtype=np.float32).reshape(len(rows), self.num_features)


def _window_label(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
