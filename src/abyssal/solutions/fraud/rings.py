"""Gang detection: group high-risk accounts into rings and say what ties each ring together.

Accounts whose risk is at or above a threshold are joined when they share a device or move money (or
ratings) directly between them; each connected group of at least ``min_size`` accounts is a ring.
Within a ring, strongly connected groups of the directed money flow are reported as circular flows.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from abyssal.core.optional import require
from abyssal.solutions.fraud.graph import FraudGraph


@dataclass
class Ring:
    """One suspected ring and its evidence."""

    ring_id: int
    members: list[str]
    mean_risk: float
    total_amount: float
    internal_amount: float
    internal_edges: int
    shared_devices: dict[str, list[str]] = field(default_factory=dict)
    circular_flows: list[list[str]] = field(default_factory=list)
    first_seen: int = 0
    last_seen: int = 0

    @property
    def size(self) -> int:
        return len(self.members)

    def evidence(self) -> list[str]:
        """Human-readable lines on what ties the ring together."""
        lines = [
            f"device {d} used by {len(m)} members ({', '.join(m)})"
            for d, m in self.shared_devices.items()
        ]
        if self.internal_edges:
            lines.append(
                f"{self.internal_edges} transactions between members, "
                f"{self.internal_amount:,.2f} in total"
            )
        lines += [f"circular flow {' -> '.join([*c, c[0]])}" for c in self.circular_flows]
        return lines

    def to_dict(self) -> dict:
        return {**asdict(self), "size": self.size, "evidence": self.evidence()}


def find_rings(
    graph: FraudGraph, risk: np.ndarray, min_risk: float, min_size: int = 2
) -> list[Ring]:
    """Rings among accounts with ``risk >= min_risk``.

    Args:
        graph: the graph the risks belong to.
        risk: (N,) risk in [0, 1] per node.
        min_risk: threshold for an account to be a candidate.
        min_size: smallest ring reported.

    Returns:
        Rings, largest total risk (size x mean risk) first.
    """
    candidate = (graph.node_type == 0) & (risk >= min_risk)
    parent = np.arange(graph.num_nodes)
    for a, b in _ties(graph, candidate):
        _union(parent, a, b)
    roots = np.array([_find(parent, i) for i in range(graph.num_nodes)])
    groups: dict[int, list[int]] = {}
    for node in np.flatnonzero(candidate).tolist():
        groups.setdefault(int(roots[node]), []).append(node)
    members = [g for g in groups.values() if len(g) >= min_size]
    rings = [_describe(graph, risk, m, i) for i, m in enumerate(members)]
    rings.sort(key=lambda r: -r.size * r.mean_risk)
    for i, ring in enumerate(rings, start=1):
        ring.ring_id = i
    return rings


def _ties(graph: FraudGraph, candidate: np.ndarray) -> list[tuple[int, int]]:
    src, dst = graph.edge_src, graph.edge_dst
    both = candidate[src] & candidate[dst]
    ties = list(zip(src[both].tolist(), dst[both].tolist(), strict=True))
    if "device" in graph.node_types:
        dev_type = graph.node_types.index("device")
        to_dev = candidate[src] & (graph.node_type[dst] == dev_type)
        first: dict[int, int] = {}
        for user, device in zip(src[to_dev].tolist(), dst[to_dev].tolist(), strict=True):
            ties.append((first.setdefault(device, user), user))
    return ties


def _describe(graph: FraudGraph, risk: np.ndarray, nodes: list[int], ring_id: int) -> Ring:
    ids = [graph.node_keys[n][1] for n in nodes]
    inside = np.zeros(graph.num_nodes, dtype=bool)
    inside[nodes] = True
    src, dst = graph.edge_src, graph.edge_dst
    by_member = inside[src] & (graph.edge_kind == 0)
    internal = by_member & inside[dst]
    times = graph.edge_time[inside[src] | inside[dst]]
    return Ring(
        ring_id=ring_id,
        members=ids,
        mean_risk=float(risk[nodes].mean()),
        total_amount=float(np.abs(graph.edge_value[by_member]).sum()),
        internal_amount=float(np.abs(graph.edge_value[internal]).sum()),
        internal_edges=int(internal.sum()),
        shared_devices=_shared_devices(graph, inside),
        circular_flows=_cycles(graph, nodes, internal),
        first_seen=int(times.min()) if len(times) else 0,
        last_seen=int(times.max()) if len(times) else 0,
    )


def _shared_devices(graph: FraudGraph, inside: np.ndarray) -> dict[str, list[str]]:
    if "device" not in graph.node_types:
        return {}
    dev_type = graph.node_types.index("device")
    sel = inside[graph.edge_src] & (graph.node_type[graph.edge_dst] == dev_type)
    users: dict[str, list[str]] = {}
    for u, d in zip(graph.edge_src[sel].tolist(), graph.edge_dst[sel].tolist(), strict=True):
        users.setdefault(graph.node_keys[d][1], []).append(graph.node_keys[u][1])
    return {d: sorted(set(m)) for d, m in users.items() if len(set(m)) >= 2}


def _cycles(graph: FraudGraph, nodes: list[int], internal: np.ndarray) -> list[list[str]]:
    csgraph = require("scipy.sparse.csgraph", extra="fraud", purpose="ring cycles")
    sparse = require("scipy.sparse", extra="fraud", purpose="ring cycles")
    local = {n: i for i, n in enumerate(nodes)}
    s = [local[n] for n in graph.edge_src[internal].tolist()]
    d = [local[n] for n in graph.edge_dst[internal].tolist()]
    if not s:
        return []
    adj = sparse.coo_matrix((np.ones(len(s)), (s, d)), shape=(len(nodes), len(nodes)))
    _, labels = csgraph.connected_components(adj, directed=True, connection="strong")
    groups = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    return [[graph.node_keys[nodes[i]][1] for i in g] for g in groups if len(g) >= 2]


def _find(parent: np.ndarray, i: int) -> int:
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = int(parent[i])
    return i


def _union(parent: np.ndarray, a: int, b: int) -> None:
    ra, rb = _find(parent, a), _find(parent, b)
    if ra != rb:
        parent[max(ra, rb)] = min(ra, rb)
