"""Neighbour-sampled mini-batches: the computation subgraph of a batch of seeds, time respected.

A ``layers``-deep model's output at a node depends only on the node's in-edges, its senders'
in-edges, and so on ``layers`` hops back. With ``model.neighbour_cap`` K the model itself
attends only to each receiver's K most recent in-edges per (kind, direction) group
(:func:`~abyssal.nn.recent_edges.recent_edge_mask`), so the subgraph that holds exactly those
edges for the seeds and their ``layers - 1``-hop senders gives the seeds the very scores the
whole graph gives them (as GraphSAGE's and TGAT's samplers build computation graphs, but
deterministic: the kept edges are the K most recent, not a random draw). Without a cap,
``sampling.fanout`` bounds the edges per receiver and group the same way (then scores are
approximations), or every in-edge is taken.

**Time.** An account is scored on the whole graph (its features and edges up to the end of the
data), as full-graph training and :func:`~abyssal.solutions.fraud.solution.score_graph` do. A
labelled transaction is scored *as of itself*: each node of its computation tree is a (node,
step) pair whose features, latest time (so edge ages) and in-edges are those after the
transactions ``0..step`` (its own row included, later rows excluded, even at the same second),
what the live scorer sees when it scores that transaction. Full-graph training instead scores
every transaction from embeddings of the whole graph, later events included.

Everything is vectorised with numpy: no Python loop per node or edge.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from abyssal.contracts.task import Shard
from abyssal.solutions.fraud.dataset import GraphTensors
from abyssal.solutions.fraud.features import EventLog


@dataclass
class Subgraph:
    """A batch's computation subgraph.

    Attributes:
        graph: its model inputs (rows are subgraph nodes; ``last_time`` as of each row's step).
        node: (n,) graph node of each row; step: (n,) its step (``end``: the whole graph).
        seeds: (s,) the row of each requested (node, step) seed, in request order.
    """

    graph: GraphTensors
    node: np.ndarray
    step: np.ndarray
    seeds: np.ndarray


class NeighbourSampler:
    """Builds the exact computation subgraph of seed nodes (see the module docstring).

    Args:
        graph: the whole graph's tensors.
        edge_kind: (E,) kind of each original edge (``FraudGraph.edge_kind``).
        num_kinds: number of edge kinds.
        layers: message-passing rounds of the model.
        limit: in-edges kept per receiver and group (``model.neighbour_cap``, else
            ``sampling.fanout``); ``None``: all.
        edge_step: (E,) the step (transaction row) each original edge arrives with; ``None``
            for graphs without steps (then only whole-graph seeds).
        log: the graph's event log, for features as of a step (needed with ``edge_step``).

    Shapes:
        graph.edge_index (2, 2E): the first E columns are the original edges, the rest reversed.
    """

    def __init__(
        self,
        graph: GraphTensors,
        edge_kind: np.ndarray,
        num_kinds: int,
        layers: int,
        limit: int | None,
        edge_step: np.ndarray | None = None,
        log: EventLog | None = None,
    ) -> None:
        self.graph, self.layers, self.limit, self.log = graph, layers, limit, log
        self.groups = 2 * num_kinds
        src, dst = graph.edge_index.numpy()
        self.src = src
        kind = np.asarray(edge_kind, dtype=np.int64)
        group = np.concatenate([2 * kind, 2 * kind + 1])  # as model.edge_groups: kind, direction
        seg = dst * self.groups + group  # (2E,) receiver and group
        time = graph.edge_time.numpy()
        if _non_decreasing(time[: len(kind)]):  # transaction graphs: edges are in time order
            self.perm = np.argsort(seg, kind="stable")
        else:  # by receiver and group, then time, then position (later wins a tie)
            self.perm = np.lexsort((np.arange(len(seg)), time, seg))
        counts = np.bincount(seg, minlength=graph.x.shape[0] * self.groups)
        self.ptr = np.concatenate([[0], np.cumsum(counts)])  # (N*G + 1,)
        self.end = int(edge_step.max()) + 1 if edge_step is not None and len(edge_step) else 0
        self.span = self.end + 1  # pair key = node * span + step; step == end: whole graph
        self.step_key = None
        if edge_step is not None:
            step = np.concatenate([edge_step, edge_step]).astype(np.int64)[self.perm]
            self.step_key = seg[self.perm] * self.span + step  # sorted: steps grow with time

    def subgraph(self, nodes: np.ndarray, steps: np.ndarray | None = None) -> Subgraph:
        """The subgraph that scores ``nodes`` (each as of ``steps``; ``None``: the whole graph).

        Shapes:
            nodes: (s,) int; steps: (s,) int or None.
        """
        nodes = np.asarray(nodes, dtype=np.int64)
        steps = np.full(len(nodes), self.end) if steps is None else np.asarray(steps, np.int64)
        seed_keys = nodes * self.span + steps
        frontier, done = np.unique(seed_keys), np.empty(0, np.int64)
        src_keys, dst_keys, edges = [], [], []
        for _ in range(self.layers):
            s, d, e = self._in_edges(frontier)
            src_keys.append(s), dst_keys.append(d), edges.append(e)
            done = np.union1d(done, frontier)
            frontier = np.setdiff1d(np.unique(s), done, assume_unique=True)
        src_k, dst_k, eid = (np.concatenate(p) for p in (src_keys, dst_keys, edges))
        keys = np.unique(np.concatenate([seed_keys, src_k, dst_k]))
        return self._tensors(keys, src_k, dst_k, eid, np.searchsorted(keys, seed_keys))

    def _in_edges(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Kept in-edges of the (node, step) ``keys``: sender keys, receiver keys, edge ids."""
        node, step = np.divmod(keys, self.span)
        seg = (node[:, None] * self.groups + np.arange(self.groups)).ravel()  # (m*G,)
        step = np.repeat(step, self.groups)
        lo, hi = self.ptr[seg], self.ptr[seg + 1]
        if self.step_key is not None:  # only edges that had arrived by the step
            cut = np.searchsorted(self.step_key, seg * self.span + step, side="right")
            hi = np.where(step >= self.end, hi, np.minimum(hi, cut))
        if self.limit is not None:  # the most recent ones
            lo = np.maximum(lo, hi - self.limit)
        count = np.maximum(hi - lo, 0)
        total = int(count.sum())
        offsets = np.repeat(lo - (np.cumsum(count) - count), count)
        eid = self.perm[offsets + np.arange(total)]  # (total,)
        receiver = np.repeat(keys.repeat(self.groups), count)
        sender = self.src[eid] * self.span + np.repeat(step, count)
        return sender, receiver, eid

    def _tensors(
        self, keys: np.ndarray, src_k: np.ndarray, dst_k: np.ndarray, eid: np.ndarray, seeds
    ) -> Subgraph:
        g = self.graph
        node, step = np.divmod(keys, self.span)
        whole = step >= self.end
        x = g.x[torch.from_numpy(node)]  # (n, F)
        last = g.last_time[torch.from_numpy(node)].clone()  # (n,)
        if not whole.all():  # rows as of a step: features and latest time from the log
            part = np.flatnonzero(~whole)
            if self.log is None:
                raise ValueError("scoring as of a step needs the graph's event log")
            x[part] = torch.from_numpy(self.log.features(node[part], step[part], exact=False))
            last[part] = torch.from_numpy(self.log.last_time(node[part], step[part]))
        e = torch.from_numpy(eid)
        ei = torch.from_numpy(
            np.stack([np.searchsorted(keys, src_k), np.searchsorted(keys, dst_k)])
        )
        sub = GraphTensors(x, ei, g.edge_attr[e], g.edge_time[e], last)
        return Subgraph(sub, node, step, seeds)


def _non_decreasing(values: np.ndarray) -> bool:
    return bool(len(values) < 2 or (np.diff(values) >= 0).all())


def transaction_edge_steps(edge_kind: np.ndarray) -> np.ndarray:
    """(E,) the transaction row of each edge of a transaction graph: edges come in row order, a
    transaction's edge first (kind 0), then its device edge (kind 1) when the pair is new.

    Example:
        >>> transaction_edge_steps(np.array([0, 1, 0, 0, 1])).tolist()
        [0, 0, 1, 2, 2]
    """
    return np.cumsum(np.asarray(edge_kind) == 0) - 1


def balanced_parts(rows: np.ndarray, total: int, shard: Shard, size: int) -> list[np.ndarray]:
    """Cut this rank's ``rows`` into as many parts (of at most about ``size``) as every rank
    cuts its own, so ranks step in lockstep (``total``: rows over all ranks).

    Example:
        >>> [len(p) for p in balanced_parts(np.arange(5), 11, Shard(1, 2), 4)]
        [3, 2]
    """
    largest = math.ceil(max(0, total - shard.offset) / shard.world_size)  # past a resumed part
    return np.array_split(rows, max(1, math.ceil(largest / size)))


def deal(rows: np.ndarray, parts: int, per_part: int | None) -> list[np.ndarray]:
    """``rows`` over ``parts`` batches: evenly (``per_part`` None), else ``per_part`` each in
    order, the rest left out of this epoch (later batches may get fewer, or none).

    Example:
        >>> [p.tolist() for p in deal(np.arange(5), 2, 2)]
        [[0, 1], [2, 3]]
    """
    if per_part is None:
        return np.array_split(rows, parts)
    return [rows[i * per_part : (i + 1) * per_part] for i in range(parts)]


class LazyBatches:
    """Batches built one at a time as they are iterated; ``len`` without building any.

    Args:
        parts: what each batch is made of (e.g. seed accounts and transaction rows).
        build: makes one batch from one part.
    """

    def __init__(self, parts: list, build: Callable) -> None:
        self.parts, self.build = parts, build

    def __len__(self) -> int:
        return len(self.parts)

    def __iter__(self) -> Iterator:
        return (self.build(*part) for part in self.parts)
