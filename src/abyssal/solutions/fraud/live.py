"""Dynamic risk assessment: score each new transaction against the live graph as it arrives.

For every new transaction the scorer adds its edges, updates the temporal features of the touched
nodes (user, counterparty, device), and recomputes embeddings only where they changed: layer-0 for
the touched nodes, layer ``i`` for their ``i``-hop neighbourhood. Cached embeddings of every layer
but the last stay exact, so the scores it returns for the touched nodes and their neighbours are the
ones a full recomputation over the grown graph would give (a test checks that).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import chain

import numpy as np
import torch

from abyssal.core.errors import DataError
from abyssal.solutions.fraud.attention import AttentionView, SoftmaxSums, softmax_aggregate
from abyssal.solutions.fraud.dataset import GraphTensors
from abyssal.solutions.fraud.features import signed_log
from abyssal.solutions.fraud.graph import FraudGraph, edge_attributes
from abyssal.solutions.fraud.model import TemporalGAT


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
        model: a trained model (put in eval mode).
        graph: the history graph; it must have been built from events (it has ``activity``). The
            scorer takes it over and grows it.
        on_unknown_account: ``"error"`` (default) or ``"add"`` for a user never seen before.

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
        self.index = graph.node_index()
        self.keys = list(graph.node_keys)
        self.node_type = graph.node_type.tolist()
        t = GraphTensors.from_graph(graph)
        self.src, self.dst = _Rows(t.edge_index[0]), _Rows(t.edge_index[1])
        self.attr, self.etime = _Rows(t.edge_attr), _Rows(t.edge_time)
        self.x, self.last = _Rows(t.x), _Rows(t.last_time)
        self.orig = [
            graph.edge_src.tolist(),
            graph.edge_dst.tolist(),
            graph.edge_value.tolist(),
            graph.edge_time.tolist(),
            graph.edge_kind.tolist(),
        ]
        self.in_edges: list[list[int]] = [[] for _ in self.keys]
        self.out_edges: list[list[int]] = [[] for _ in self.keys]
        for e, (s, d) in enumerate(t.edge_index.t().tolist()):
            self.in_edges[d].append(e)
            self.out_edges[s].append(e)
        self.seen_devices = {
            (s, d)
            for s, d, k in zip(self.orig[0], self.orig[1], self.orig[4], strict=True)
            if k == 1
        }
        with torch.no_grad():
            hs = model.embed(t.x, t.edge_index, t.edge_attr, t.edge_dt())
        self.hs = [_Rows(h) for h in hs[:-1]]
        self.views = [AttentionView(conv) for conv in model.convs]
        self._in_arrays: dict[int, np.ndarray] = {}
        with torch.no_grad():  # per-edge inputs and per-node sender projections, kept current
            self.edge_in = _Rows(model.edge_inputs(t.edge_attr, t.edge_dt()))
            self.xs = [_Rows(v.senders(h.data)) for v, h in zip(self.views, self.hs, strict=True)]
        self.sums = [SoftmaxSums(len(self.keys), v.heads, v.channels) for v in self.views[:-1]]
        with torch.no_grad():
            every = torch.arange(len(self.keys))
            for i in range(len(self.sums)):
                eids, pos = self._edges_into(every.tolist())
                self._rebuild(i, every, eids, pos)
        self.risk = _Rows(torch.from_numpy(self.risks()))  # latest known risk of every node
        self.known_transactions: set[str] = (
            set(graph.transactions.ids.tolist()) if graph.transactions is not None else set()
        )

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
        nodes = list(range(len(self.keys))) if nodes is None else nodes
        with torch.no_grad():
            h_last = self._layer(len(self.hs) - 1, nodes)
        return self._node_risk(nodes, h_last)

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

    # -- internals ----------------------------------------------------------------------------

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
        self.in_edges.append([])
        self.out_edges.append([])
        self.x.append(torch.zeros(1, self.x.buf.shape[1]))
        self.last.append(torch.zeros(1, dtype=self.last.buf.dtype))
        for h in self.hs:
            h.append(torch.zeros(1, h.buf.shape[1]))
        for xs in self.xs:
            xs.append(torch.zeros(1, *xs.buf.shape[1:]))
        self.risk.append(torch.zeros(1, dtype=self.risk.buf.dtype))
        return node

    def _add_edge(self, s: int, d: int, value: float, t: int, kind: int) -> None:
        for lst, v in zip(self.orig, (s, d, value, t, kind), strict=True):
            lst.append(v)
        base = torch.from_numpy(
            edge_attributes(np.array([value]), np.array([kind]), len(self.graph.kinds))
        )
        e = self.src.n
        self.src.append(torch.tensor([s, d]))
        self.dst.append(torch.tensor([d, s]))
        self.attr.append(torch.cat([torch.cat([base, base]), torch.tensor([[0.0], [1.0]])], dim=1))
        self.etime.append(torch.tensor([t, t]))
        self.edge_in.append(torch.zeros(2, self.edge_in.buf.shape[1]))  # set by _refresh
        self.in_edges[d].append(e)
        self.in_edges[s].append(e + 1)
        self.out_edges[s].append(e)
        self.out_edges[d].append(e + 1)
        self._in_arrays.pop(s, None)
        self._in_arrays.pop(d, None)

    @torch.no_grad()
    def _refresh(self, touched: list[int]) -> tuple[list[int], torch.Tensor]:
        """Bring features and cached embeddings up to date after ``touched`` nodes changed.

        Layer-0 inputs change for the touched nodes; at each cached layer the receivers whose own
        input changed are recomputed from all their edges, and the other receivers of changed
        senders are updated by swapping those senders' terms in their softmax sums. Returns the
        nodes scored (touched, plus neighbours when rescoring the neighbourhood) and their final
        embeddings.
        """
        act = self.graph.activity
        touched = sorted(set(touched))
        idx = torch.tensor(touched)
        self.x.buf[idx] = torch.tensor([act.vector(n) for n in touched], dtype=torch.float32)
        self.last.buf[idx] = torch.tensor(
            [act.last_time(n) for n in touched], dtype=self.last.buf.dtype
        )
        eids, _ = self._edges_into(touched)  # their in-edges' ages changed with their last time
        self.edge_in.buf[eids] = self.model.edge_inputs(self.attr.buf[eids], self._dt(eids))
        changed, old = idx, self.hs[0].buf[idx].clone()
        self._set_rows(0, idx, self.model.encode(self.x.buf[idx]))
        for i in range(len(self.sums)):
            changed, old = self._update_layer(i, changed, old)
        scored = sorted(self._expand(set(touched))) if self.rescore_neighbourhood else touched
        return scored, self._layer(len(self.hs) - 1, scored)

    def _update_layer(
        self, i: int, changed: torch.Tensor, old: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Update layer ``i``'s sums and ``hs[i + 1]`` after ``hs[i]`` changed for ``changed``
        (whose previous rows are ``old``); returns the nodes whose ``hs[i + 1]`` changed."""
        view, sums, h = self.views[i], self.sums[i], self.hs[i].buf
        sums.grow(self.x.n)
        eids, dst = self._edges_into(changed.tolist())
        self._rebuild(i, changed, eids, dst)
        out_e = self._edges_from(changed.tolist())
        inside = torch.zeros(self.x.n, dtype=torch.bool)
        inside[changed] = True
        out_e = out_e[~inside[self.dst.buf[out_e]]]
        src, dst_nodes = self.src.buf[out_e], self.dst.buf[out_e]
        old_rows = old[torch.searchsorted(changed, src)] if len(out_e) else h[src]
        terms = view.edge_terms(self.edge_in.buf[out_e])
        xr = view.receivers(h[dst_nodes])
        xs_old, xs_new = view.senders(old_rows), self.xs[i].buf[src]
        sums.swap(
            dst_nodes,
            view.logits_from(xs_old, xr, terms),
            xs_old,
            view.logits_from(xs_new, xr, terms),
            xs_new,
        )
        receivers = torch.unique(torch.cat([changed, dst_nodes]))
        before = self.hs[i + 1].buf[receivers].clone()
        message = view.finish(sums.output(receivers))
        self._set_rows(i + 1, receivers, self.model.combine(i, h[receivers], message))
        return receivers, before

    def _set_rows(self, i: int, nodes: torch.Tensor, rows: torch.Tensor) -> None:
        """Set ``hs[i]`` rows of ``nodes`` and their sender projections for layer ``i``."""
        self.hs[i].buf[nodes] = rows
        self.xs[i].buf[nodes] = self.views[i].senders(rows)

    def _rebuild(
        self, i: int, nodes: torch.Tensor, eids: torch.Tensor, dst_pos: torch.Tensor
    ) -> None:
        logits, xs = self._edge_terms(i, nodes, eids, dst_pos)
        self.sums[i].rebuild(nodes, dst_pos, logits, xs)

    def _edge_terms(
        self, i: int, nodes: torch.Tensor, eids: torch.Tensor, dst_pos: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Attention logits (E, H) and sender values (E, H, C) of layer ``i`` for edges ``eids``
        into ``nodes`` (``dst_pos``: each edge's position in ``nodes``), from the caches."""
        view = self.views[i]
        xs = self.xs[i].buf.index_select(0, self.src.buf.index_select(0, eids))  # (E, H, C)
        xr = view.receivers(self.hs[i].buf.index_select(0, nodes)).index_select(0, dst_pos)
        terms = view.edge_terms(self.edge_in.buf.index_select(0, eids))
        return view.logits_from(xs, xr, terms), xs

    def _dt(self, eids: torch.Tensor) -> torch.Tensor:
        dt = self.last.buf[self.dst.buf[eids]] - self.etime.buf[eids]
        return dt.clamp_min(0).to(torch.float32)

    def _edges_into(self, nodes: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Ids of the edges into ``nodes`` (sorted list) and each edge's position in ``nodes``."""
        arrays = [self._in_array(n) for n in nodes]
        eids = (
            torch.from_numpy(np.concatenate(arrays)) if arrays else torch.zeros(0, dtype=torch.long)
        )
        pos = torch.repeat_interleave(
            torch.arange(len(nodes)), torch.tensor([len(a) for a in arrays], dtype=torch.long)
        )
        return eids, pos

    def _in_array(self, node: int) -> np.ndarray:
        arr = self._in_arrays.get(node)
        if arr is None:
            arr = self._in_arrays[node] = np.asarray(self.in_edges[node], dtype=np.int64)
        return arr

    def _edges_from(self, nodes: list[int]) -> torch.Tensor:
        lists = (self.out_edges[n] for n in nodes)
        return torch.from_numpy(np.fromiter(chain.from_iterable(lists), dtype=np.int64))

    def _expand(self, nodes: set[int]) -> set[int]:
        out = set(nodes)
        for n in nodes:
            out.update(self.dst.buf[self.out_edges[n]].tolist())
        return out

    def _layer(self, i: int, nodes: list[int]) -> torch.Tensor:
        """Layer ``i`` output for ``nodes`` (sorted) from the cached layer-``i`` embeddings."""
        eids, pos = self._edges_into(nodes)
        nodes_t = torch.tensor(nodes, dtype=torch.long)
        logits, xs = self._edge_terms(i, nodes_t, eids, pos)
        message = self.views[i].finish(softmax_aggregate(logits, xs, pos, len(nodes)))
        return self.model.combine(i, self.hs[i].buf[nodes_t], message)

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
