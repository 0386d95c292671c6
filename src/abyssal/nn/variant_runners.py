"""How optimized variants run: CUDA graph replay, half-precision casts, ONNX Runtime sessions
and Dynamo's dynamic axes, each a callable taking ``forward``'s arguments.

:mod:`abyssal.nn.variants` builds them from a version's recipe and files; they are usable alone.

Example:
    >>> run = OnnxRunner("model.onnx")  # doctest: +SKIP
    >>> run(torch.randn(7, 16)).shape  # doctest: +SKIP
    torch.Size([7, 2])
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.utils._pytree as pytree
from torch import nn

from abyssal.core.errors import AbyssalError
from abyssal.core.optional import require

MAX_CUDA_GRAPHS = 8
"""How many captured CUDA graphs (one per input signature) a :class:`CudaGraphRunner` keeps; the
least recently used one is dropped (its memory pool freed) when a new signature needs room."""

WARMUP_CALLS = 3
"""Eager calls on a side stream before a CUDA graph is captured (cuBLAS handles, lazy init)."""

_ORT_NUMPY = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
}


class VariantError(AbyssalError):
    """An optimized variant cannot be built or run here (unknown method, wrong device, bad recipe
    or files, a forward that cannot be captured)."""


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


class DynamicAxesRunner:
    """Call ``fn`` after marking the varying axes of the tensor inputs dynamic for Dynamo, so a new
    batch size (or node count) reuses the compiled graph instead of recompiling.

    Axes come from ``input_axes`` (every named axis: ``batch``, ``nodes``, ``edges``); without
    them axis 0 of every tensor input is marked. Marking is a hint
    (``torch._dynamo.maybe_mark_dynamic``): a size-1 axis is still specialised by Dynamo, so a
    first call at batch 1 compiles once more at the first larger batch.

    Example:
        >>> run = DynamicAxesRunner(torch.compile(model), ({0: "batch"},))  # doctest: +SKIP
    """

    def __init__(self, fn: Callable[..., Any], input_axes: Sequence[Mapping[int, str]] | None):
        self.fn = fn
        self.input_axes = None if input_axes is None else [dict(a or {}) for a in input_axes]

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        import torch._dynamo

        for i, arg in enumerate(args):
            if isinstance(arg, torch.Tensor) and arg.dim() > 0:
                for axis in self._axes(i):
                    if -arg.dim() <= axis < arg.dim():
                        torch._dynamo.maybe_mark_dynamic(arg, axis % arg.dim())
        return self.fn(*args, **kwargs)

    def _axes(self, position: int) -> list[int]:
        if self.input_axes is None:
            return [0]
        return list(self.input_axes[position]) if position < len(self.input_axes) else []


# ---------------------------------------------------------------- CUDA graphs and half precision


def _cast_floats(tree: Any, dtype: torch.dtype) -> Any:
    return pytree.tree_map(
        lambda t: t.to(dtype) if isinstance(t, torch.Tensor) and t.is_floating_point() else t,
        tree,
    )


class LowPrecisionRunner:
    """Run ``model`` (already cast to ``dtype``) on floating inputs cast to ``dtype``; floating
    outputs come back as float32.

    Example:
        >>> run = LowPrecisionRunner(model.to(torch.bfloat16), torch.bfloat16)  # doctest: +SKIP
    """

    def __init__(self, model: nn.Module, dtype: torch.dtype) -> None:
        self.model, self.dtype = model, dtype

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        args, kwargs = _cast_floats((args, kwargs), self.dtype)
        return _cast_floats(self.model(*args, **kwargs), torch.float32)


@dataclass
class _CapturedGraph:
    graph: Any  # torch.cuda.CUDAGraph
    inputs: list[Any]  # static input buffers (tensors) or the constants they stand for
    outputs: list[Any]
    out_spec: Any


class CudaGraphRunner:
    """Whole-model CUDA graphs of an eager, inference-only forward: one graph per input signature.

    A call's tensors are copied into the static input buffers of the graph captured for their
    shapes, dtypes and devices (and the values of non-tensor arguments), the graph is replayed,
    and clones of its static outputs are returned. A new signature is captured after
    :data:`WARMUP_CALLS` eager calls on a side stream; at most ``max_graphs`` graphs are kept, the
    least recently used one is dropped. Calls are serialised by a lock (the buffers are shared).
    With a half ``dtype`` floating inputs are cast in and floating outputs cast back to float32.

    Args:
        model: the eager model on a CUDA device, already in ``dtype``.
        device: that device.
        dtype: the compute dtype of floating tensors.
        max_graphs: the cache size.

    Raises:
        VariantError: (on a call) the forward cannot be captured: it synchronises with the CPU
            (``.item()``, ``.cpu()``, ``nonzero``, data-dependent shapes).

    Example:
        >>> run = CudaGraphRunner(model.cuda().eval(), torch.device("cuda"))  # doctest: +SKIP
        >>> run(torch.randn(8, 16, device="cuda")).shape  # doctest: +SKIP
        torch.Size([8, 2])
    """

    def __init__(
        self,
        model: nn.Module,
        device: torch.device,
        dtype: torch.dtype = torch.float32,
        max_graphs: int = MAX_CUDA_GRAPHS,
    ) -> None:
        self.model, self.device, self.dtype, self.max_graphs = model, device, dtype, max_graphs
        self.graphs: OrderedDict[Any, _CapturedGraph] = OrderedDict()
        self._lock = threading.Lock()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        leaves, spec = pytree.tree_flatten((args, kwargs))
        key = (spec, tuple(_signature(leaf) for leaf in leaves))
        with self._lock:
            entry = self.graphs.get(key)
            if entry is None:
                entry = self._capture(leaves, spec)
                self.graphs[key] = entry
                while len(self.graphs) > self.max_graphs:
                    self.graphs.popitem(last=False)[1].graph.reset()
            self.graphs.move_to_end(key)
            for static, leaf in zip(entry.inputs, leaves, strict=True):
                if isinstance(static, torch.Tensor):
                    static.copy_(leaf)
            entry.graph.replay()
            outputs = [self._output(out) for out in entry.outputs]
        return pytree.tree_unflatten(outputs, entry.out_spec)

    def _output(self, out: Any) -> Any:
        if not isinstance(out, torch.Tensor):
            return out
        return (
            out.float() if out.is_floating_point() and self.dtype != torch.float32 else out.clone()
        )

    def _static(self, leaf: Any) -> Any:
        if not isinstance(leaf, torch.Tensor):
            return leaf
        dtype = self.dtype if leaf.is_floating_point() else leaf.dtype
        return leaf.detach().to(self.device, dtype, copy=True)

    def _capture(self, leaves: list[Any], spec: Any) -> _CapturedGraph:
        static = [self._static(leaf) for leaf in leaves]
        args, kwargs = pytree.tree_unflatten(static, spec)
        self._warm_up(args, kwargs)
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.no_grad(), torch.cuda.graph(graph, capture_error_mode="thread_local"):
                out = self.model(*args, **kwargs)
        except Exception as exc:  # torch raises RuntimeError or AcceleratorError, by op
            raise VariantError(
                f"cudagraph: the forward of {type(self.model).__name__} cannot be captured as "
                f"one CUDA graph ({first_line(exc)}); this process's CUDA random generator may "
                "be unusable now (a torch limitation): restart it and use 'compile' or eager"
            ) from exc
        outputs, out_spec = pytree.tree_flatten(out)
        return _CapturedGraph(graph, static, outputs, out_spec)

    def _warm_up(self, args: Any, kwargs: Any) -> None:
        """Eager calls on a side stream; the last one with torch's sync debug mode on, so a
        forward that synchronises with the CPU is refused before a capture fails on it (a failed
        capture leaves the CUDA random generator unusable for the process)."""
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.no_grad(), torch.cuda.stream(side):
            for _ in range(WARMUP_CALLS - 1):
                self.model(*args, **kwargs)
            with _synchronizations() as found:
                self.model(*args, **kwargs)
        torch.cuda.current_stream(self.device).wait_stream(side)
        if found:
            raise VariantError(
                f"cudagraph: the forward of {type(self.model).__name__} synchronises with the "
                f"CPU ({found[0]}: .item(), .cpu(), nonzero, data-dependent shapes), so it "
                "cannot be captured as one CUDA graph: use 'compile' or eager"
            )


@contextlib.contextmanager
def _synchronizations() -> Iterator[list[str]]:
    """The synchronising CUDA operations the block ran, from ``torch.cuda``'s sync debug mode
    (``warn``: other threads are not disturbed; a prototype that may miss some)."""
    found: list[str] = []
    before = torch.cuda.get_sync_debug_mode()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            yield found
        finally:
            torch.cuda.set_sync_debug_mode(before)
    found.extend(
        str(w.message).splitlines()[0] for w in caught if "called a synchronizing" in str(w.message)
    )


def _signature(leaf: Any) -> Any:
    if isinstance(leaf, torch.Tensor):
        return ("tensor", tuple(leaf.shape), leaf.dtype, str(leaf.device))
    try:
        hash(leaf)
    except TypeError:
        return ("value", repr(leaf))
    return ("value", type(leaf).__name__, leaf)


# ---------------------------------------------------------------- output structures


def flatten_outputs(out: Any) -> tuple[dict[str, Any], list[torch.Tensor]]:
    """A JSON description of a forward's output and its tensors, depth first, in order.

    Tuples (named tuples too), lists and dicts with string keys (Hugging Face ``ModelOutput``
    included) nest; ``None``, bools, ints, floats and strings are kept as constants.

    Returns:
        ``(structure, tensors)``; :func:`rebuild_outputs` inverts it (dicts come back as plain
        dicts, named tuples as tuples).

    Raises:
        VariantError: another kind of value, or a dict key that is not a string.

    Example:
        >>> flatten_outputs((torch.ones(2), None))[0]
        {'kind': 'tuple', 'items': [{'kind': 'tensor'}, {'kind': 'none'}]}
    """
    tensors: list[torch.Tensor] = []
    return _describe(out, tensors), tensors


def _describe(value: Any, tensors: list[torch.Tensor]) -> dict[str, Any]:
    if isinstance(value, torch.Tensor):
        tensors.append(value)
        return {"kind": "tensor"}
    if value is None:
        return {"kind": "none"}
    if isinstance(value, bool | int | float | str):
        return {"kind": "const", "value": value}
    if isinstance(value, Mapping):
        if not all(isinstance(k, str) for k in value):
            raise VariantError(f"output dict keys must be strings, got {list(value)}")
        items = [_describe(v, tensors) for v in value.values()]
        return {"kind": "dict", "keys": list(value), "items": items}
    if isinstance(value, tuple | list):
        kind = "list" if isinstance(value, list) else "tuple"
        return {"kind": kind, "items": [_describe(v, tensors) for v in value]}
    raise VariantError(f"cannot describe an output of type {type(value).__name__}")


def rebuild_outputs(structure: Mapping[str, Any], tensors: Sequence[torch.Tensor]) -> Any:
    """The output that :func:`flatten_outputs` described, with ``tensors`` in place.

    Raises:
        VariantError: the count of tensors differs from the structure's.

    Example:
        >>> rebuild_outputs({"kind": "tuple", "items": [{"kind": "tensor"}, {"kind": "none"}]},
        ...                 [torch.ones(1)])
        (tensor([1.]), None)
    """
    queue = iter(tensors)
    out = _rebuild(structure, queue)
    if next(queue, None) is not None:
        raise VariantError("the runtime returned more tensors than the output structure holds")
    return out


def _rebuild(node: Mapping[str, Any], queue: Iterator[torch.Tensor]) -> Any:
    kind = node.get("kind")
    if kind == "tensor":
        found = next(queue, None)
        if found is None:
            raise VariantError("the runtime returned fewer tensors than the output structure holds")
        return found
    if kind == "none":
        return None
    if kind == "const":
        return node["value"]
    items = [_rebuild(item, queue) for item in node.get("items", [])]
    if kind == "dict":
        return dict(zip(node["keys"], items, strict=True))
    if kind in ("tuple", "list"):
        return tuple(items) if kind == "tuple" else items
    raise VariantError(f"unknown output structure kind {kind!r}")


# ---------------------------------------------------------------- ONNX Runtime


def input_position(name: str, ordinal: int) -> int:
    """The forward position of an exported input: ``input_<position>`` names carry it (``None``
    inputs are skipped at export, so positions may have gaps); other names count in order.

    Example:
        >>> input_position("input_2", 1), input_position("x", 1)
        (2, 1)
    """
    found = re.fullmatch(r"input_(\d+)", name)
    return int(found.group(1)) if found else ordinal


class OnnxRunner:
    """An ONNX Runtime session that takes and returns torch tensors.

    Positional inputs are fed by name (``input_names[i]`` is forward argument
    ``input_positions[i]``), converted to numpy in the dtype the graph declares; an input the
    graph does not have (pruned by the exporter) is not fed. Outputs come back as tensors on the
    first tensor input's device, rebuilt into ``outputs`` (a :func:`flatten_outputs` structure)
    when given, else one tensor or a tuple. The session uses ``ORT_ENABLE_ALL`` graph
    optimisation and, unless ``intra_op_num_threads`` is given, torch's intra-op thread count
    (``torch.get_num_threads()``) when the session is made: one setting governs both, so eager
    and ONNX Runtime variants compare on equal threads.

    Args:
        path: the ``.onnx`` file.
        input_names: the graph's input names in feeding order; default the graph's own.
        input_positions: their forward positions; default :func:`input_position` of each name.
        outputs: the output structure.
        providers: execution providers wanted, e.g. ``["CUDAExecutionProvider"]``; those not
            available are skipped, ``CPUExecutionProvider`` is always last.
        intra_op_num_threads: ORT's intra-op threads (default: torch's).

    Example:
        >>> run = OnnxRunner("model.onnx")  # doctest: +SKIP
        >>> run(torch.randn(7, 16)).shape  # doctest: +SKIP
        torch.Size([7, 2])
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        input_names: Sequence[str] | None = None,
        input_positions: Sequence[int] | None = None,
        outputs: Mapping[str, Any] | None = None,
        providers: Sequence[str] | None = None,
        intra_op_num_threads: int | None = None,
    ) -> None:
        ort = require("onnxruntime", extra="optimize", purpose="running ONNX model versions")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = int(intra_op_num_threads or torch.get_num_threads())
        available = set(ort.get_available_providers())
        wanted = [p for p in providers or () if p in available and p != "CPUExecutionProvider"]
        self.providers = [*wanted, "CPUExecutionProvider"]
        try:
            self.session = ort.InferenceSession(str(path), options, providers=self.providers)
        except Exception as exc:  # ORT raises its own exception types
            raise VariantError(f"ONNX Runtime cannot load '{path}': {first_line(exc)}") from exc
        declared = {i.name: _ORT_NUMPY.get(i.type) for i in self.session.get_inputs()}
        names = list(input_names) if input_names else list(declared)
        if input_positions is None:
            input_positions = [input_position(n, k) for k, n in enumerate(names)]
        self.feeds = [
            (n, int(p), declared[n])
            for n, p in zip(names, input_positions, strict=True)
            if n in declared
        ]
        self.outputs = None if outputs is None else dict(outputs)

    def run_flat(self, *args: Any) -> list[torch.Tensor]:
        """The graph's output tensors, in order, for ``forward``'s positional arguments."""
        feed = {
            name: self._array(name, position, dtype, args) for name, position, dtype in self.feeds
        }
        device = next((a.device for a in args if isinstance(a, torch.Tensor)), torch.device("cpu"))
        results = self.session.run(None, feed)
        return [torch.from_numpy(r).to(device) for r in results]

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if kwargs:
            raise VariantError(
                f"an ONNX model takes positional inputs only, got keywords {sorted(kwargs)}"
            )
        tensors = self.run_flat(*args)
        if self.outputs is not None:
            return rebuild_outputs(self.outputs, tensors)
        return tensors[0] if len(tensors) == 1 else tuple(tensors)

    @staticmethod
    def _array(name: str, position: int, dtype: Any, args: Sequence[Any]) -> np.ndarray:
        value = args[position] if position < len(args) else None
        if value is None:
            raise VariantError(
                f"ONNX input '{name}' is forward argument {position}, which was not given "
                "(it was a tensor at export)"
            )
        if isinstance(value, torch.Tensor):
            value = value.detach()
            value = value.float() if value.dtype == torch.bfloat16 else value
            array = value.cpu().numpy()
        else:
            array = np.asarray(value)
        return array if dtype is None or array.dtype == dtype else array.astype(dtype)
