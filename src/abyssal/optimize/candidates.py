"""The optimization methods: how each candidate is built from the eager model.

Every candidate is built, written to a work folder and then loaded back through the same loader
(:func:`abyssal.nn.variants.load_variant`) that ``load_model`` uses for a registered optimized
version, so what is measured is exactly what a later ``abyssal predict`` runs.

Methods (``--methods``; a group name expands to its members):

============================  ======  ==================================================
method                        target  what it does
============================  ======  ==================================================
compile                       both    ``torch.compile`` (Inductor, default mode)
compile-cudagraphs            cuda    ``torch.compile(mode="reduce-overhead")``
cudagraph                     cuda    the eager forward captured whole in CUDA graphs
cudagraph-bf16                cuda    the same in bfloat16
bf16                          cuda    eager in bfloat16
onnx                          cpu     ONNX Runtime FP32, all graph optimizations
onnx-int8-dynamic             cpu     ONNX Runtime, INT8 weights, dynamic activations
onnx-int8-static              cpu     ONNX Runtime, static QDQ INT8 calibrated on real inputs
int8-dynamic                  cpu     PyTorch dynamic INT8 for ``nn.Linear``
int8-weight                   cpu     weight-only INT8 (dequantized in the forward)
placement                     cuda    the placement plan: each operator on its best device
============================  ======  ==================================================

Plugin methods (entry-point group ``abyssal.optimizations``): every
:class:`~abyssal.nn.variants.Variant` an installed package declares under a name that is not one
of the methods above is a method too. It is offered for the targets in its ``targets``, runs when
named in ``--methods`` and with the default (every method for the target), and is measured and
judged beside the others; a winner is registered as a child version whose ``method`` (and
variant) is the entry's name, and which loads through the plugin's ``load``. Its candidate is
made by ``variant.build(method, ctx)``, where ``method`` is a :class:`Method` (``name`` and
``variant``: the entry's name; ``targets``, ``summary``, ``recipe``: the Variant's) and ``ctx``
a :class:`BuildContext`. ``build`` must:

- write its files under ``ctx.workdir`` (a fresh copy of the parent is ``ctx.fresh_model()``);
- load the candidate back from those files with ``ctx.load(method.variant, recipe, files)``
  (``files``: artifact name -> path), so what is measured is what a later ``predict`` runs;
- return ``Candidate(method.name, module, method.variant, recipe, artifacts, size_bytes)``, with
  ``artifacts`` the files as :class:`~abyssal.core.artifacts.ArtifactSource` and ``recipe``
  JSON-serialisable (it is stored with the child and handed to ``load``).

A Variant without ``build`` is built from its ``recipe`` alone (no files), as ``compile`` is. A
plugin that fails to import, or whose ``build`` raises or returns something else, fails that
candidate only, with a reason that names the plugin's package and version (a method named
explicitly that cannot be imported is refused before anything is loaded).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from abyssal.core.artifacts import ArtifactSource
from abyssal.core.errors import AbyssalError
from abyssal.optimize.subject import Subject, to_device


class OptimizeError(AbyssalError):
    """A bad optimization request: an unknown method or target, or a target this machine lacks."""


@dataclass(frozen=True)
class Method:
    """One optimization method: the variant that loads it, its recipe and where it applies."""

    name: str
    variant: str
    targets: tuple[str, ...]
    summary: str
    recipe: dict[str, Any] = field(default_factory=dict)


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method(
            "compile",
            "compile",
            ("cpu", "cuda"),
            "torch.compile, default mode",
            {"mode": "default"},
        ),
        Method(
            "compile-cudagraphs",
            "compile",
            ("cuda",),
            "torch.compile, reduce-overhead (CUDA graphs)",
            {"mode": "reduce-overhead"},
        ),
        Method(
            "cudagraph",
            "cudagraph",
            ("cuda",),
            "whole forward in CUDA graphs",
            {"dtype": "float32"},
        ),
        Method(
            "cudagraph-bf16",
            "cudagraph",
            ("cuda",),
            "CUDA graphs in bfloat16",
            {"dtype": "bfloat16"},
        ),
        Method("bf16", "bf16", ("cuda",), "eager in bfloat16", {"dtype": "bfloat16"}),
        Method("onnx", "onnx", ("cpu",), "ONNX Runtime FP32"),
        Method("onnx-int8-dynamic", "onnx", ("cpu",), "ONNX Runtime INT8, dynamic activations"),
        Method("onnx-int8-static", "onnx", ("cpu",), "ONNX Runtime INT8, static QDQ"),
        Method("int8-dynamic", "int8-dynamic", ("cpu",), "PyTorch dynamic INT8 (Linear)"),
        Method("int8-weight", "int8-weight", ("cpu",), "weight-only INT8"),
        Method("placement", "placement", ("cuda",), "operators placed by the cost model"),
    )
}
"""Every method by name."""

GROUPS: dict[str, tuple[str, ...]] = {
    "int8": ("int8-dynamic", "int8-weight", "onnx-int8-dynamic", "onnx-int8-static"),
    "cudagraphs": ("compile-cudagraphs", "cudagraph", "cudagraph-bf16"),
}
"""Names that expand to several methods (each kept only where it applies to the target)."""

TARGETS = ("cpu", "cuda")


def plugin_methods() -> dict[str, str]:
    """The methods installed packages add, name -> ``"package version"`` (nothing imported).

    A plugin entry named like one of :data:`METHODS` is left out (abyssal's method is used).
    """
    from abyssal.nn.variants import VARIANTS

    return {p.name: f"{p.package} {p.version}" for p in VARIANTS.plugins() if p.name not in METHODS}


def plugin_method(name: str) -> Method:
    """The :class:`Method` of the plugin method ``name`` (its plugin imported).

    Raises:
        OptimizeError: the plugin failed to import, is claimed twice, or is not a ``Variant``;
            the message names its package.
    """
    from abyssal.nn.variants import VARIANTS, plugin_checked

    try:
        variant = plugin_checked(name, VARIANTS.get(name))
    except AbyssalError as exc:
        raise OptimizeError(str(exc)) from exc
    return Method(name, name, tuple(variant.targets), variant.summary, dict(variant.recipe))


def method_summary(name: str) -> str:
    """One line about a method; a plugin's names its package (a broken plugin: its metadata's
    summary, without importing it)."""
    if name in METHODS:
        return METHODS[name].summary
    from abyssal.nn.variants import VARIANTS

    package = plugin_methods().get(name, "an unknown package")
    try:
        summary = plugin_method(name).summary
    except OptimizeError:
        summary = VARIANTS.summary(name) if name in VARIANTS else ""
    return f"{summary} (plugin: {package})".lstrip()


def method_rows() -> list[list[str]]:
    """``[name, targets, summary]`` of every method, plugin method and group, for listings (a
    plugin that fails to import is listed with its error)."""
    rows = [[n, "/".join(m.targets), m.summary] for n, m in METHODS.items()]
    for name, package in plugin_methods().items():
        try:
            method = plugin_method(name)
        except OptimizeError as exc:
            rows.append([name, "?", f"error: {exc}"])
            continue
        rows.append([name, "/".join(method.targets), f"{method.summary} (plugin: {package})"])
    rows += [[n, "group", ", ".join(members)] for n, members in GROUPS.items()]
    return rows


def resolve_methods(names: list[str] | None, target: str) -> list[str]:
    """The methods to try for ``target``: the given names (groups expanded), or all of them
    (plugin methods included; one that fails to import is kept, to be reported as failed).

    Raises:
        OptimizeError: an unknown target or method (the valid ones, plugins included, are
            listed), a method that does not apply to the target (its targets are named), or a
            plugin method named explicitly whose package fails to import (named).
    """
    if target not in TARGETS:
        raise OptimizeError(f"unknown target '{target}'; valid targets: {', '.join(TARGETS)}")
    plugins = plugin_methods()
    if not names:
        chosen = [n for n, m in METHODS.items() if target in m.targets]
        for name in plugins:
            try:
                applies = target in plugin_method(name).targets
            except OptimizeError:
                applies = True  # tried, so that the report shows why it failed
            if applies:
                chosen.append(name)
        return chosen
    chosen = []
    for name in names:
        if name in GROUPS:
            chosen += [n for n in GROUPS[name] if target in METHODS[n].targets]
            continue
        if name in METHODS:
            targets = METHODS[name].targets
        elif name in plugins or _claimed(name):
            targets = plugin_method(name).targets
        else:
            listed = [*METHODS, *GROUPS, *(f"{n} (plugin: {p})" for n, p in plugins.items())]
            raise OptimizeError(f"unknown method '{name}'; valid methods: {', '.join(listed)}")
        if target not in targets:
            raise OptimizeError(
                f"method '{name}' applies to target {'/'.join(targets)}, not {target}"
            )
        chosen.append(name)
    return list(dict.fromkeys(chosen))


def _claimed(name: str) -> bool:
    """``name`` is an optimization entry point two packages claim (an error when used)."""
    from abyssal.nn.variants import VARIANTS

    return name in VARIANTS.conflicts()


def check_target(target: str) -> torch.device:
    """The device of ``target``.

    Raises:
        OptimizeError: an unknown target; ``cuda`` without a CUDA device, in one line.
    """
    if target not in TARGETS:
        raise OptimizeError(f"unknown target '{target}'; valid targets: {', '.join(TARGETS)}")
    if target == "cuda" and not torch.cuda.is_available():
        raise OptimizeError(
            f"--target cuda needs a CUDA GPU; torch {torch.__version__} sees none here "
            "(use --target cpu)"
        )
    return torch.device(target)


@dataclass
class Candidate:
    """A built candidate, loaded back from its files.

    Args:
        method: the method's name.
        module: the runnable model (an ``OptimizedModel``).
        variant: the loader that rebuilds it.
        recipe: what the loader needs besides the files (stored with the version).
        artifacts: the files to register with the version.
        size_bytes: bytes of the weights this candidate runs: its files, plus the parent's
            weights it still uses (all of them when it has no files).
        note: how it was built (e.g. which exporter).
    """

    method: str
    module: nn.Module
    variant: str
    recipe: dict[str, Any]
    artifacts: list[ArtifactSource]
    size_bytes: int
    note: str = ""


@dataclass
class BuildContext:
    """What every builder gets.

    Args:
        subject: the parent model (``subject.model``, on ``device``; do not change it) and how
            to make its inputs (``subject.make_inputs(batch, seed)``, ``calibration_inputs()``).
        device: where the candidate runs (the ``--target``).
        workdir: where to write the candidate's files.
        load_context: the :class:`~abyssal.nn.variants.LoadContext` loaders get.
        assignment: the placement plan (node -> device), when one was made.
        exports: what builders share (the FP32 ONNX export, made once).
    """

    subject: Subject
    device: torch.device
    workdir: Path
    load_context: Any
    assignment: dict[str, str] | None = None
    exports: dict[str, Any] = field(default_factory=dict)

    def fresh_model(self) -> nn.Module:
        """A copy of the parent model on ``device``, in eval mode, to change freely."""
        return copy.deepcopy(self.subject.model).to(self.device).eval()

    def load(self, variant: str, recipe: dict[str, Any], files: dict[str, Path]) -> nn.Module:
        """The candidate loaded back from its files by ``variant``'s loader, exactly as a
        registered child version is loaded (on a fresh copy of the parent)."""
        from abyssal.nn.variants import load_variant

        return load_variant(self.fresh_model(), variant, recipe, files, self.load_context)


def parameter_bytes(model: nn.Module) -> int:
    """Bytes of a model's parameters and buffers as stored (FP32 weights on disk)."""
    state = model.state_dict()
    return sum(v.numel() * v.element_size() for v in state.values() if isinstance(v, torch.Tensor))


def build_candidate(method: str, ctx: BuildContext) -> Candidate:
    """Build ``method``'s candidate for the subject, then load it back from its files.

    Raises:
        AbyssalError (or a subclass): the method failed; the message names the step.
    """
    if method in METHODS:
        spec = METHODS[method]
        builder = _BUILDERS.get(spec.variant, _recipe_only)
        return builder(spec, ctx)
    return _build_plugin(method, ctx)


def _build_plugin(name: str, ctx: BuildContext) -> Candidate:
    """A plugin method's candidate; any failure names the plugin's package."""
    from abyssal.nn.variants import VARIANTS, plugin_checked

    spec = plugin_method(name)
    variant = plugin_checked(name, VARIANTS.get(name))
    origin = VARIANTS.origin(name)
    who = f"{origin.package} {origin.version}" if origin else "an unknown package"
    try:
        cand = (variant.build or _recipe_only)(spec, ctx)
    except Exception as exc:
        raise OptimizeError(
            f"plugin method '{name}' from {who} failed: {type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(cand, Candidate):
        raise OptimizeError(
            f"plugin method '{name}' from {who}: build returned a {type(cand).__name__}, "
            "not a Candidate"
        )
    return cand


def _load(ctx: BuildContext, variant: str, recipe: dict, files: dict[str, Path]) -> nn.Module:
    return ctx.load(variant, recipe, files)


def _recipe_only(spec: Method, ctx: BuildContext) -> Candidate:
    """compile, cudagraph, bf16: nothing to store but the recipe."""
    recipe = dict(spec.recipe)
    module = _load(ctx, spec.variant, recipe, {})
    size = parameter_bytes(ctx.subject.model)
    if recipe.get("dtype") in ("bfloat16", "float16"):
        size //= 2
    return Candidate(spec.name, module, spec.variant, recipe, [], size)


def _placement(spec: Method, ctx: BuildContext) -> Candidate:
    if not ctx.assignment:
        raise AbyssalError("placement: no plan (the graph could not be captured and analysed)")
    axes = [{str(k): v for k, v in named.items()} for named in ctx.subject.input_axes]
    recipe = {"assignment": ctx.assignment, "io_device": str(ctx.device), "dynamic": axes}
    module = _load(ctx, spec.variant, recipe, {})
    return Candidate(
        spec.name, module, spec.variant, recipe, [], parameter_bytes(ctx.subject.model)
    )


def _onnx(spec: Method, ctx: BuildContext) -> Candidate:
    from abyssal.optimize.export import check_onnx, export_onnx
    from abyssal.optimize.quantize import onnx_int8_dynamic, onnx_int8_static

    subject = ctx.subject
    cpu_model = copy.deepcopy(subject.model).cpu().eval()
    example = to_device(subject.make_inputs(2 if subject.batched else 1, 0), "cpu")
    exported = ctx.exports.get("fp32")
    if exported is None:  # the ONNX methods share one FP32 export
        fp32 = ctx.workdir / "model.fp32.onnx"
        exported = export_onnx(cpu_model, example, fp32, input_axes=subject.input_axes)
        ctx.exports["fp32"] = exported
    fp32 = exported.path
    path, note = fp32, f"exported with the {exported.exporter} exporter"
    if exported.note:
        note += f" ({exported.note})"
    if spec.name == "onnx-int8-dynamic":
        path = onnx_int8_dynamic(fp32, ctx.workdir / f"{spec.name}.onnx")
        note += "; INT8 weights (MatMul, Gemm, Gather), activations quantized per call"
    elif spec.name == "onnx-int8-static":
        feeds = [exported.feed(inputs) for inputs in subject.calibration_inputs()]
        path = onnx_int8_static(fp32, ctx.workdir / f"{spec.name}.onnx", feeds)
        note += f"; static QDQ INT8 calibrated on {len(feeds)} real input batches"
    real = [to_device(subject.make_inputs(2 if subject.batched else 1, s), "cpu") for s in (7, 8)]
    agreement = check_onnx(
        path, cpu_model, [*real, *(_randomised(x, s) for s, x in enumerate(real))]
    )
    note += (
        f"; against PyTorch on 2 real and 2 random input sets: max |diff| "
        f"{agreement.max_abs_diff:.1e}, rows agreeing {agreement.agreement:.3f}"
    )
    name = "model.int8.onnx" if spec.name != "onnx" else "model.onnx"
    recipe = {**exported.recipe(), "file": name, "arity": len(example)}
    module = _load(ctx, "onnx", recipe, {name: path})
    artifact = ArtifactSource.file(name, "onnx", path)
    return Candidate(spec.name, module, "onnx", recipe, [artifact], path.stat().st_size, note)


def _randomised(inputs: tuple, seed: int) -> tuple:
    """The inputs with every floating tensor replaced by standard normal values (integer inputs,
    indices and token ids, are kept: random ones may not be valid)."""
    gen = torch.Generator().manual_seed(seed)
    return tuple(
        torch.randn(v.shape, generator=gen, dtype=v.dtype)
        if isinstance(v, torch.Tensor) and v.is_floating_point()
        else v
        for v in inputs
    )


def _int8_torch(spec: Method, ctx: BuildContext) -> Candidate:
    from safetensors.torch import save_file

    from abyssal.optimize.quantize import dynamic_int8, weight_only_int8

    model = copy.deepcopy(ctx.subject.model).cpu().eval()
    if spec.name == "int8-dynamic":
        _, tensors, meta = dynamic_int8(model)
        recipe: dict[str, Any] = {"state": meta}
    else:
        _, tensors = weight_only_int8(model)
        recipe = {"embeddings": True}
    name = "model.int8.safetensors"
    path = ctx.workdir / f"{spec.name}.safetensors"
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
    recipe["file"] = name
    module = _load(ctx, spec.variant, recipe, {name: path})
    artifact = ArtifactSource.file(name, "quantized", path)
    # the file holds the quantized layers; the rest of the model still runs the parent's weights
    if spec.name == "int8-dynamic":  # every nn.Linear, weight and bias
        replaced = {
            f"{n}.{p}" if n else p
            for n, m in ctx.subject.model.named_modules()
            if isinstance(m, nn.Linear)
            for p in ("weight", "bias")
        }
    else:  # the weights whose int8 copies the file holds
        suffix = ".weight_int8"
        replaced = {k[: -len(suffix)] + ".weight" for k in tensors if k.endswith(suffix)}
    rest = sum(
        v.numel() * v.element_size()
        for k, v in ctx.subject.model.state_dict().items()
        if k not in replaced and isinstance(v, torch.Tensor)
    )
    size = path.stat().st_size + rest
    return Candidate(spec.name, module, spec.variant, recipe, [artifact], size)


_BUILDERS: dict[str, Callable[[Method, BuildContext], Candidate]] = {
    "onnx": _onnx,
    "int8-dynamic": _int8_torch,
    "int8-weight": _int8_torch,
    "placement": _placement,
}
