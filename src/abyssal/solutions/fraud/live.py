"""Dynamic risk assessment: score each new transaction against the live graph as it arrives.

For every new transaction the scorer adds its edges, updates the temporal features and layer-0
embeddings of the touched nodes (user, counterparty, device), and computes the deeper layers lazily,
only for the nodes it scores. Every node attends to its ``model.neighbour_cap`` K most recent
incoming edges (the same rule the model applies in training and in a full recomputation), so the
last layer of a scored node reads K edges, the layer below K per neighbour, and so on: the work per
transaction is bounded by K and the number of layers, not by the degree of a hub such as a busy
merchant. Intermediate layers are cached with the step at which each row was computed and are
recomputed only when one of their inputs (the node's own row below, its K most recent
neighbours' rows, or its edges) changed since; the scores equal a full recomputation over the
grown graph (a test checks that).

With ``neighbour_cap: null`` every edge is read and the work grows with the degree of the nodes.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from abyssal.core.errors import DataError
from abyssal.nn.recent_edges import recent_edge_mask
from abyssal.solutions.fraud.attention import AttentionView, softmax_aggregate
from abyssal.solutions.fraud.dataset import GraphTensors
from abyssal.solutions.fraud.features import signed_log
from abyssal.solutions.fraud.graph import FraudGraph, edge_attributes
from abyssal.solutions.fraud.model import TemporalGAT, edge_groups

_REVERSED = 1 << 40
"""Order key of a reversed edge: ``_REVERSED + i`` for the reverse of original edge ``i``, so keys
sort like positions in :class:`GraphTensors`' edge list (originals first, then their reverses)."""
_MODEL_BOUND = frozenset({"model", "views"})
"""A live scorer's attributes that belong to the model, never to its state."""


@dataclass
class LiveScore:
    """The result of scoring one new transaction (or edge)."""

    transaction_id: str
    risk: float  # transaction risk (account risk of the sender for edge-list graphs)
    user_risk: float
    counterparty_risk: float
    rescored: int  # how many nodes were rescored
    latency_ms: float
    alerts: str = ""  # accounts whose risk crossed the alert threshold now, ";"-separated


class _Rows:
    """A tensor that grows along its first dimension by doubling its capacity."""

    def __init__(self, data: torch.Tensor) -> None:
        self.n = data.shape[0]
        self.buf = torch.zeros((max(2 * self.n, 16), *data.shape[1:]), dtype=data.dtype)
        self.buf[: self.n] = data

    def append(self, rows: torch.Tensor) -> None:
        need = self.n + rows.shape[0]
        if need > self.buf.shape[0]:
            grown = torch.zeros((2 * need, *self.buf.shape[1:]), dtype=self.buf.dtype)
            grown[: self.n] = self.buf[: self.n]
            self.buf = grown
        self.buf[self.n : need] = rows
        self.n = need

    @property
    def data(self) -> torch.Tensor:
        return self.buf[: self.n]


class LiveScorer:
    """Scores a stream of new transactions (or edges) incrementally.

    Args:
        model: a trained model (put in eval mode); its ``neighbour_cap`` bounds the work.
        graph: the history graph; it must have been built from events (it has ``activity``). The
            scorer takes it over and grows it.
        on_unknown_account: ``"error"`` (default) or ``"add"`` for a user never seen before.
        rescore_neighbourhood: also rescore the touched nodes' K most recent counterparties (all
            of their neighbours without a cap), so that alerts cover them.
        alert_threshold: account risk at which an account raises an alert; ``None``: no alerts.

    Attributes:
        edges_attended: attention edges read while scoring the latest transaction (the work
            that the neighbour cap bounds).

    Example:
        >>> scorer = LiveScorer(model, graph)                      # doctest: +SKIP
        >>> scorer.score_transaction({"transaction_id": "t1", ...})  # doctest: +SKIP
    """

    def __init__(
        self,
        model: TemporalGAT,
        graph: FraudGraph,
        on_unknown_account: str = "error",
        rescore_neighbourhood: bool = True,
        alert_threshold: float | None = None,
    ):
        if graph.activity is None:
            raise DataError("live scoring needs a graph built from timestamped events")
        self.model = model.eval()
        self.graph = graph
        self.on_unknown = on_unknown_account
        self.rescore_neighbourhood = rescore_neighbourhood
        self.alert_threshold = alert_threshold
        self.cap: int | None = getattr(model, "neighbour_cap", None)
        self.index = graph.node_index()
        self.keys = list(graph.node_keys)
        self.node_type = graph.node_type.tolist()
        self.orig = [
            graph.edge_src.tolist(),
            graph.edge_dst.tolist(),
            graph.edge_value.tolist(),
            graph.edge_time.tolist(),
            graph.edge_kind.tolist(),
        ]
        self.seen_devices = {
            (s, d)
            for s, d, k in zip(self.orig[0], self.orig[1], self.orig[4], strict=True)
            if k == 1
        }
        self.views = [AttentionView(conv) for conv in model.convs]
        self._load_graph(GraphTensors.from_graph(graph))
        self.risk = _Rows(torch.from_numpy(self.risks()))  # latest known risk of every node
        self.known_transactions: set[str] = (
            set(graph.transactions.ids.tolist()) if graph.transactions is not None else set()
        )

    @torch.no_grad()
    def _load_graph(self, t: GraphTensors) -> None:
        """Edges, their K-most-recent lists and every cached layer, from the history graph."""
        self.src, self.dst = _Rows(t.edge_index[0]), _Rows(t.edge_index[1])
        self.attr, self.etime = _Rows(t.edge_attr), _Rows(t.edge_time)
        self.x, self.last = _Rows(t.x), _Rows(t.last_time)
        e = len(self.orig[0])
        pos = torch.arange(2 * e)
        self.order_key = _Rows(torch.where(pos < e, pos, pos - e + _REVERSED))
        dt = t.edge_dt()
        self.edge_in = _Rows(self.model.edge_inputs(t.edge_attr, dt))
        groups = edge_groups(t.edge_attr)
        self.recent = _recent_lists(t.edge_index[1], dt, groups, self.cap, len(self.keys))
        hs = self.model.embed(t.x, t.edge_index, t.edge_attr, dt)[:-1]  # cached: h0 .. h(L-1)
        self.hs = [_Rows(h) for h in hs]
        self.xs = [_Rows(v.senders(h)) for v, h in zip(self.views, hs, strict=True)]
        # stamp[0]: step at which a node was last touched (features, h0, its edges);
        # stamp[i]: step at which its hs[i] row was last computed
        self.stamp = [_Rows(torch.zeros(len(self.keys), dtype=torch.long)) for _ in hs]
        self.step = 0
        self.edges_attended = 0

    # -- public API ---------------------------------------------------------------------------

    def score_transaction(self, txn: dict) -> LiveScore:
        """Add one transaction (keys as in the transactions table) and score it."""
        start = time.perf_counter()
        u = self._account(txn["user_id"], txn)
        cp_key = "user" if ("user", txn["counterparty_id"]) in self.index else "merchant"
        c = self._node(cp_key, txn["counterparty_id"])
        d = self._node("device", txn["device_id"])
        t, amount = int(txn["timestamp"]), float(txn["amount"])
        act = self.graph.activity
        act.add_event(u, c, t=t, value=amount, kind=0)
        act.add_event(u, d, t=t, value=amount, kind=1)
        self._add_edge(u, c, amount, t, 0)
        if (u, d) not in self.seen_devices:
            self.seen_devices.add((u, d))
            self._add_edge(u, d, 0.0, t, 1)
        self.known_transactions.add(str(txn["transaction_id"]))
        nodes, h_last = self._refresh([u, c, d])
        pos = {n: i for i, n in enumerate(nodes)}
        risk = self._node_risk(nodes, h_last)
        alerts = self._record(nodes, risk)
        with torch.no_grad():
            tl = self.model.transaction_logits(
                h_last,
                torch.tensor([pos[u]]),
                torch.tensor([pos[c]]),
                torch.tensor([pos[d]]),
                torch.tensor([signed_log(amount)], dtype=torch.float32),
            )
        return LiveScore(
            str(txn["transaction_id"]),
            float(torch.sigmoid(tl)[0]),
            float(risk[pos[u]]),
            float(risk[pos[c]]),
            len(nodes),
            1000 * (time.perf_counter() - start),
            alerts,
        )

    def score_edge(self, source: str, target: str, timestamp: int, value: float = 1.0) -> LiveScore:
        """Add one edge of an account network (edge-list graphs) and score both ends."""
        start = time.perf_counter()
        s = self._account(source, {"source": source})
        d = self._account(target, {"target": target})
        self.graph.activity.add_event(s, d, t=int(timestamp), value=float(value), kind=0)
        self._add_edge(s, d, float(value), int(timestamp), 0)
        nodes, h_last = self._refresh([s, d])
        risk = self._node_risk(nodes, h_last)
        alerts = self._record(nodes, risk)
        pos = {n: i for i, n in enumerate(nodes)}
        return LiveScore(
            f"{source}->{target}",
            float(risk[pos[s]]),
            float(risk[pos[s]]),
            float(risk[pos[d]]),
            len(nodes),
            1000 * (time.perf_counter() - start),
            alerts,
        )

    def check_transactions(self, rows: Iterable[dict], path: str | None = None) -> None:
        """Raise :class:`DataError` for the first row that names an unknown user (when unknown
        accounts are errors) or a transaction id already scored; checks before scoring anything."""
        for i, row in enumerate(rows, start=1):
            if str(row["transaction_id"]) in self.known_transactions:
                raise DataError(
                    f"transaction id '{row['transaction_id']}' is already in the live graph",
                    path=path,
                    row=i,
                    column="transaction_id",
                )
            if self.on_unknown == "error" and ("user", str(row["user_id"])) not in self.index:
                raise DataError(
                    f"unknown account '{row['user_id']}': it is not in the history graph "
                    "(set live.on_unknown_account=add to score new accounts)",
                    path=path,
                    row=i,
                    column="user_id",
                )

    def risks(self, nodes: list[int] | None = None) -> np.ndarray:
        """Current account risk of ``nodes`` (default all), exact from the cached embeddings."""
        nodes = list(range(len(self.keys))) if nodes is None else sorted(nodes)
        with torch.no_grad():
            h_last = self._final(nodes)
        return self._node_risk(nodes, h_last)

    def state_dict(self) -> dict[str, Any]:
        """Everything scoring has added or cached, without the model: a scorer of the same
        model given it by :meth:`load_state_dict` scores on exactly as this one would."""
        return {k: v for k, v in vars(self).items() if k not in _MODEL_BOUND}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Take the state :meth:`state_dict` gave (keys missing or unknown: an error)."""
        expected = set(vars(self)) - _MODEL_BOUND
        if set(state) != expected:
            missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
            raise DataError(f"not a live scorer's state: missing {missing}, unexpected {extra}")
        vars(self).update(state)

    def snapshot(self) -> FraudGraph:
        """The live graph as a :class:`FraudGraph` (for rings); features are the current ones."""
        g = self.graph
        return FraudGraph(
            node_keys=list(self.keys),
            node_types=g.node_types,
            node_type=np.asarray(self.node_type, dtype=np.int64),
            kinds=g.kinds,
            x=self.x.data.numpy(),
            feature_names=g.feature_names,
            edge_src=np.asarray(self.orig[0], dtype=np.int64),
            edge_dst=np.asarray(self.orig[1], dtype=np.int64),
            edge_value=np.asarray(self.orig[2], dtype=np.float64),
            edge_time=np.asarray(self.orig[3], dtype=np.int64),
            edge_kind=np.asarray(self.orig[4], dtype=np.int64),
            y=np.concatenate([g.y, np.full(len(self.keys) - len(g.y), -1, dtype=np.int8)]),
            activity=g.activity,
        )

    # -- internals ---------------------------------------------------------------------------

    def _account(self, account: str, row: dict) -> int:
        key = ("user", str(account))
        if key not in self.index and self.on_unknown == "error":
            raise DataError(f"unknown account '{account}' in {row}")
        return self._node("user", str(account))

    def _node(self, node_type: str, node_id: str) -> int:
        key = (node_type, str(node_id))
        node = self.index.get(key)
        if node is not None:
            return node
        node = self.index[key] = len(self.keys)
        self.keys.append(key)
        type_idx = self.graph.node_types.index(node_type)
        self.node_type.append(type_idx)
        self.graph.activity.add_node(type_idx)
        self.recent.append(np.zeros(0, dtype=np.int64))
        self.x.append(torch.zeros(1, self.x.buf.shape[1]))
        self.last.append(torch.zeros(1, dtype=self.last.buf.dtype))
        for h in self.hs:
            h.append(torch.zeros(1, h.buf.shape[1]))
        for xs in self.xs:
            xs.append(torch.zeros(1, *xs.buf.shape[1:]))
        for i, stamp in enumerate(self.stamp):  # never computed: -1 (layer 0: set when touched)
            stamp.append(torch.tensor([0 if i == 0 else -1]))
        self.risk.append(torch.zeros(1, dtype=self.risk.buf.dtype))
        return node

    def _add_edge(self, s: int, d: int, value: float, t: int, kind: int) -> None:
        for lst, v in zip(self.orig, (s, d, value, t, kind), strict=True):
            lst.append(v)
        base = torch.from_numpy(
            edge_attributes(np.array([value]), np.array([kind]), len(self.graph.kinds))
        )
        e, i = self.src.n, len(self.orig[0]) - 1
        self.src.append(torch.tensor([s, d]))
        self.dst.append(torch.tensor([d, s]))
        self.attr.append(torch.cat([torch.cat([base, base]), torch.tensor([[0.0], [1.0]])], dim=1))
        self.etime.append(torch.tensor([t, t]))
        self.order_key.append(torch.tensor([i, i + _REVERSED]))
        self.edge_in.append(torch.zeros(2, self.edge_in.buf.shape[1]))  # set by _refresh
        self._keep_recent(d, e)
        self._keep_recent(s, e + 1)

    def _keep_recent(self, node: int, edge: int) -> None:
        """Add ``edge`` to the node's incoming edges; keep the K most recent of the edge's group
        (latest time, then latest position in the full graph's edge list, as
        :func:`recent_edge_mask` ranks them)."""
        kept = np.append(self.recent[node], edge)
        if self.cap is not None:
            ids = torch.from_numpy(kept)
            groups = edge_groups(self.attr.buf[ids]).numpy()
            same = np.flatnonzero(groups == groups[-1])
            if len(same) > self.cap:
                keys = (self.order_key.buf[ids[same]].numpy(), self.etime.buf[ids[same]].numpy())
                kept = np.delete(kept, same[np.lexsort(keys)[0]])
        self.recent[node] = kept

    @torch.no_grad()
    def _refresh(self, touched: list[int]) -> tuple[list[int], torch.Tensor]:
        """Bring the touched nodes' features, edge inputs and layer-0 rows up to date; return
        the nodes scored (touched, plus their recent counterparties when rescoring the
        neighbourhood) and their final embeddings."""
        self.step += 1
        self.edges_attended = 0
        act = self.graph.activity
        touched = sorted(set(touched))
        idx = torch.tensor(touched)
        self.x.buf[idx] = torch.tensor([act.vector(n) for n in touched], dtype=torch.float32)
        self.last.buf[idx] = torch.tensor(
            [act.last_time(n) for n in touched], dtype=self.last.buf.dtype
        )
        eids, _ = self._edges_into(idx)  # their edges' ages changed with their last time
        self.edge_in.buf[eids] = self.model.edge_inputs(self.attr.buf[eids], self._dt(eids))
        self.stamp[0].buf[idx] = self.step
        self._set_rows(0, idx, self.model.encode(self.x.buf[idx]))
        scored = sorted(self._expand(touched)) if self.rescore_neighbourhood else touched
        return scored, self._final(scored)

    def _final(self, nodes: list[int]) -> torch.Tensor:
        """(n, H) last-layer embeddings of ``nodes`` (sorted), updating the cached layers below
        for the nodes they depend on: their K most recent in-neighbours, layer by layer."""
        need = [torch.tensor(nodes, dtype=torch.long)]
        for _ in range(len(self.hs) - 1):
            eids, _ = self._edges_into(need[-1])
            need.append(torch.unique(torch.cat([need[-1], self.src.buf[eids]])))
        for i, rows in enumerate(reversed(need[1:]), start=1):
            self._update_layer(i, rows)
        return self._layer(len(self.hs) - 1, need[0])

    def _update_layer(self, i: int, nodes: torch.Tensor) -> None:
        """Recompute the cached ``hs[i]`` rows of ``nodes`` whose inputs changed since."""
        eids, pos = self._edges_into(nodes)
        below = self.stamp[i - 1].buf
        newest = torch.maximum(below[nodes], self.stamp[0].buf[nodes])
        newest = newest.scatter_reduce(0, pos, below[self.src.buf[eids]], reduce="amax")
        stale = nodes[self.stamp[i].buf[nodes] < newest]
        if len(stale):
            self._set_rows(i, stale, self._layer(i - 1, stale))
            self.stamp[i].buf[stale] = self.step

    def _set_rows(self, i: int, nodes: torch.Tensor, rows: torch.Tensor) -> None:
        """Set ``hs[i]`` rows of ``nodes`` and their sender projections for layer ``i``."""
        self.hs[i].buf[nodes] = rows
        self.xs[i].buf[nodes] = self.views[i].senders(rows)

    def _layer(self, i: int, nodes: torch.Tensor) -> torch.Tensor:
        """Layer ``i`` output (n, H) for ``nodes`` from the cached ``hs[i]`` rows."""
        eids, pos = self._edges_into(nodes)
        self.edges_attended += len(eids)
        view = self.views[i]
        xs = self.xs[i].buf.index_select(0, self.src.buf.index_select(0, eids))  # (E, H, C)
        xr = view.receivers(self.hs[i].buf.index_select(0, nodes)).index_select(0, pos)
        terms = view.edge_terms(self.edge_in.buf.index_select(0, eids))
        logits = view.logits_from(xs, xr, terms)  # (E, H)
        message = view.finish(softmax_aggregate(logits, xs, pos, len(nodes)))
        return self.model.combine(i, self.hs[i].buf[nodes], message)

    def _dt(self, eids: torch.Tensor) -> torch.Tensor:
        dt = self.last.buf[self.dst.buf[eids]] - self.etime.buf[eids]
        return dt.clamp_min(0).to(torch.float32)

    def _edges_into(self, nodes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The edges each of ``nodes`` attends to (its K most recent) and each edge's position
        in ``nodes``."""
        arrays = [self.recent[n] for n in nodes.tolist()]
        if not arrays:
            return torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)
        eids = torch.from_numpy(np.concatenate(arrays))
        counts = torch.tensor([len(a) for a in arrays], dtype=torch.long)
        return eids, torch.repeat_interleave(torch.arange(len(arrays)), counts)

    def _expand(self, nodes: list[int]) -> set[int]:
        """``nodes`` and the senders of the edges they attend to."""
        eids, _ = self._edges_into(torch.tensor(nodes, dtype=torch.long))
        return set(nodes) | set(self.src.buf[eids].tolist())

    def _record(self, nodes: list[int], risk: np.ndarray) -> str:
        """Remember the new risks; accounts that crossed the alert threshold, ";"-separated."""
        idx = torch.tensor(nodes, dtype=torch.long)
        before = self.risk.buf[idx].numpy().copy()
        self.risk.buf[idx] = torch.from_numpy(risk).to(self.risk.buf.dtype)
        if self.alert_threshold is None:
            return ""
        t = self.alert_threshold
        crossed = (before < t) & (risk >= t)
        return ";".join(
            self.keys[n][1]
            for n, c in zip(nodes, crossed, strict=True)
            if c and self.node_type[n] == 0
        )

    def _node_risk(self, nodes: list[int], h_last: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            logits = self.model.node_logits(h_last, self.hs[0].buf[torch.tensor(nodes)])
        return torch.sigmoid(logits).numpy()


def _recent_lists(
    dst: torch.Tensor, age: torch.Tensor, groups: torch.Tensor, cap: int | None, n: int
) -> list[np.ndarray]:
    """Per node, the ids of the incoming edges it attends to (at most ``cap`` per group)."""
    keep = torch.nonzero(recent_edge_mask(dst, age, cap, groups)).squeeze(1)
    order = keep[torch.sort(dst[keep], stable=True).indices]
    counts = torch.bincount(dst[order], minlength=n)
    return list(np.split(order.numpy(), np.cumsum(counts.numpy())[:-1]))
