"""What an optimization works on: a model, how to make its inputs, and how to score it.

A :class:`Subject` is independent of where the model came from: :func:`subject_from_version`
builds one from a registered model version through the solution protocol (its example inputs,
input axes, real inputs drawn from its data, and its own evaluation), and a benchmark builds one
for any ``torch.nn.Module``.

Example:
    >>> subject = Subject("mlp", model, make_inputs=lambda b, s: (torch.randn(b, 8),),
    ...                   input_axes=({0: "batch"},))  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from abyssal.contracts.solution import Solution
from abyssal.core.errors import AbyssalError

Inputs = tuple[Any, ...]


@dataclass
class Subject:
    """A model to optimize.

    Args:
        name: shown in reports.
        model: the eager FP32 model in eval mode (the reference every candidate is checked
            against).
        make_inputs: ``(batch, seed) -> inputs``: positional ``forward`` inputs, fresh values
            per seed (real data when the solution provides it).
        input_axes: per input, ``{dim: name}`` of the axes that vary; ``"batch"`` is the batch.
        evaluate: metrics of a (possibly optimized) model on held-out data, or ``None``.
        metric: the key of ``evaluate``'s result the tolerance applies to.
        mode: ``"max"`` when a larger metric is better.
        calibration: real inputs for static INT8 calibration (default: ``make_inputs``).
        batched: ``False`` when the model has no batch axis (one forward scores a whole graph).
    """

    name: str
    model: nn.Module
    make_inputs: Callable[[int, int], Inputs]
    input_axes: tuple[dict[int, str], ...]
    evaluate: Callable[[nn.Module], dict[str, float]] | None = None
    metric: str | None = None
    mode: Literal["max", "min"] = "max"
    calibration: Callable[[], list[Inputs]] | None = None
    batched: bool = True

    def calibration_inputs(self, count: int = 16) -> list[Inputs]:
        """Inputs for static quantization: the subject's own, else ``count`` drawn batches."""
        if self.calibration is not None:
            return list(self.calibration())
        return [self.make_inputs(8 if self.batched else 1, 1000 + i) for i in range(count)]


def synthetic_inputs(
    example: Inputs, axes: Sequence[dict[int, str]], batch: int, seed: int
) -> Inputs:
    """Inputs of ``batch`` items made from one example: rows drawn along the batch axis, and
    floating values scaled by a factor within 1 ± 1e-2 so each seed gives fresh values.

    Args:
        example: a valid set of inputs (``Solution.example_inputs``).
        axes: their named axes; only ``"batch"`` axes are resized.
        batch: items per call.
        seed: which draw.

    Returns:
        The new inputs; non-tensor inputs are passed through.
    """
    gen = torch.Generator().manual_seed(seed)
    out: list[Any] = []
    for value, named in zip(example, axes, strict=False):
        if not isinstance(value, torch.Tensor):
            out.append(value)
            continue
        for dim, name in named.items():
            if name == "batch":
                rows = torch.randint(0, value.shape[dim], (batch,), generator=gen)
                value = value.index_select(dim, rows)
        if value.is_floating_point():
            value = value * (1 + 1e-2 * (2 * torch.rand(value.shape, generator=gen) - 1))
        out.append(value)
    return tuple(out)


def to_device(inputs: Inputs, device: torch.device | str) -> Inputs:
    """The inputs with every tensor moved to ``device``."""
    return tuple(v.to(device) if isinstance(v, torch.Tensor) else v for v in inputs)


def output_tensors(output: Any) -> list[torch.Tensor]:
    """Every tensor of a model output (a tensor, a tuple/list/dict of them, ``None`` skipped),
    in a fixed order, as float32 on the CPU."""
    if output is None:
        return []
    if isinstance(output, torch.Tensor):
        return [output.detach().float().cpu()]
    if isinstance(output, dict):
        return [t for key in sorted(output) for t in output_tensors(output[key])]
    if isinstance(output, list | tuple):
        return [t for item in output for t in output_tensors(item)]
    if hasattr(output, "to_tuple"):  # transformers' ModelOutput
        return output_tensors(output.to_tuple())
    raise AbyssalError(f"cannot compare a model output of type {type(output).__name__}")


def subject_from_version(
    ref: str,
    store: Any = None,
    overrides: list[str] | None = None,
    device: str = "cpu",
) -> tuple[Subject, Any]:
    """The subject of a registered version: its model, its solution's real inputs and metric.

    Args:
        ref: the version (``fraud:3``, ``fraud:production``).
        store: the model store (default: the default store).
        overrides: ``key=value`` changes to the stored config (e.g. ``data.path=...``).
        device: where the eager model is loaded.

    Returns:
        The subject and the loaded version (``abyssal.solutions.loading.LoadedModel``).

    Raises:
        AbyssalError: the solution provides no example inputs; the version's data moved.
    """
    from abyssal.solutions.loading import check_data_paths, load_model

    loaded = load_model(ref, store=store, overrides=overrides, device=device)
    if "optimization" in loaded.version.config:
        raise AbyssalError(
            f"{loaded.version.ref} is already an optimized version "
            f"({loaded.version.config['optimization']['method']}); optimize its parent "
            f"{loaded.version.config['optimization']['parent']} instead"
        )
    solution, cfg, spec = loaded.solution, loaded.cfg, loaded.spec
    example = solution.example_inputs(cfg, spec)
    axes = solution.input_axes(cfg, spec)
    check_data_paths(loaded, overrides)
    data = solution.prepare(cfg)
    metric, mode = solution.monitor(cfg, data)
    # real inputs where the solution draws them from its data, else the examples resized
    real = type(solution).model_inputs is not Solution.model_inputs

    def make_inputs(batch: int, seed: int) -> Inputs:
        if real:
            return solution.model_inputs(cfg, data, batch, seed)
        return synthetic_inputs(example, axes, batch, seed)

    def evaluate(model: nn.Module) -> dict[str, float]:
        return solution.evaluate(cfg, model, data)

    batched = any("batch" in named.values() for named in axes)
    subject = Subject(
        name=loaded.version.ref,
        model=loaded.model,
        make_inputs=make_inputs,
        input_axes=tuple(axes),
        evaluate=evaluate,
        metric=metric,
        mode=mode,
        batched=batched,
    )
    return subject, loaded
