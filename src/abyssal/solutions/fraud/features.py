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
from collections.abc import Callable, Sequence
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


class EventLog:
    """Every node's events, per (kind, direction) group, with running statistics after each one.

    The vectorised twin of streaming the same events through :class:`NodeActivity`: the
    features of any nodes *as of* any step (after the events of steps ``0..step``) come out of
    a few array lookups, equal to what :meth:`NodeActivity.matrix` gives after streaming those
    events (float sums are accumulated in event order, ``log1p`` is ``math.log1p``). The
    neighbour sampler uses it to give a transaction the features its nodes had when it was
    made; the graph build uses it (``step=None``: every event) instead of a Python loop.

    Args:
        node_type: (N,) type index of each node.
        node_types, kinds, windows: as for :class:`NodeActivity` (temporal features only).
        src, dst: (V,) the events' nodes, in stream order (times non-decreasing per node).
        time: (V,) int seconds; value: (V,) float amounts; kind: (V,) kind index.
        step: (V,) non-decreasing step of each event (e.g. its transaction's row); an
            as-of query at step ``s`` sees the events with ``step <= s``.

    Example:
        >>> log = EventLog(np.zeros(2, np.int64), ("user",), ("edge",), (86400,),
        ...                np.array([0]), np.array([1]), np.array([100]), np.array([5.0]),
        ...                np.array([0]), np.array([0]))
        >>> log.features(np.array([0]))[0, :3].tolist()
        [1.0, 0.6931471805599453, 0.6931471824645996]
    """

    def __init__(
        self,
        node_type: np.ndarray,
        node_types: Sequence[str],
        kinds: Sequence[str],
        windows: Sequence[int],
        src: np.ndarray,
        dst: np.ndarray,
        time: np.ndarray,
        value: np.ndarray,
        kind: np.ndarray,
        step: np.ndarray,
    ) -> None:
        self.node_type = np.asarray(node_type, dtype=np.int64)
        self.node_types, self.kinds = tuple(node_types), tuple(kinds)
        self.windows = tuple(int(w) for w in windows)
        self.names = feature_names(self.kinds, self.windows, self.node_types)
        self.groups = 2 * len(self.kinds)
        n, v = len(self.node_type), len(src)
        seg = np.concatenate([src * self.groups + 2 * kind, dst * self.groups + 2 * kind + 1])
        order = np.argsort(seg, kind="stable")  # (2V,) by (node, group), stream order within
        seg = seg[order]
        counts = np.bincount(seg, minlength=n * self.groups)
        self.start = np.concatenate([[0], np.cumsum(counts)])  # (N*G + 1,)
        side = order % v if v else order  # the event of each group-event
        times = np.asarray(time, dtype=np.int64)[side]
        self.t0 = int(times.min()) if v else 0
        self.step_span = int(step.max()) + 2 if v else 1
        self.step_key = seg * self.step_span + np.asarray(step, dtype=np.int64)[side]
        self.time_key = (seg << 32) + (times - self.t0)  # (2V,) sorted: segment, then time
        neighbour = np.concatenate([dst, src])[order]
        del order
        self._running_stats(seg, times, np.asarray(value, dtype=np.float64)[side], neighbour)

    def time_of(self, index: np.ndarray) -> np.ndarray:
        """(n,) time of group-events ``index``."""
        return (self.time_key[index] & 0xFFFFFFFF) + self.t0

    def _running_stats(
        self, seg: np.ndarray, time: np.ndarray, value: np.ndarray, neighbour: np.ndarray
    ) -> None:
        """Per group-event: the group's statistics after it (sums in stream order). Minima and
        maxima are kept in float32, which commutes with taking them."""
        starts, lengths = self.start[:-1], np.diff(self.start)
        signed = np.copysign(exact_log1p(np.abs(value)), value)
        acc = lambda fn, x: _segment_accumulate(fn, x, starts, lengths)  # noqa: E731
        self.total = acc(np.add, signed)
        self.sumsq = acc(np.add, signed * signed)
        self.cum_abs = acc(np.add, np.abs(value))
        self.vmin = acc(np.minimum, signed).astype(np.float32)
        self.vmax = acc(np.maximum, signed).astype(np.float32)
        first = self.start[seg]  # (2V,) each group-event's segment start
        self.negatives = _segment_count(value < 0, first)
        pair = np.unique(seg * (int(neighbour.max(initial=0)) + 1) + neighbour, True)[1]
        new = np.zeros(len(value), dtype=bool)
        new[pair] = True
        self.distinct = _segment_count(new, first)
        gap = np.diff(time, prepend=time[:1]).astype(np.float64)
        gap[first[first < len(gap)]] = np.inf
        self.gap_min = acc(np.minimum, gap)
        every = np.arange(len(value))
        self.bursts = [
            acc(np.maximum, self._window_counts(every, w)).astype(np.int32) for w in self.windows
        ]

    def _window_counts(self, last: np.ndarray, w: int) -> np.ndarray:
        """Events of each group within ``w`` seconds up to (and including) group-event ``last``."""
        seg_start = self.start[self.time_key[last] >> 32]
        lo = np.searchsorted(self.time_key, self.time_key[last] - w, side="right")
        return last + 1 - np.maximum(lo, seg_start)

    def last_event(self, nodes: np.ndarray, group: int, step: int | None = None) -> np.ndarray:
        """(n,) index of each node's latest group-event of ``group`` (as of ``step``), -1: none."""
        seg = np.asarray(nodes, dtype=np.int64) * self.groups + group
        if step is None:
            end = self.start[seg + 1]
        else:
            key = seg * self.step_span + np.minimum(np.asarray(step), self.step_span - 2)
            end = np.searchsorted(self.step_key, key, side="right")
        return np.where(end > self.start[seg], end - 1, -1)

    def last_time(self, nodes: np.ndarray, step: np.ndarray | int | None = None) -> np.ndarray:
        """(n,) time of each node's latest event as of ``step`` (every event: None); 0: none."""
        out = np.zeros(len(nodes), dtype=np.int64)
        for g in range(self.groups):
            last = self.last_event(nodes, g, step)
            out = np.maximum(out, np.where(last >= 0, self.time_of(np.maximum(last, 0)), 0))
        return out

    def features(
        self, nodes: np.ndarray, step: np.ndarray | int | None = None, *, exact: bool = True
    ) -> np.ndarray:
        """(n, F) float32 features of ``nodes`` after the events of steps ``<= step`` (one step
        per node, or one for all; None: every event), as :meth:`NodeActivity.matrix` gives.

        ``exact=False`` takes numpy's ``log1p``, several times faster; it may differ from
        ``math.log1p`` in the last bit of a float64, which float32 rounding almost always hides.
        """
        nodes = np.asarray(nodes, dtype=np.int64)
        log1p = exact_log1p if exact else np.log1p
        parts = [np.eye(len(self.node_types))[self.node_type[nodes]]]
        parts += [self._group_features(nodes, g, step, log1p) for g in range(self.groups)]
        return np.concatenate(parts, axis=1).astype(np.float32)

    def _group_features(self, nodes: np.ndarray, group: int, step, exact_log1p) -> np.ndarray:
        last = self.last_event(nodes, group, step)
        has = last >= 0
        j = np.maximum(last, 0)
        s0 = self.start[nodes * self.groups + group]
        count = np.where(has, j - s0 + 1, 1).astype(np.float64)
        mean = self.total[j] / count
        var = np.maximum(self.sumsq[j] / count - mean * mean, 0.0)
        tenure = (self.time_of(j) - self.time_of(np.minimum(s0, j))).astype(np.float64)
        several = count > 1
        mean_gap = np.where(several, tenure / np.maximum(count - 1, 1), 0.0)
        cols = [
            exact_log1p(count), mean, np.sqrt(var), self.vmin[j], self.vmax[j],
            self.negatives[j] / count, exact_log1p(self.distinct[j].astype(np.float64)),
            exact_log1p(tenure), exact_log1p(mean_gap),
            exact_log1p(np.where(several, self.gap_min[j], 0.0)),
        ]  # fmt: skip
        windowed = [self._window_counts(j, w) for w in self.windows]
        cols += [exact_log1p(c.astype(np.float64)) for c in windowed]
        for c in windowed:
            lo = j + 1 - c  # first group-event inside the window
            before = np.where(lo > s0, self.cum_abs[np.maximum(lo - 1, 0)], 0.0)
            cols.append(exact_log1p(self.cum_abs[j] - before))
        cols += [exact_log1p(b[j].astype(np.float64)) for b in self.bursts]
        out = np.stack(cols, axis=1)  # (n, 10 + 3W)
        out[~has] = 0.0
        return out


def exact_log1p(values: np.ndarray) -> np.ndarray:
    """``math.log1p`` of every value (numpy's own ``log1p`` may differ in the last bit), computed
    once per distinct value."""
    values = np.asarray(values, dtype=np.float64)
    top = values.max(initial=0.0)
    if values.size and values.min() >= 0 and top < min(values.size, 1 << 24):
        small = values.astype(np.int64)
        if np.array_equal(small, values):  # small counts: one table lookup
            table = np.array([math.log1p(v) for v in range(int(top) + 1)], dtype=np.float64)
            return table[small]
    distinct, inverse = np.unique(values, return_inverse=True)
    return np.array([math.log1p(v) for v in distinct.tolist()])[inverse].reshape(values.shape)


def _segment_accumulate(
    fn: np.ufunc, values: np.ndarray, starts: np.ndarray, lengths: np.ndarray, short: int = 32
) -> np.ndarray:
    """``fn.accumulate`` within each segment, strictly in order (float sums match a Python loop).

    Segments are walked position by position up to ``short`` (all segments at once), and the
    longer ones' tails one segment at a time with ``fn.accumulate``, so there is no Python loop
    per event and none per short segment.
    """
    out = values.copy()
    if len(values) == 0:
        return out
    order = np.argsort(-lengths, kind="stable")
    s, n = starts[order], lengths[order]
    active = np.searchsorted(-n, -np.arange(short + 1), side="left")  # segments longer than k
    for k in range(1, min(short, int(n[0]))):
        idx = s[: active[k]] + k
        out[idx] = fn(out[idx - 1], values[idx])
    for i in range(active[short]):
        lo, hi = s[i] + short - 1, s[i] + n[i]
        out[lo:hi] = fn.accumulate(out[lo:hi])
    return out


def _segment_count(flags: np.ndarray, first: np.ndarray) -> np.ndarray:
    """Running count of ``flags`` within each segment (``first``: each entry's segment start)."""
    total = np.cumsum(flags, dtype=np.int64)
    before = np.where(first > 0, total[np.maximum(first - 1, 0)], 0)
    return (total - before).astype(np.int32)


class LoggedActivity(NodeActivity):
    """A :class:`NodeActivity` whose features and latest times come from an :class:`EventLog`
    until something needs the streaming state (a new node or event, one node's vector): then the
    events are streamed once by ``replay`` and it behaves as the class it extends.

    So a large graph gets its feature matrix without a Python loop per event, and a live scorer
    built over it still streams (Python loop, once) when it is first used.

    Args:
        log: the graph's events.
        replay: streams every event of the log into a fresh :class:`NodeActivity` (this one).
    """

    def __init__(self, log: EventLog, replay: Callable[[NodeActivity], None]) -> None:
        super().__init__(log.kinds, log.windows, log.node_types)
        self.log = log
        self._replay: Callable[[NodeActivity], None] | None = replay
        self._last = log.last_time(np.arange(len(log.node_type)))

    def _stream(self) -> None:
        replay, self._replay = self._replay, None
        if replay is not None:
            for t in self.log.node_type.tolist():
                NodeActivity.add_node(self, t)
            replay(self)

    def __len__(self) -> int:
        return len(self.log.node_type) if self._replay is not None else super().__len__()

    def add_node(self, node_type: int) -> int:
        self._stream()
        return super().add_node(node_type)

    def add_event(self, src: int, dst: int, *, t: int, value: float, kind: int) -> None:
        self._stream()
        super().add_event(src, dst, t=t, value=value, kind=kind)

    def last_time(self, node: int) -> int:
        if self._replay is not None:
            return int(self._last[node])
        return super().last_time(node)

    def vector(self, node: int) -> list[float]:
        self._stream()
        return super().vector(node)

    def matrix(self, nodes: Sequence[int] | None = None) -> np.ndarray:
        if self._replay is None:
            return super().matrix(nodes)
        every = np.arange(len(self)) if nodes is None else np.asarray(nodes, dtype=np.int64)
        return self.log.features(every)
