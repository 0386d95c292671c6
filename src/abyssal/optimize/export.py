"""Export a model to one ONNX file with dynamic axes, and check ONNX Runtime agrees with PyTorch.

:func:`export_onnx` tries the ``torch.export``-based exporter (``dynamo=True``) first and falls
back to the TorchScript exporter; both see the model through a wrapper that takes only the tensor
inputs (``None`` and other non-tensor arguments are baked in) and returns the output's tensors as
a flat tuple, so inputs are named ``input_<forward position>`` and outputs ``output_<k>``, and
:class:`~abyssal.nn.variant_runners.OnnxRunner` rebuilds the original output structure from
:attr:`OnnxExport.outputs`. The file is written whole (a temporary file renamed into place) and
holds its weights itself (no external-data files), which limits models to 2 GB.

Example:
    >>> exported = export_onnx(model, (x,), Path("model.onnx"), input_axes=({0: "batch"},))
    ... # doctest: +SKIP
    >>> check_onnx(exported.path, model, [(x,), (x[:1],)]).agreement  # doctest: +SKIP
    1.0
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from abyssal.core.atomic import atomic_path
from abyssal.core.errors import AbyssalError
from abyssal.core.logs import quiet_loggers
from abyssal.core.optional import require
from abyssal.nn.variant_runners import OnnxRunner, first_line, flatten_outputs, input_position

ONNX_SIZE_LIMIT = 2 * 1024**3
"""Protobuf's limit on one ONNX file; larger models would need external-data files."""

SCORE_TOLERANCE = 1e-3
"""Two scores agree when they differ by less than this (or fall on the same side of the
decision threshold)."""


class ExportError(AbyssalError):
    """A model could not be exported to ONNX (both exporters failed, or it is too large)."""


@dataclass(frozen=True)
class OnnxExport:
    """What :func:`export_onnx` wrote.

    Args:
        path: the ``.onnx`` file.
        input_names: the graph's inputs, in order (``input_<position>``).
        input_positions: the forward position each input feeds.
        output_names: the graph's outputs, in order.
        outputs: the output structure (:func:`~abyssal.nn.variant_runners.flatten_outputs`).
        exporter: ``"dynamo"`` or ``"torchscript"``.
        note: why the fallback was used, if it was.
    """

    path: Path
    input_names: tuple[str, ...]
    input_positions: tuple[int, ...]
    output_names: tuple[str, ...]
    outputs: dict[str, Any] = field(repr=False)
    exporter: str
    note: str = ""

    def recipe(self) -> dict[str, Any]:
        """The ``onnx`` variant's recipe for this file.

        Example:
            >>> sorted(exported.recipe())  # doctest: +SKIP
            ['input_names', 'input_positions', 'output_names', 'outputs']
        """
        return {
            "input_names": list(self.input_names),
            "input_positions": list(self.input_positions),
            "output_names": list(self.output_names),
            "outputs": self.outputs,
        }

    def feed(self, inputs: Sequence[Any]) -> dict[str, np.ndarray]:
        """ONNX Runtime's feed (name -> array) for ``forward``'s positional ``inputs``, e.g. a
        calibration batch for :func:`~abyssal.optimize.quantize.onnx_int8_static`.

        Example:
            >>> exported.feed((x, None))  # doctest: +SKIP
            {'input_0': array(...)}
        """
        return {
            name: inputs[pos].detach().cpu().numpy()
            for name, pos in zip(self.input_names, self.input_positions, strict=True)
        }


@dataclass(frozen=True)
class Agreement:
    """How closely ONNX Runtime reproduces PyTorch.

    Args:
        max_abs_diff: the largest absolute difference over every output tensor and input set.
        agreement: the fraction of rows of the first floating output that agree: the same top-1
            class when its last axis has more than one entry, else scores that differ by less
            than :data:`SCORE_TOLERANCE` or fall on the same side of the threshold (0.5 when both
            lie in [0, 1], else 0).
        n_inputs: the number of input sets compared.
        n_rows: the number of rows compared.
    """

    max_abs_diff: float
    agreement: float
    n_inputs: int
    n_rows: int


class _TensorInputs(nn.Module):
    """``model`` seen through its tensor inputs only, returning its output tensors as a tuple."""

    def __init__(self, model: nn.Module, template: Sequence[Any], positions: Sequence[int]):
        super().__init__()
        self.model, self.template, self.positions = model, list(template), list(positions)

    def forward(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        args = list(self.template)
        for pos, tensor in zip(self.positions, tensors, strict=True):
            args[pos] = tensor
        return tuple(flatten_outputs(self.model(*args))[1])


def export_onnx(
    model: nn.Module,
    inputs: tuple,
    path: Path,
    input_axes: Sequence[Mapping[int, str]] | None = None,
    opset: int = 18,
) -> OnnxExport:
    """Export ``model`` called on ``inputs`` to the ONNX file ``path``.

    Args:
        model: the model, in eval mode, on the CPU (the file does not depend on the device).
        inputs: ``forward``'s positional example inputs; ``None`` and other non-tensor inputs are
            baked in and are not inputs of the graph.
        path: the file to write (replaced atomically).
        input_axes: per positional input, axis -> name of the axes that vary (``{0: "batch"}``,
            ``{0: "nodes"}``, ``{1: "edges"}``); axes sharing a name share a size. Default: axis 0
            of every tensor input is ``"batch"``.
        opset: the ONNX opset.

    Returns:
        The file and how to feed it (:meth:`OnnxExport.recipe`).

    Raises:
        ExportError: no tensor input, the weights exceed 2 GB, or both exporters failed (the
            message gives each one's error).

    Example:
        >>> export_onnx(mlp, (torch.randn(2, 16),), Path("mlp.onnx")).exporter  # doctest: +SKIP
        'dynamo'
    """
    require("onnx", extra="optimize", purpose="ONNX export")
    path = Path(path)
    positions = [i for i, value in enumerate(inputs) if isinstance(value, torch.Tensor)]
    if not positions:
        raise ExportError("export_onnx: the model has no tensor input")
    _check_size(model)
    with torch.no_grad():
        structure, leaves = flatten_outputs(model(*inputs))
    if not leaves:
        raise ExportError("export_onnx: the model's output holds no tensor")
    wrapper = _TensorInputs(model, inputs, positions).eval()
    tensors = tuple(inputs[p] for p in positions)
    axes = [_axes(inputs[p], p, input_axes) for p in positions]
    names = [f"input_{p}" for p in positions]
    outputs = [f"output_{k}" for k in range(len(leaves))]
    exporter, note = _export(wrapper, tensors, path, names, outputs, axes, leaves, opset)
    graph_inputs, graph_outputs = _graph_io(path)
    if len(graph_outputs) != len(leaves):
        raise ExportError(
            f"export_onnx: the ONNX graph has {len(graph_outputs)} outputs, the model returns "
            f"{len(leaves)} tensors"
        )
    return OnnxExport(
        path,
        tuple(graph_inputs),
        tuple(input_position(n, k) for k, n in enumerate(graph_inputs)),
        tuple(graph_outputs),
        structure,
        exporter,
        note,
    )


def _check_size(model: nn.Module) -> None:
    size = sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))
    if size >= ONNX_SIZE_LIMIT:
        raise ExportError(
            f"export_onnx: the weights take {size / 1024**3:.1f} GB; one ONNX file holds at most "
            "2 GB (external-data files are not supported here)"
        )


def _axes(
    tensor: torch.Tensor, position: int, input_axes: Sequence[Mapping[int, str]] | None
) -> dict[int, str]:
    if input_axes is None:
        return {0: "batch"} if tensor.dim() > 0 else {}
    given = dict(input_axes[position] or {}) if position < len(input_axes) else {}
    bad = [a for a in given if not -tensor.dim() <= a < tensor.dim()]
    if bad:
        raise ExportError(
            f"export_onnx: input {position} has {tensor.dim()} axes, input_axes names {bad}"
        )
    return {a % tensor.dim(): str(name) for a, name in given.items()}


def _export(
    wrapper: nn.Module,
    tensors: tuple[torch.Tensor, ...],
    path: Path,
    names: list[str],
    outputs: list[str],
    axes: list[dict[int, str]],
    leaves: list[torch.Tensor],
    opset: int,
) -> tuple[str, str]:
    """Write the file with the dynamo exporter, else the TorchScript one; which, and why."""
    try:
        with warnings.catch_warnings():  # axes sharing a name: one is kept, as intended
            warnings.filterwarnings("ignore", message=r".*will not be used, since it shares")
            with quiet_loggers("onnx_ir", "onnxscript"):  # notes on defaulted attribute types
                program = _dynamo_export(wrapper, tensors, names, outputs, axes, opset)
        with atomic_path(path) as tmp:
            program.save(tmp, external_data=False)
        return "dynamo", ""
    except Exception as exc:  # the exporter raises many types; fall back on any of them
        dynamo_error = first_line(exc)
    dynamic_axes = {n: a for n, a in zip(names, axes, strict=True) if a}
    dynamic_axes.update(_output_axes(outputs, leaves, tensors, axes))
    try:
        with warnings.catch_warnings(), atomic_path(path) as tmp:
            warnings.simplefilter("ignore")
            torch.onnx.export(
                wrapper,
                tensors,
                str(tmp),
                dynamo=False,
                input_names=names,
                output_names=outputs,
                opset_version=opset,
                dynamic_axes=dynamic_axes,
            )
    except Exception as exc:
        raise ExportError(
            f"export_onnx: the dynamo exporter failed ({dynamo_error}) and so did the "
            f"TorchScript exporter ({first_line(exc)})"
        ) from exc
    return "torchscript", f"dynamo exporter failed: {dynamo_error}"


def _dynamo_export(
    wrapper: nn.Module,
    tensors: tuple[torch.Tensor, ...],
    names: list[str],
    outputs: list[str],
    axes: list[dict[int, str]],
    opset: int,
) -> Any:
    return torch.onnx.export(
        wrapper,
        tensors,
        None,
        dynamo=True,
        verbose=False,
        input_names=names,
        output_names=outputs,
        opset_version=opset,
        dynamic_shapes=(tuple(a or None for a in axes),),
    )


def _output_axes(
    outputs: list[str],
    leaves: list[torch.Tensor],
    tensors: tuple[torch.Tensor, ...],
    axes: list[dict[int, str]],
) -> dict[str, dict[int, str]]:
    """For the TorchScript exporter: name an output axis after the input axis of the same size
    (when exactly one named axis has that size)."""
    sizes: dict[int, set[str]] = {}
    for tensor, named in zip(tensors, axes, strict=True):
        for axis, name in named.items():
            sizes.setdefault(tensor.shape[axis], set()).add(name)
    found: dict[str, dict[int, str]] = {}
    for name, leaf in zip(outputs, leaves, strict=True):
        out_axes = {
            axis: next(iter(sizes[size]))
            for axis, size in enumerate(leaf.shape)
            if len(sizes.get(size, ())) == 1
        }
        if out_axes:
            found[name] = out_axes
    return found


def _graph_io(path: Path) -> tuple[list[str], list[str]]:
    onnx = require("onnx", extra="optimize", purpose="ONNX export")
    proto = onnx.load(str(path), load_external_data=False)
    initializers = {init.name for init in proto.graph.initializer}
    inputs = [i.name for i in proto.graph.input if i.name not in initializers]
    return inputs, [o.name for o in proto.graph.output]


def check_onnx(path: Path, model: nn.Module, input_sets: Sequence[tuple]) -> Agreement:
    """Run the ONNX file and ``model`` on every input set and compare their outputs.

    Args:
        path: an ONNX file from :func:`export_onnx` (FP32 or quantized).
        model: the PyTorch model it came from.
        input_sets: ``forward``'s positional inputs, one tuple per set (batch sizes may differ).

    Returns:
        The largest difference and the fraction of agreeing rows (:class:`Agreement`).

    Raises:
        ExportError: no input sets, or the file returns a different number of tensors.

    Example:
        >>> check_onnx(Path("mlp.onnx"), mlp, [(torch.randn(7, 16),)]).agreement  # doctest: +SKIP
        1.0
    """
    if not input_sets:
        raise ExportError("check_onnx needs at least one input set")
    runner = OnnxRunner(path)
    max_diff, agree, rows = 0.0, 0, 0
    for inputs in input_sets:
        with torch.no_grad():
            expected = [t.detach().cpu() for t in flatten_outputs(model(*inputs))[1]]
        got = [t.cpu() for t in runner.run_flat(*inputs)]
        if len(got) != len(expected):
            raise ExportError(
                f"check_onnx: {path} returns {len(got)} tensors, the model {len(expected)}"
            )
        for a, b in zip(expected, got, strict=True):
            if a.numel():
                max_diff = max(max_diff, (a.double() - b.double()).abs().max().item())
        n_agree, n_rows = _rows_agreeing(expected, got)
        agree, rows = agree + n_agree, rows + n_rows
    return Agreement(max_diff, agree / rows if rows else 1.0, len(input_sets), rows)


def _rows_agreeing(expected: list[torch.Tensor], got: list[torch.Tensor]) -> tuple[int, int]:
    """(agreeing rows, rows) of the first floating output."""
    index = next((i for i, t in enumerate(expected) if t.is_floating_point() and t.numel()), None)
    if index is None:
        return 0, 0
    a, b = expected[index].double(), got[index].double()
    if a.dim() >= 2 and a.shape[-1] > 1:
        same = a.argmax(-1) == b.argmax(-1)
    else:
        low, high = min(a.min(), b.min()), max(a.max(), b.max())
        threshold = 0.5 if low >= 0 and high <= 1 else 0.0
        same = ((a - b).abs() < SCORE_TOLERANCE) | ((a > threshold) == (b > threshold))
    return int(same.sum()), same.numel()
