"""Graph capture and node-level device placement of a model.

:func:`capture` turns a model into a ``torch.fx.GraphModule``: first with ``torch.export``
(non-strict: the model's Python runs on fake tensors, parameters become ``get_attr`` nodes and
operators are ATen ops such as ``aten.conv2d``), else with ``torch.fx.symbolic_trace`` (modules
stay ``call_module`` nodes). Either module is called with the model's positional inputs and gives
the model's outputs. :func:`place` rewrites a captured graph so that each operator runs on the
device a placement plan gave it, with copies where a tensor crosses devices.

Example:
    >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> captured = capture(model, (torch.randn(3, 4),))
    >>> captured.method
    'export'
    >>> placed = place(captured.module, {"relu": "cpu"})
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import operator
import re
import traceback
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import fx, nn
from torch.utils._pytree import tree_map_only

from abyssal.core.errors import AbyssalError
from abyssal.core.logs import quiet_loggers

_TORCH_DIR = str(Path(torch.__file__).parent)
_OPERATOR = re.compile(r"\baten\.[A-Za-z_]\w*(?:\.\w+)?|\b([A-Za-z_]\w*)::[A-Za-z_]\w*")
"""An operator named in an error: ``aten.nonzero.default``, ``mylib::scale``."""
_NOT_OPERATORS = {"c10", "at", "std", "torch", "caffe2"}  # C++ namespaces in stack traces
_REASON_CHARS = 240
_IO_OPS = ("placeholder", "output")
_NOISY_LOGGERS = ("torch.fx.experimental.symbolic_shapes", "torch._subclasses.fake_tensor")
_INPLACE_FUNCTIONS = {operator.iadd, operator.isub, operator.imul, operator.itruediv}


class CaptureError(AbyssalError):
    """Neither ``torch.export`` nor ``torch.fx`` could capture the model's graph."""


@dataclass
class CapturedGraph:
    """A model's graph as captured by :func:`capture`.

    Attributes:
        module: the graph; called with the model's positional inputs it gives the model's outputs.
        method: ``"export"`` (``torch.export``, ATen operators) or ``"fx"`` (symbolic tracing,
            modules kept as ``call_module`` nodes).
        note: how the graph was obtained, e.g. why export failed and fx was used.
    """

    module: fx.GraphModule
    method: Literal["export", "fx"]
    note: str


def capture(
    model: nn.Module,
    inputs: tuple[Any, ...],
    dynamic: Sequence[Mapping[int, str] | None] | None = None,
) -> CapturedGraph:
    """Capture ``model``'s forward as an fx graph: ``torch.export`` first, ``torch.fx`` else.

    Node names are deterministic: capturing the same model twice gives the same names. The
    export guard check (``_guards_fn``) is dropped, so the graph holds operators only.

    Args:
        model: the model; it is not modified.
        inputs: example positional inputs of ``model.forward``.
        dynamic: per input, a map from dimension index to axis name (``{0: "batch"}``) for
            dimensions that may change; equal names share one ``torch.export.Dim``. ``None``
            entries (and ``None`` inputs) are static.

    Returns:
        The captured graph, its method and a note.

    Raises:
        CaptureError: both failed; the message names the operator or source line that broke
            capture and both reasons.

    Example:
        >>> captured = capture(nn.Linear(4, 2), (torch.randn(3, 4),), dynamic=[{0: "batch"}])
        >>> captured.module(torch.randn(5, 4)).shape
        torch.Size([5, 2])
    """
    inputs = tuple(inputs)
    try:
        module = _export(model, inputs, _dynamic_shapes(inputs, dynamic))
        return CapturedGraph(module, "export", "torch.export (non-strict)")
    except Exception as export_error:  # any failure means: try fixed shapes, then fx
        if dynamic is not None:
            try:
                module = _export(model, inputs, None)
            except Exception:
                pass
            else:
                first = _first_line(export_error).split("! For more information")[0]
                why = ": ".join(p for p in (_culprit(export_error), first) if p)
                note = f"dynamic axes dropped ({why}); the graph holds these input shapes"
                return CapturedGraph(module, "export", note)
        try:
            traced = fx.symbolic_trace(model)
        except Exception as fx_error:
            raise CaptureError(_both_failed(model, export_error, fx_error)) from fx_error
        why = f"{_culprit(export_error)}: {_first_line(export_error)}"
        return CapturedGraph(traced, "fx", f"torch.export failed ({why}); torch.fx used")


def _dynamic_shapes(
    inputs: tuple[Any, ...], dynamic: Sequence[Mapping[int, str] | None] | None
) -> tuple[Any, ...] | None:
    """``torch.export`` dynamic shapes from axis names; one ``Dim`` per distinct name."""
    if dynamic is None:
        return None
    if len(dynamic) > len(inputs):
        raise CaptureError(f"dynamic has {len(dynamic)} entries for {len(inputs)} inputs")
    dims: dict[str, Any] = {}
    shapes: list[Any] = []
    for i, value in enumerate(inputs):
        axes = dynamic[i] if i < len(dynamic) else None
        if value is None or not axes:
            shapes.append(None)
            continue
        shapes.append(
            {d: dims.setdefault(name, torch.export.Dim(name)) for d, name in axes.items()}
        )
    return tuple(shapes)


def _export(model: nn.Module, inputs: tuple[Any, ...], shapes: Any) -> fx.GraphModule:
    """``torch.export`` (non-strict), unlifted to a module whose parameters are ``get_attr``."""
    with _quiet_export():
        program = torch.export.export(model, inputs, dynamic_shapes=shapes, strict=False)
    module = program.module()
    checks = (torch.ops.aten._assert_tensor_metadata.default,)
    for node in list(module.graph.nodes):  # input guards and metadata asserts are not operators
        if node.op == "call_module" and node.target == "_guards_fn" and not node.users:
            module.graph.erase_node(node)
            module.delete_submodule("_guards_fn")
        elif node.op == "call_function" and node.target in checks and not node.users:
            module.graph.erase_node(node)  # it pins a device and dtype: placement moves them
    module.graph.lint()
    module.recompile()
    return module


@contextlib.contextmanager
def _quiet_export() -> Iterator[None]:
    """Hide what a failing export prints (its partial graph, fake-tensor and symbol logs): the
    failure is reported in the capture note or error instead."""
    with (
        quiet_loggers(*_NOISY_LOGGERS, level=logging.CRITICAL),
        contextlib.redirect_stderr(io.StringIO()),
    ):
        yield


def _both_failed(model: nn.Module, export_error: BaseException, fx_error: BaseException) -> str:
    """One line naming what broke capture, then each method's reason."""
    culprits = [_culprit(export_error), _culprit(fx_error)]
    named = " and ".join(dict.fromkeys(c for c in culprits if c)) or "an unknown operator"
    return (
        f"cannot capture {type(model).__name__}: {named} broke both methods\n"
        f"  torch.export: {_first_line(export_error)}; torch.fx: {_first_line(fx_error)}"
    )


def _culprit(error: BaseException) -> str:
    """The operator an error names, else the user's source line that raised."""
    for found in _OPERATOR.finditer(str(error)):
        if found.group(1) not in _NOT_OPERATORS:
            return found.group(0)
    frames = [
        f
        for f in traceback.extract_tb(error.__traceback__)
        if not f.filename.startswith(_TORCH_DIR)
    ]
    frames = [f for f in frames if Path(f.filename).name != Path(__file__).name]
    if not frames:
        return ""
    last = frames[-1]
    return (
        f"`{(last.line or '').strip()}` in {last.name} ({Path(last.filename).name}:{last.lineno})"
    )


def _first_line(error: BaseException) -> str:
    """``Type: first line of the message``, cut to a readable length."""
    text = str(error).strip().splitlines()
    line = f"{type(error).__name__}: {text[0] if text else ''}".strip()
    return line if len(line) <= _REASON_CHARS else line[: _REASON_CHARS - 1] + "…"


def place(
    graph: fx.GraphModule, assignment: Mapping[str, str], io_device: str = "cpu"
) -> fx.GraphModule:
    """A copy of ``graph`` whose operators run on the devices of ``assignment``.

    Parameters and buffers (``get_attr``) move to their consumers' device (the most common one;
    other consumers get a copy each call); a tensor that crosses devices gets one copy node per
    producer and destination device; inputs arrive on ``io_device`` and outputs return to it.
    Module calls (fx graphs) move the called module. An in-place operator whose target is read
    again later (``x.add_(1); f(x)`` in an fx graph) runs where its target lives, whatever the
    assignment says: on a copy its write would be lost. Device strings go to ``torch.device`` as
    they are, so the rewrite can be inspected with ``"meta"`` on a machine without a GPU.

    Args:
        graph: a captured graph (export or fx).
        assignment: operator node name -> device (``"cpu"``, ``"cuda"``, ``"cuda:1"``); nodes not
            named stay on ``io_device``.
        io_device: where inputs come from and outputs go.

    Returns:
        The rewritten copy; ``graph`` is not changed.

    Raises:
        CaptureError: ``assignment`` names a node the graph lacks or a placeholder/output.

    Example:
        >>> placed = place(captured.module, {"linear": "cuda", "relu": "cuda"})  # doctest: +SKIP
        >>> placed(x).device
        device(type='cpu')
    """
    names = {n.name: n for n in graph.graph.nodes}
    unknown = sorted(set(assignment) - {k for k, n in names.items() if n.op not in _IO_OPS})
    if unknown:
        raise CaptureError(f"placement names nodes the graph lacks or cannot move: {unknown}")
    placed = copy.deepcopy(graph)
    io = torch.device(io_device)
    device = {
        n.name: torch.device(assignment.get(n.name, io_device))
        for n in placed.graph.nodes
        if n.op.startswith("call")
    }
    for node in placed.graph.nodes:
        if node.op == "placeholder":
            device[node.name] = io
    _place_attributes(placed, device, io)
    _keep_writes_in_place(placed, device, io)
    _place_modules(placed, device)
    _insert_copies(placed.graph, device, io)
    placed.graph.lint()
    placed.recompile()
    return placed


def move_to(value: Any, device: torch.device) -> Any:
    """``value`` with every tensor in it moved to ``device`` (ints, shapes and None unchanged)."""
    return tree_map_only(torch.Tensor, lambda t: t.to(device), value)


def _place_attributes(
    gm: fx.GraphModule, device: dict[str, torch.device], io: torch.device
) -> None:
    """Move each ``get_attr`` tensor to the device most of its consumers run on."""
    for node in gm.graph.nodes:
        if node.op != "get_attr":
            continue
        owner_path, _, name = str(node.target).rpartition(".")
        owner = gm.get_submodule(owner_path)
        value = getattr(owner, name)
        if not isinstance(value, torch.Tensor):
            continue  # a submodule (higher-order op body): nothing to move
        users = [device.get(u.name, io) for u in node.users if u.op != "output"]
        target = Counter(users).most_common(1)[0][0] if users else io
        moved = value.detach().to(target)
        if isinstance(value, nn.Parameter):
            setattr(owner, name, nn.Parameter(moved, requires_grad=value.requires_grad))
        elif name in owner._buffers:
            owner._buffers[name] = moved
        else:
            setattr(owner, name, moved)
        device[node.name] = target


def is_inplace(node: fx.Node, module: nn.Module | None = None) -> bool:
    """Whether ``node`` writes into an argument (``aten.relu_``, ``.add_()``, ``inplace=True``).

    Args:
        node: a graph node.
        module: the graph's module, to ask a called submodule for its ``inplace`` flag.
    """
    return bool(_written(node, module))


def _written(node: fx.Node, module: nn.Module | None = None) -> list[Any]:
    """The arguments an in-place operator writes into (schema-annotated for ATen operators)."""
    target = node.target
    if isinstance(target, torch._ops.OpOverload):
        written = []
        for i, arg in enumerate(target._schema.arguments):
            if arg.alias_info is not None and arg.alias_info.is_write:
                written.append(node.args[i] if i < len(node.args) else node.kwargs.get(arg.name))
        return written
    if not node.op.startswith("call") or not node.args:
        return []
    inplace = node.kwargs.get("inplace") is True or target in _INPLACE_FUNCTIONS
    if node.op == "call_module" and module is not None:
        inplace = inplace or bool(getattr(module.get_submodule(str(target)), "inplace", False))
    name = target if isinstance(target, str) else getattr(target, "__name__", "")
    inplace = inplace or (node.op != "call_module" and name.endswith("_") and name[-2:] != "__")
    return [node.args[0]] if inplace else []


def _keep_writes_in_place(
    gm: fx.GraphModule, device: dict[str, torch.device], io: torch.device
) -> None:
    """Run an in-place operator on its target's device when the target is read after it."""
    order = {n: i for i, n in enumerate(gm.graph.nodes)}
    for node in gm.graph.nodes:
        for target in _written(node, gm) if node.op.startswith("call") else []:
            if not isinstance(target, fx.Node):
                continue
            read_later = any(order[u] > order[node] for u in target.users if u is not node)
            if read_later and device.get(target.name, io) != device[node.name]:
                device[node.name] = device.get(target.name, io)


def _place_modules(gm: fx.GraphModule, device: dict[str, torch.device]) -> None:
    """Move each called submodule to its node's device; a module called on two gets a copy."""
    homes: dict[str, torch.device] = {}
    for node in gm.graph.nodes:
        if node.op != "call_module":
            continue
        target, dev = str(node.target), device[node.name]
        if target not in homes:
            homes[target] = dev
            gm.get_submodule(target).to(dev)
        elif homes[target] != dev:
            alias = f"{target.replace('.', '_')}_on_{dev.type}{dev.index or ''}"
            if alias not in dict(gm.named_children()):
                gm.add_submodule(alias, copy.deepcopy(gm.get_submodule(target)).to(dev))
            node.target = alias


def _insert_copies(graph: fx.Graph, device: dict[str, torch.device], io: torch.device) -> None:
    """One copy node per (producer, destination device) where a tensor crosses devices."""
    copies: dict[tuple[str, torch.device], fx.Node] = {}

    def on(arg: fx.Node, dest: torch.device, before: fx.Node) -> fx.Node:
        if device.get(arg.name, io) == dest or not _may_be_tensor(arg):
            return arg
        key = (arg.name, dest)
        if key not in copies:  # later consumers come after ``before``: they can reuse it
            with graph.inserting_before(before):
                copies[key] = _copy_node(graph, arg, dest)
            device[copies[key].name] = dest
        return copies[key]

    for node in list(graph.nodes):
        if node.op.startswith("call"):
            dest = device[node.name]
            node.args = fx.map_arg(node.args, lambda a, d=dest, n=node: on(a, d, n))
            node.kwargs = fx.map_arg(node.kwargs, lambda a, d=dest, n=node: on(a, d, n))
            if node.op == "call_function":
                _set_device(node, dest)  # a factory (zeros, arange) or a .to(device) lands here
        elif node.op == "output":
            node.args = fx.map_arg(node.args, lambda a, n=node: on(a, io, n))


def _set_device(node: fx.Node, dest: torch.device) -> None:
    """Point a ``device`` argument of ``node`` at ``dest``: an exported graph holds the device it
    was captured on in factories (``arange``, ``full``; keyword-only, and when left out the
    tensor is made on the CPU) and in ``aten.to.device`` (positional)."""
    if "device" in node.kwargs:
        node.update_kwarg("device", dest)
        return
    schema = getattr(node.target, "_schema", None)
    if schema is None:
        return
    for i, arg in enumerate(schema.arguments):
        if arg.name != "device":
            continue
        if arg.kwarg_only or i >= len(node.args):
            node.update_kwarg("device", dest)
        else:
            node.update_arg(i, dest)
        return


def _copy_node(graph: fx.Graph, arg: fx.Node, dest: torch.device) -> fx.Node:
    """``arg.to(dest)`` where ``arg`` is known to be a tensor, else :func:`move_to` (pytrees)."""
    if isinstance(arg.meta.get("val"), torch.Tensor):
        node = graph.call_method("to", (arg, dest))
    else:
        node = graph.call_function(move_to, (arg, dest))
    node.meta.update({k: v for k, v in arg.meta.items() if k in ("val", "tensor_meta")})
    return node


def _may_be_tensor(node: fx.Node) -> bool:
    """False for values export knows are not tensors (sizes, ints); fx graphs carry no type."""
    val = node.meta.get("val")
    if val is None:
        return True
    if isinstance(val, torch.Tensor):
        return True
    if isinstance(val, list | tuple):
        return any(isinstance(v, torch.Tensor) for v in val)
    return False
