"""Which operators run on the accelerator and which on the CPU: an exact two-device optimum.

The cost model is additive: a plan costs the sum of its operators' measured times on their
devices plus one transfer (``latency + bytes * ms_per_byte``) for every producer whose output is
consumed on the other device (once per producer and device, however many consumers there). Its
optimum is a minimum s-t cut (Stone, "Multiprocessor Scheduling with the Aid of Network Flow
Algorithms", IEEE TSE 1977): source = CPU, sink = accelerator; an operator's CPU time is the
capacity of its edge to the sink and its accelerator time that of its edge from the source, so a
cut pays each operator on the side it lands. A transfer paid once per producer is exact with two
auxiliary vertices per producer: ``u -> a_T`` (the transfer) with ``a_T -> w`` infinite for every
consumer ``w``, so any consumer on the accelerator side pulls ``a_T`` there and cuts the transfer
once; ``w -> a_S -> u`` likewise for an accelerator-side producer. The cut is found with Dinic's
max-flow on integer capacities (nanoseconds); ties go to the CPU.

Nothing assumes the accelerator wins: an operator whose measured accelerator time (kernel launch
and synchronisation included) plus transfers exceeds its CPU time stays on the CPU.

Example:
    >>> cost = CostGraph.from_report(report, transfer_cost(["cpu", "cuda"]))  # doctest: +SKIP
    >>> plan = plan_placement(cost, accelerator="cuda")  # doctest: +SKIP
    >>> plan.summary()  # doctest: +SKIP
    'plan: 41 of 53 ops on cuda, predicted 1.9 ms vs 2.4 ms all-cuda and 9.7 ms all-cpu'
"""

from __future__ import annotations

import math
import re
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from abyssal.core.errors import AbyssalError
from abyssal.optimize.graph import GraphReport, TransferModel, group_label

HOST = "cpu"
"""The host device: model inputs come from it and outputs go back to it."""

IO_GROUP = "(inputs/outputs)"
"""The group of the graph's inputs and output in a plan's reasons."""

_SCALE = 1_000_000
"""Capacities are integer nanoseconds: exact max-flow arithmetic."""

_HEAVY = re.compile(r"conv|mm|matmul|linear|bmm|einsum|attention", re.IGNORECASE)


class PlacementError(AbyssalError):
    """A cost graph is inconsistent or has no feasible placement."""


@dataclass
class CostNode:
    """One vertex of the cost model.

    Attributes:
        name: the node name (an fx node name for graphs from a report).
        time_ms: milliseconds per device; a device it lacks cannot run it.
        out_bytes: bytes a transfer of its output copies (0: nothing to copy, e.g. a shape).
        inputs: names of the nodes whose outputs it consumes.
        pinned: the device it must run on (inputs and outputs: the host), or ``None``.
        group: the owning module, for reasons and tables.
        op: the operator, readable (``aten.conv2d``).
    """

    name: str
    time_ms: dict[str, float]
    out_bytes: int
    inputs: list[str]
    pinned: str | None = None
    group: str = ""
    op: str = ""


@dataclass
class CostGraph:
    """Operators with their times and edges, and the transfer model; builds by hand or from a
    :class:`~abyssal.optimize.graph.GraphReport`.

    Example:
        >>> cost = CostGraph(
        ...     [CostNode("x", {}, 400, [], pinned="cpu"), CostNode("mm", {"cpu": 2.0, "cuda": 0.1},
        ...      400, ["x"]), CostNode("out", {}, 0, ["mm"], pinned="cpu")],
        ...     TransferModel(latency_ms=0.01, ms_per_byte=1e-6),
        ... )
        >>> plan_placement(cost).assignment
        {'mm': 'cuda'}
    """

    nodes: list[CostNode]
    transfer: TransferModel | None
    io_device: str = HOST
    _index: dict[str, CostNode] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._index = {}
        for node in self.nodes:
            if node.name in self._index:
                raise PlacementError(f"cost graph has two nodes named '{node.name}'")
            self._index[node.name] = node
        for node in self.nodes:
            missing = [i for i in node.inputs if i not in self._index]
            if missing:
                raise PlacementError(f"node '{node.name}' consumes unknown nodes {missing}")

    @classmethod
    def from_report(
        cls, report: GraphReport, transfer: TransferModel | None, io_device: str = HOST
    ) -> CostGraph:
        """The cost graph of a measured graph: operators free, inputs and output pinned.

        Parameters (``get_attr``) are left out: placement moves them once, not per call.

        Args:
            report: from :func:`abyssal.optimize.graph.analyse`.
            transfer: from :func:`abyssal.optimize.graph.transfer_cost` (``None``: no accelerator).
            io_device: where inputs come from and outputs go.
        """
        params = {o.name for o in report.ops if o.kind == "get_attr"}
        nodes = []
        for o in report.ops:
            if o.kind == "get_attr":
                continue
            io = o.kind in ("placeholder", "output")
            nodes.append(
                CostNode(
                    name=o.name,
                    time_ms={io_device: 0.0} if io else dict(o.time_ms),
                    out_bytes=0 if o.kind == "output" else o.out_bytes,
                    inputs=[i for i in o.inputs if i not in params],
                    pinned=io_device if io else None,
                    group=IO_GROUP if io else o.group,
                    op=o.op,
                )
            )
        return cls(nodes, transfer, io_device)

    def node(self, name: str) -> CostNode:
        """The node called ``name``."""
        return self._index[name]

    def time(self, node: CostNode, device: str) -> float:
        """``node``'s milliseconds on ``device``: infinite where it cannot run, 0 where pinned
        without a time."""
        if device in node.time_ms:
            return node.time_ms[device]
        return 0.0 if node.pinned == device else math.inf

    def consumers(self) -> dict[str, list[str]]:
        """Producer name -> the names of the nodes consuming its output."""
        users: dict[str, list[str]] = {n.name: [] for n in self.nodes}
        for node in self.nodes:
            for i in dict.fromkeys(node.inputs):
                users[i].append(node.name)
        return users

    def cost_ms(self, assignment: Mapping[str, str]) -> float:
        """The model's milliseconds for a placement; unnamed nodes are on their pin or the host.

        Example:
            >>> cost.cost_ms({"mm": "cpu"})  # doctest: +SKIP
            2.0
        """
        where = self.devices(assignment)
        total = sum(self.time(n, where[n.name]) for n in self.nodes)
        for producer, users in self.consumers().items():
            other = {where[u] for u in users} - {where[producer]}
            if other:
                total += len(other) * self._transfer_ms(self.node(producer))
        return total

    def devices(self, assignment: Mapping[str, str]) -> dict[str, str]:
        """Every node's device under ``assignment`` (pins win)."""
        return {n.name: n.pinned or assignment.get(n.name, self.io_device) for n in self.nodes}

    def _transfer_ms(self, node: CostNode) -> float:
        if node.out_bytes <= 0:
            return 0.0
        if self.transfer is None:
            raise PlacementError("the cost graph has accelerator times but no transfer model")
        return self.transfer.cost_ms(node.out_bytes)


@dataclass
class PlacementPlan:
    """Where each operator runs, what the model predicts, and why.

    Attributes:
        assignment: operator name -> device (``"cpu"`` or the accelerator); pass it to
            :func:`abyssal.nn.capture.place`.
        predicted_ms: ``"cpu"`` (everything on the CPU), ``"accelerator"`` (everything that can,
            on the accelerator, input and output transfers counted; NaN without one) and
            ``"plan"``.
        reasons: per group (module path), why it runs where it does.
        accelerator: the accelerator's name, ``None`` on a machine without one.
        pinned: operators held on the CPU because the accelerator cannot run them.
    """

    assignment: dict[str, str]
    predicted_ms: dict[str, float]
    reasons: dict[str, str]
    accelerator: str | None
    pinned: list[str] = field(default_factory=list)

    def on_accelerator(self) -> int:
        """How many operators the plan puts on the accelerator."""
        return sum(1 for d in self.assignment.values() if d != HOST)

    def summary(self) -> str:
        """One line: how many operators go where, and the predicted times.

        Example:
            >>> cpu_only_plan(report).summary()  # doctest: +SKIP
            'no accelerator here: every operator stays on the CPU (predicted 9.7 ms)'
        """
        p = self.predicted_ms
        if self.accelerator is None:
            return (
                f"no accelerator here: every operator stays on the CPU (predicted {_ms(p['cpu'])})"
            )
        return (
            f"plan: {self.on_accelerator()} of {len(self.assignment)} ops on {self.accelerator}, "
            f"predicted {_ms(p['plan'])} vs {_ms(p['accelerator'])} all-{self.accelerator} "
            f"and {_ms(p['cpu'])} all-cpu"
        )

    def table(self, report: GraphReport) -> tuple[list[str], list[list[Any]]]:
        """Per group: operators, MFLOP, CPU and accelerator ms, device and reason.

        Example:
            >>> print(table(*plan.table(report)))  # doctest: +SKIP
        """
        accel = self.accelerator
        headers = ["group", "ops", "MFLOP", "cpu ms", f"{accel or 'accelerator'} ms", "device"]
        rows = []
        names = {o.name: o.group for o in report.operators()}
        for g in report.groups():
            members = [n for n, grp in names.items() if grp == g.group]
            label = group_label(g.group)
            times = [g.time_ms.get(HOST, math.nan), g.time_ms.get(accel or "", math.nan)]
            device = self._group_device(members)
            rows.append([label, g.ops, g.flops / 1e6, *times, device, self.reasons.get(label, "")])
        return [*headers, "reason"], rows

    def _group_device(self, members: list[str]) -> str:
        devices = [self.assignment.get(n, HOST) for n in members]
        on = sum(1 for d in devices if d != HOST)
        if on in (0, len(devices)):
            return devices[0] if devices else HOST
        return f"mixed ({on}/{len(devices)} on {self.accelerator})"


def plan_placement(cost: CostGraph, accelerator: str = "cuda") -> PlacementPlan:
    """The placement of least predicted time under the additive two-device model.

    Args:
        cost: the cost graph.
        accelerator: the accelerator's name in the nodes' ``time_ms`` (``"cuda"``; a key of the
            same device type, e.g. ``"cuda:0"``, is found too).

    Returns:
        The plan; without accelerator times anywhere, everything stays on the CPU.

    Raises:
        PlacementError: accelerator times without a transfer model, or no feasible placement.

    Example:
        >>> plan_placement(cost, "cuda").assignment  # doctest: +SKIP
        {'mm': 'cuda'}
    """
    key = _accelerator_key(cost, accelerator)
    if key is None:
        return _host_plan(cost)
    if cost.transfer is None:
        raise PlacementError("the cost graph has accelerator times but no transfer model")
    pinned = [n.name for n in cost.nodes if n.pinned is None and key not in n.time_ms]
    on_accel = _min_cut(cost, key)
    ops = [n for n in cost.nodes if n.pinned is None]
    assignment = {n.name: key if n.name in on_accel else HOST for n in ops}
    everything = {n.name: HOST if n.name in pinned else key for n in ops}
    predicted = {
        HOST: cost.cost_ms(dict.fromkeys(assignment, HOST)),
        "accelerator": cost.cost_ms(everything),
        "plan": cost.cost_ms(assignment),
    }
    reasons = _reasons(cost, assignment, key, set(pinned))
    return PlacementPlan(assignment, predicted, reasons, key, pinned)


def cpu_only_plan(report: GraphReport) -> PlacementPlan:
    """The plan for a machine without an accelerator: every operator on the CPU.

    Example:
        >>> cpu_only_plan(report).summary()  # doctest: +SKIP
        'no accelerator here: every operator stays on the CPU (predicted 9.7 ms)'
    """
    return _host_plan(CostGraph.from_report(report, None))


def _host_plan(cost: CostGraph) -> PlacementPlan:
    ops = [n for n in cost.nodes if n.pinned is None]
    total = cost.cost_ms({n.name: HOST for n in ops})
    reasons = {group_label(n.group): "no accelerator" for n in ops}
    return PlacementPlan(
        assignment={n.name: HOST for n in ops},
        predicted_ms={HOST: total, "accelerator": math.nan, "plan": total},
        reasons=reasons,
        accelerator=None,
    )


def _accelerator_key(cost: CostGraph, accelerator: str) -> str | None:
    """The ``time_ms`` key of ``accelerator``: itself, else one of the same device type."""
    keys = {k for n in cost.nodes for k in n.time_ms} - {HOST, cost.io_device}
    if accelerator in keys:
        return accelerator
    kind = accelerator.split(":")[0]
    same = sorted(k for k in keys if k.split(":")[0] == kind)
    return same[0] if same else None


def _min_cut(cost: CostGraph, accel: str) -> set[str]:
    """Names of the nodes on the accelerator side of a minimum cut (ties: CPU side)."""
    index = {n.name: 2 + i for i, n in enumerate(cost.nodes)}
    caps: list[tuple[int, int, float]] = []  # (from, to, ms); math.inf: must not be cut
    for n in cost.nodes:
        v = index[n.name]
        if n.pinned is not None or math.isinf(cost.time(n, accel)):
            if (n.pinned or HOST) == HOST:
                caps.append((0, v, math.inf))
            else:
                caps.append((v, 1, math.inf))
            continue
        caps += [(0, v, cost.time(n, accel)), (v, 1, cost.time(n, HOST))]
    extra = 2 + len(cost.nodes)
    for producer, users in cost.consumers().items():
        ms = cost._transfer_ms(cost.node(producer))
        if not users or ms <= 0:
            continue
        u = index[producer]
        if len(users) == 1:
            w = index[users[0]]
            caps += [(u, w, ms), (w, u, ms)]
            continue
        a_accel, a_host, extra = extra, extra + 1, extra + 2
        caps += [(u, a_accel, ms), (a_host, u, ms)]
        for user in users:
            caps += [(a_accel, index[user], math.inf), (index[user], a_host, math.inf)]
    network = _FlowNetwork(extra)
    finite = sum(round(c * _SCALE) for _, _, c in caps if not math.isinf(c))
    for a, b, c in caps:
        network.add(a, b, finite + 1 if math.isinf(c) else round(c * _SCALE))
    if network.max_flow(0, 1) > finite:
        raise PlacementError("no feasible placement: pinned nodes need an infinite transfer")
    sink_side = network.reaching(1)
    return {n.name for n in cost.nodes if index[n.name] in sink_side}


class _FlowNetwork:
    """Dinic's maximum flow (Dinic, Soviet Math. Doklady 1970) on integer capacities."""

    def __init__(self, size: int) -> None:
        self.adj: list[list[int]] = [[] for _ in range(size)]
        self.to: list[int] = []
        self.cap: list[int] = []

    def add(self, a: int, b: int, capacity: int) -> None:
        """An edge ``a -> b`` and its residual twin (edge ``e``'s twin is ``e ^ 1``)."""
        self.adj[a].append(len(self.to))
        self.to.append(b)
        self.cap.append(capacity)
        self.adj[b].append(len(self.to))
        self.to.append(a)
        self.cap.append(0)

    def max_flow(self, s: int, t: int) -> int:
        flow = 0
        while True:
            level = self._levels(s)
            if level[t] < 0:
                return flow
            next_edge = [0] * len(self.adj)
            while pushed := self._augment(s, t, level, next_edge):
                flow += pushed

    def _levels(self, s: int) -> list[int]:
        level = [-1] * len(self.adj)
        level[s] = 0
        queue = deque([s])
        while queue:
            v = queue.popleft()
            for e in self.adj[v]:
                if self.cap[e] > 0 and level[self.to[e]] < 0:
                    level[self.to[e]] = level[v] + 1
                    queue.append(self.to[e])
        return level

    def _augment(self, s: int, t: int, level: list[int], next_edge: list[int]) -> int:
        """Push flow along one shortest augmenting path (iterative DFS); 0 when none is left."""
        path: list[int] = []
        v = s
        while v != t:
            edges = self.adj[v]
            while next_edge[v] < len(edges):
                e = edges[next_edge[v]]
                if self.cap[e] > 0 and level[self.to[e]] == level[v] + 1:
                    break
                next_edge[v] += 1
            else:  # dead end: retreat
                if v == s:
                    return 0
                level[v] = -1
                v = self.to[path.pop() ^ 1]
                next_edge[v] += 1
                continue
            path.append(edges[next_edge[v]])
            v = self.to[path[-1]]
        pushed = min(self.cap[e] for e in path)
        for e in path:
            self.cap[e] -= pushed
            self.cap[e ^ 1] += pushed
        return pushed

    def reaching(self, t: int) -> set[int]:
        """Vertices with a residual path to ``t``: the smallest sink side of a minimum cut."""
        seen = {t}
        queue = deque([t])
        while queue:
            w = queue.popleft()
            for e in self.adj[w]:  # e: w -> v; its twin v -> w has residual cap[e ^ 1]
                v = self.to[e]
                if v not in seen and self.cap[e ^ 1] > 0:
                    seen.add(v)
                    queue.append(v)
        return seen


def _reasons(
    cost: CostGraph, assignment: dict[str, str], accel: str, pinned: set[str]
) -> dict[str, str]:
    """Why each group runs where it does, from the plan and what flipping the group would cost."""
    groups: dict[str, list[CostNode]] = {}
    for n in cost.nodes:
        if n.pinned is None:
            groups.setdefault(group_label(n.group), []).append(n)
    plan_ms = cost.cost_ms(assignment)
    reasons = {IO_GROUP: f"pinned to {cost.io_device}: the model's inputs and outputs live there"}
    for label, nodes in groups.items():
        cpu_ms = sum(cost.time(n, HOST) for n in nodes)
        acc_ms = sum(cost.time(n, accel) for n in nodes)
        on = [n for n in nodes if assignment[n.name] == accel]
        stuck = [n for n in nodes if n.name in pinned]
        if stuck and not on:
            reasons[label] = f"no {accel} kernel for {stuck[0].op or stuck[0].name}: pinned to cpu"
        elif on and len(on) < len(nodes):
            reasons[label] = (
                f"split: {len(on)} of {len(nodes)} ops on {accel} "
                f"({_ms(cpu_ms)} on cpu vs {_ms(acc_ms)} on {accel} in all)"
            )
        else:
            dest = HOST if on else accel
            flipped = {**assignment, **{n.name: dest for n in nodes}}
            delta = cost.cost_ms(flipped) - plan_ms  # >= 0: the plan is optimal
            reasons[label] = _why(bool(on), cpu_ms, acc_ms, delta, accel, nodes)
    return reasons


def _why(
    on_accel: bool, cpu_ms: float, acc_ms: float, delta: float, accel: str, nodes: list[CostNode]
) -> str:
    """A reason for a group placed whole: which side is faster, or whose transfers decided."""
    times = f"{_ms(cpu_ms)} on cpu vs {_ms(acc_ms)} on {accel}"
    if on_accel and acc_ms < cpu_ms:
        heavy = any(_HEAVY.search(n.op or "") for n in nodes)
        return f"{'conv/matmul heavy' if heavy else f'faster on {accel}'}: {times}"
    if on_accel:  # slower there, but moving it back would cost more in transfers
        transfers = delta + (acc_ms - cpu_ms)
        return f"on {accel} to avoid {_ms(transfers)} of transfers ({times})"
    if acc_ms >= cpu_ms:
        return f"faster on cpu: {times} (launch and sync overhead)"
    saving = cpu_ms - acc_ms
    return f"stays on cpu: transfer {_ms(delta + saving)} exceeds saving {_ms(saving)}"


def _ms(value: float) -> str:
    if math.isnan(value):
        return "n/a"
    if math.isinf(value):
        return "inf ms"
    return f"{value:.3g} ms"
