"""Per-operator costs of a captured graph: FLOPs, bytes moved, arithmetic intensity and time.

:func:`analyse` runs a :class:`~abyssal.nn.capture.CapturedGraph` node by node on each device
(an ``fx.Interpreter``), timing every operator (median over ``reps`` calls after ``warmup``, with
``torch.cuda.synchronize`` around each call on CUDA, so a kernel's launch and sync overhead is in
its time: what a small model pays), counting FLOPs with ``FlopCounterMode`` and bytes from tensor
sizes. :func:`transfer_cost` measures host <-> device copies. The placement cost model
(:mod:`abyssal.optimize.placement`) is built from both.

Example:
    >>> captured = capture(model, (x,))
    >>> report = analyse(captured, (x,), devices=("cpu",))
    >>> print(table(*report.table(top=10)))  # doctest: +SKIP
"""

from __future__ import annotations

import re
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import fx
from torch.utils._pytree import tree_flatten, tree_map_only
from torch.utils.flop_counter import FlopCounterMode

from abyssal.core.devices import resolve_device
from abyssal.core.errors import AbyssalError
from abyssal.nn.capture import CapturedGraph, is_inplace, move_to

CALLS = ("call_function", "call_method", "call_module")
"""Node kinds that are operators; placeholders, ``get_attr`` and the output are not."""

TOP_LEVEL = "(top level)"
"""The group of operators that no submodule owns."""


class AnalysisError(AbyssalError):
    """An operator could not be run or measured on the CPU."""


@dataclass
class TransferModel:
    """Host <-> device copy time: ``latency_ms + nbytes * ms_per_byte`` (zero for no bytes).

    Example:
        >>> TransferModel(latency_ms=0.01, ms_per_byte=1e-7).cost_ms(1_000_000)
        0.11
    """

    latency_ms: float
    ms_per_byte: float

    def cost_ms(self, nbytes: int) -> float:
        """Milliseconds to copy ``nbytes`` across; nothing to copy costs nothing."""
        return 0.0 if nbytes <= 0 else self.latency_ms + nbytes * self.ms_per_byte


@dataclass
class OpStats:
    """One graph node's measured costs.

    Attributes:
        name: the fx node name (what :func:`abyssal.nn.capture.place` takes).
        op: the operator, readable (``aten.conv2d``, ``Linear``, ``.relu()``, ``operator.add``).
        group: the owning module's path (``layer1.0.conv1``); ``""`` for none.
        flops: floating-point operations of one call.
        bytes: tensor bytes read plus written (0 for a view, which moves nothing).
        intensity: ``flops / bytes`` (0 without bytes).
        time_ms: median milliseconds per device (a device without it could not run the node).
        out_bytes: bytes of the tensors it outputs (what a transfer of its result copies).
        inputs: producer nodes of its tensor arguments.
        kind: the fx node kind: ``call_function``, ``call_method``, ``call_module``,
            ``placeholder``, ``get_attr`` or ``output``.
    """

    name: str
    op: str
    group: str
    flops: int
    bytes: int
    intensity: float
    time_ms: dict[str, float]
    out_bytes: int
    inputs: list[str]
    kind: str = "call_function"

    @property
    def is_op(self) -> bool:
        """Whether this node is an operator (not an input, parameter or the output)."""
        return self.kind in CALLS


@dataclass
class GroupStats:
    """Operators of one module added up: count, FLOPs, bytes and time per device."""

    group: str
    ops: int
    flops: int
    bytes: int
    time_ms: dict[str, float]


@dataclass
class GraphReport:
    """Every node of a captured graph with its costs, in graph (topological) order.

    Attributes:
        method: how the graph was captured (``export`` or ``fx``).
        note: the capture note.
        ops: one entry per node, operators and the inputs, parameters and output they connect.
        devices: the devices measured.
        whole_ms: median milliseconds of one whole forward per device.
    """

    method: str
    note: str
    ops: list[OpStats]
    devices: list[str]
    whole_ms: dict[str, float] = field(default_factory=dict)

    def operators(self) -> list[OpStats]:
        """Only the operator nodes."""
        return [o for o in self.ops if o.is_op]

    def table(self, top: int | None = None) -> tuple[list[str], list[list[Any]]]:
        """Headers and rows for :func:`abyssal.core.display.table`, slowest operators first.

        Args:
            top: keep only this many rows.

        Example:
            >>> print(table(*report.table(top=5)))  # doctest: +SKIP
        """
        first = self.devices[0]
        ops = sorted(self.operators(), key=lambda o: -o.time_ms.get(first, 0.0))[:top]
        headers = [
            "node",
            "op",
            "group",
            "MFLOP",
            "MB",
            "FLOP/B",
            *(f"{d} ms" for d in self.devices),
        ]
        rows = [
            [o.name, o.op, group_label(o.group), o.flops / 1e6, o.bytes / 1e6, o.intensity]
            + [o.time_ms.get(d, float("nan")) for d in self.devices]
            for o in ops
        ]
        return headers, rows

    def groups(self) -> list[GroupStats]:
        """Operators added up per owning module, in order of first appearance."""
        found: dict[str, GroupStats] = {}
        for o in self.operators():
            g = found.setdefault(
                o.group, GroupStats(o.group, 0, 0, 0, dict.fromkeys(o.time_ms, 0.0))
            )
            g.ops, g.flops, g.bytes = g.ops + 1, g.flops + o.flops, g.bytes + o.bytes
            for d, t in o.time_ms.items():
                g.time_ms[d] = g.time_ms.get(d, 0.0) + t
        return list(found.values())


def group_label(group: str) -> str:
    """A group as shown in tables: its path, or ``(top level)``."""
    return group or TOP_LEVEL


def analyse(
    captured: CapturedGraph,
    inputs: tuple[Any, ...],
    devices: Sequence[str] = ("cpu",),
    reps: int = 20,
    warmup: int = 3,
) -> GraphReport:
    """Measure every operator of ``captured`` on each device.

    The graph and inputs are copied to each device and run node by node; an operator that fails
    on a device other than the CPU runs on the CPU there instead and gets no time for that
    device (so placement keeps it on the CPU). FLOPs and bytes come from one extra pass on the
    first device. In-place operators are timed on copies of their inputs. Run it on a model in
    eval mode (a training-mode batch norm would update its statistics on every timed call).
    On a busy machine, thread contention shows in per-operator times: compare ``whole_ms``.

    Args:
        captured: the graph from :func:`abyssal.nn.capture.capture`.
        inputs: the positional inputs to run it with.
        devices: ``"cpu"``, ``"cuda"``, ``"cuda:N"``; the first also gives FLOPs and bytes.
        reps: timed calls per operator (the median is kept).
        warmup: untimed calls before them.

    Returns:
        The report.

    Raises:
        ConfigError: a device this machine lacks.
        AnalysisError: an operator fails on the CPU.

    Example:
        >>> report = analyse(capture(nn.Linear(4, 2), (x,)), (x,))
        >>> [o.flops for o in report.operators()]
        [48]
    """
    if not devices or reps < 1 or warmup < 0:
        raise AnalysisError(
            f"need devices, reps >= 1, warmup >= 0; got {devices}, {reps}, {warmup}"
        )
    keys = [d.strip().lower() for d in devices]
    runs = [
        _measure(captured.module, inputs, resolve_device(key), reps, warmup, count=i == 0)
        for i, key in enumerate(keys)
    ]
    ops = _merge(captured.module, keys, runs)
    whole = {k: _time_whole(captured.module, inputs, resolve_device(k), reps, warmup) for k in keys}
    return GraphReport(captured.method, captured.note, ops, keys, whole)


_NOT_OPS = ("placeholder", "get_attr", "output")


@dataclass
class _Run:
    """What one device's pass recorded, by node name."""

    time_ms: dict[str, float] = field(default_factory=dict)
    flops: dict[str, int] = field(default_factory=dict)
    bytes: dict[str, int] = field(default_factory=dict)
    out_bytes: dict[str, int] = field(default_factory=dict)
    tensors: set[str] = field(default_factory=set)


def _measure(
    gm: fx.GraphModule,
    inputs: tuple[Any, ...],
    device: torch.device,
    reps: int,
    warmup: int,
    count: bool,
) -> _Run:
    """One node-by-node pass of a copy of ``gm`` on ``device``."""
    module = on_device(gm, device)
    interpreter = _TimingInterpreter(module, device, reps, warmup, count)
    with torch.no_grad():
        # copies: an in-place operator on an input must not change the caller's tensors
        interpreter.run(*tree_map_only(torch.Tensor, torch.clone, move_to(inputs, device)))
    return interpreter.record


class _TimingInterpreter(fx.Interpreter):
    """Runs each operator ``warmup + reps`` times (timed), plus once counting FLOPs if asked."""

    def __init__(
        self, module: fx.GraphModule, device: torch.device, reps: int, warmup: int, count: bool
    ) -> None:
        super().__init__(module)
        self.device, self.reps, self.warmup, self.count = device, reps, warmup, count
        self.record = _Run()

    def run_node(self, n: fx.Node) -> Any:
        if n.op not in CALLS:
            value = super().run_node(n)
            self._note_value(n, value, value)
            return value
        with self._set_current_node(n):
            args, kwargs = self.fetch_args_kwargs_from_env(n)
            if n.op == "call_function" and "device" in kwargs:
                kwargs = {**kwargs, "device": self.device}  # a factory: make it here

            def call(a: tuple[Any, ...], k: dict[str, Any]) -> Any:
                return getattr(self, n.op)(n.target, a, k)

            try:
                value = self._timed(n, call, args, kwargs)
            except Exception as error:
                if self.device.type == "cpu":
                    raise AnalysisError(f"operator {n.name} ({n.target}) fails: {error}") from error
                value = self._on_cpu(n, call, args, kwargs)
        self._note_value(n, (args, kwargs), value)
        return value

    def _timed(self, n: fx.Node, call: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
        """Median time of ``call`` over ``reps``; the value comes from a last, untimed call."""
        mutates = is_inplace(n, self.module)
        fresh = (lambda: _clone(args, kwargs)) if mutates else (lambda: (args, kwargs))
        cuda = self.device.type == "cuda"
        times = []
        for i in range(self.warmup + self.reps):
            a, k = fresh()
            if cuda:
                torch.cuda.synchronize(self.device)
            start = time.perf_counter()
            call(a, k)
            if cuda:
                torch.cuda.synchronize(self.device)
            if i >= self.warmup:
                times.append((time.perf_counter() - start) * 1e3)
        self.record.time_ms[n.name] = statistics.median(times)
        if self.count:
            a, k = fresh()
            with FlopCounterMode(display=False) as counter:
                call(a, k)
            self.record.flops[n.name] = counter.get_total_flops()
        return call(args, kwargs)

    def _on_cpu(self, n: fx.Node, call: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
        """An operator this device cannot run: run it on the CPU, hand the result back here."""
        cpu = torch.device("cpu")
        try:
            return move_to(call(*move_to((args, kwargs), cpu)), self.device)
        except Exception as error:
            raise AnalysisError(
                f"operator {n.name} ({n.target}) fails on {self.device} and on the cpu: {error}"
            ) from error

    def _note_value(self, n: fx.Node, consumed: Any, value: Any) -> None:
        """Bytes read and written, output bytes, and whether the value holds tensors."""
        outs = _tensors(value)
        if outs:
            self.record.tensors.add(n.name)
        self.record.out_bytes[n.name] = sum(_nbytes(t) for t in outs)
        if n.op in CALLS:
            self.record.bytes[n.name] = _moved_bytes(
                _tensors(consumed), outs, is_inplace(n, self.module)
            )


def _clone(args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """Fresh copies of every tensor argument, so an in-place operator can be called again."""
    return tree_map_only(torch.Tensor, torch.clone, (args, kwargs))


def _tensors(value: Any) -> list[torch.Tensor]:
    """The distinct tensors in a pytree."""
    seen: dict[int, torch.Tensor] = {}
    for leaf in tree_flatten(value)[0]:
        if isinstance(leaf, torch.Tensor):
            seen.setdefault(id(leaf), leaf)
    return list(seen.values())


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def _storage(t: torch.Tensor) -> int | None:
    try:
        return t.untyped_storage().data_ptr()
    except (RuntimeError, NotImplementedError):
        return None


def _moved_bytes(ins: list[torch.Tensor], outs: list[torch.Tensor], mutates: bool) -> int:
    """Bytes read plus bytes written; a view (every output aliases an input) moves nothing."""
    read = sum(_nbytes(t) for t in ins)
    if mutates:
        return read + sum(_nbytes(t) for t in outs)
    storages = {_storage(t) for t in ins} - {None}
    fresh = [t for t in outs if _storage(t) not in storages]
    if outs and not fresh:
        return 0
    return read + sum(_nbytes(t) for t in fresh)


def _merge(gm: fx.GraphModule, keys: list[str], runs: list[_Run]) -> list[OpStats]:
    """One :class:`OpStats` per node from the devices' runs (sizes from the first)."""
    first = runs[0]
    stats = []
    for n in gm.graph.nodes:
        flops = first.flops.get(n.name, 0)
        moved = first.bytes.get(n.name, 0)
        times = {
            k: r.time_ms[n.name] for k, r in zip(keys, runs, strict=True) if n.name in r.time_ms
        }
        if n.op not in CALLS:
            times = dict.fromkeys(keys, 0.0)
        inputs = [a.name for a in n.all_input_nodes if a.name in first.tensors]
        stats.append(
            OpStats(
                name=n.name,
                op=_readable(n),
                group=_group(n),
                flops=flops,
                bytes=moved,
                intensity=flops / moved if moved else 0.0,
                time_ms=times,
                out_bytes=first.out_bytes.get(n.name, 0),
                inputs=list(dict.fromkeys(inputs)),
                kind=n.op,
            )
        )
    return stats


def _readable(n: fx.Node) -> str:
    """``aten.conv2d``, ``Linear``, ``.relu()``, ``operator.add``, or the node kind."""
    target = n.target
    if isinstance(target, torch._ops.OpOverload):
        namespace, _, name = target._schema.name.partition("::")
        return f"{namespace}.{name}"
    if n.op == "call_module":
        return type(n.graph.owning_module.get_submodule(str(target))).__name__
    if n.op == "call_method":
        return f".{target}()"
    if n.op == "call_function":
        return fx.node._get_qualified_name(target).replace("_operator.", "operator.")
    return n.op


_INDEX = re.compile(r"\[(\d+)\]")


def _group(n: fx.Node) -> str:
    """The innermost owning module's path, from ``nn_module_stack`` (export and fx record it)."""
    stack = n.meta.get("nn_module_stack")
    if stack:
        path = str(list(stack.values())[-1][0])
        path = path.replace("L['self'].", "").replace("L__self__", "")
        return _INDEX.sub(r".\1", path).strip(".")
    return str(n.target) if n.op == "call_module" else ""


def on_device(gm: fx.GraphModule, device: torch.device) -> fx.GraphModule:
    """A copy of ``gm`` wholly on ``device``, device arguments of factory calls (``arange``,
    ``full``, ...) included: an exported graph holds the device it was captured on."""
    from abyssal.nn.capture import place

    ops = {n.name: str(device) for n in gm.graph.nodes if n.op not in _NOT_OPS}
    return place(gm, ops, io_device=str(device))


def _time_whole(
    gm: fx.GraphModule, inputs: tuple[Any, ...], device: torch.device, reps: int, warmup: int
) -> float:
    """Median milliseconds of the whole graph's forward on ``device``."""
    module = on_device(gm, device)
    args = move_to(inputs, device)
    times = []
    with torch.no_grad():
        for i in range(warmup + reps):
            args_i = tree_map_only(torch.Tensor, torch.clone, args)
            _sync(device)
            start = time.perf_counter()
            module(*args_i)
            _sync(device)
            if i >= warmup:
                times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def transfer_cost(devices: Sequence[str], reps: int = 10) -> TransferModel | None:
    """Measure copies between the host and the first CUDA device in ``devices``.

    Copies of 4 KiB to 16 MiB from pageable host memory to the device and back are timed (median
    of ``reps``, synchronised) and fitted with a line: latency plus bytes over bandwidth.

    Args:
        devices: device names, e.g. ``("cpu", "cuda")``.
        reps: timed copies per size and direction.

    Returns:
        The fitted model, or ``None`` without a CUDA device (nothing to transfer to).

    Example:
        >>> transfer_cost(["cpu"]) is None
        True
    """
    cuda = [d for d in devices if d.strip().lower().startswith("cuda")]
    if not cuda or not torch.cuda.is_available():
        return None
    device = resolve_device(cuda[0])
    sizes, times = [], []
    for size in (1 << 12, 1 << 16, 1 << 20, 1 << 24):
        host = torch.empty(size, dtype=torch.uint8)
        there = host.to(device)
        for copy_once in (lambda h=host: h.to(device), lambda t=there: t.to("cpu")):
            sizes.append(size)
            times.append(_median_ms(copy_once, device, reps))
    slope, intercept = np.polyfit(np.array(sizes, float), np.array(times, float), 1)
    return TransferModel(latency_ms=max(float(intercept), 0.0), ms_per_byte=max(float(slope), 0.0))


def _median_ms(fn: Callable[[], Any], device: torch.device, reps: int) -> float:
    fn()
    times = []
    for _ in range(reps):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)
