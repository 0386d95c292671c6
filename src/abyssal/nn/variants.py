"""How an optimized model version runs once loaded: the runtime variants of ``abyssal optimize``.

``abyssal optimize`` turns a registered model into faster child versions (compiled, CUDA graphs,
half precision, ONNX Runtime, INT8). A child stores its ``method`` (a name in :data:`VARIANTS`), a
JSON ``recipe`` and its own artifact files. Loading a child builds the eager model from the
parent's config, loads the parent's weights into it, moves it to the device, and then hands it to
:func:`load_variant`, which returns an :class:`OptimizedModel`: a module whose ``forward`` runs the
variant and that otherwise behaves as the eager model (``.parameters()``, ``.eval()``, ``.to()``,
``model.encoder.in_features``), so a child predicts through the same code as its parent.

| method | runs on | recipe | files |
|---|---|---|---|
| ``compile`` | CPU, CUDA | ``mode``, ``dynamic``, ``backend`` | none |
| ``compile-cudagraphs`` | CUDA | ``dynamic``, ``backend`` | none |
| ``cudagraph`` | CUDA | ``dtype`` | none |
| ``bf16`` / ``half`` | CUDA | ``dtype`` | none |
| ``onnx``, ``onnx-int8-dynamic``, ``onnx-int8-static`` | CPU, CUDA | names, outputs | ``.onnx`` |
| ``int8-dynamic`` | CPU | ``state`` (flattening meta) | one ``.safetensors`` |
| ``int8-weight`` | CPU, CUDA | ``embeddings`` | one ``.safetensors`` |
| ``placement`` | CPU, CUDA | ``assignment``, ``io_device`` | none |

Plugins (entry-point group ``abyssal.optimizations``): an installed package adds a method by
declaring a :class:`Variant` object, e.g. ``bf16-weights = "acme_quant:BF16_WEIGHTS"`` under
``[project.entry-points."abyssal.optimizations"]``. The entry's name is the method's name (give
the Variant the same ``name``). Its ``load(model, recipe, files, ctx)`` runs the child version;
its optional ``build(method, ctx)`` makes the candidate that ``abyssal optimize --methods NAME``
measures (see :mod:`abyssal.optimize.candidates` for the contract; without ``build`` the method
is built from its ``recipe`` alone, with no files). The plugin is imported only when the method is
used; an import that fails names the package.

Example:
    >>> ctx = LoadContext(torch.device("cpu"))
    >>> fast = load_variant(model, "compile", {"mode": "default"}, {}, ctx)  # doctest: +SKIP
    >>> fast(x).shape == model(x).shape  # doctest: +SKIP
    True
"""

from __future__ import annotations

import copy
import json
import logging
import os
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from abyssal.core.home import abyssal_home
from abyssal.core.registry import Registry
from abyssal.core.state_flatten import unflatten_state
from abyssal.nn.int8 import (
    WeightOnlyInt8Embedding,
    WeightOnlyInt8Linear,
    dynamic_int8_state,
    int8_weight_state,
    quantize_linear_dynamic,
    quantize_per_channel,
    quantize_weights_int8,
    quiet_quantization,
)
from abyssal.nn.variant_runners import (
    MAX_CUDA_GRAPHS,
    CudaGraphRunner,
    DynamicAxesRunner,
    LowPrecisionRunner,
    OnnxRunner,
    VariantError,
    flatten_outputs,
    input_position,
    rebuild_outputs,
)

__all__ = [
    "MAX_CUDA_GRAPHS",
    "VARIANTS",
    "CudaGraphRunner",
    "DynamicAxesRunner",
    "LoadContext",
    "LowPrecisionRunner",
    "MethodBuilder",
    "OnnxRunner",
    "OptimizedModel",
    "Variant",
    "VariantError",
    "WeightOnlyInt8Embedding",
    "WeightOnlyInt8Linear",
    "dynamic_int8_state",
    "flatten_outputs",
    "inductor_cache_dir",
    "input_position",
    "int8_weight_state",
    "load_variant",
    "plugin_checked",
    "quantize_linear_dynamic",
    "quantize_per_channel",
    "quantize_weights_int8",
    "rebuild_outputs",
]

INDUCTOR_CACHE_ENV = "TORCHINDUCTOR_CACHE_DIR"

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_COMPILE_MODES = ("default", "reduce-overhead", "max-autotune-no-cudagraphs")


class OptimizedModel(nn.Module):
    """The eager model with a faster way to run its ``forward``.

    ``base`` stays a submodule, so ``.parameters()``, ``.eval()`` and ``.to()`` reach it, and any
    attribute the wrapper lacks is read from it (``model.encoder.in_features``). ``state_dict`` and
    ``load_state_dict`` are the base's, without a ``base.`` prefix (the parent version's keys,
    unless the variant quantized the base). ``runner`` is not a
    submodule: it shares the base's weights (compiled, CUDA graphs) or holds none of torch's
    (ONNX Runtime), and ``.to()`` does not move what it holds of its own.

    Args:
        base: the eager model (possibly quantized or cast in place by the variant).
        runner: called with ``forward``'s arguments.
        method: the variant's name in :data:`VARIANTS`.
        recipe: the JSON recipe stored with the version.

    Example:
        >>> fast = OptimizedModel(model, torch.compile(model), "compile", {})  # doctest: +SKIP
        >>> fast.encoder is model.encoder  # doctest: +SKIP
        True
    """

    def __init__(
        self,
        base: nn.Module,
        runner: Callable[..., Any],
        method: str = "",
        recipe: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.base = base
        object.__setattr__(self, "runner", runner)  # not registered: no duplicate parameters
        self.method = method
        self.recipe = dict(recipe or {})

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Run the variant on ``forward``'s arguments."""
        return self.runner(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            base = self.__dict__.get("_modules", {}).get("base")
            if base is None or name == "base":
                raise
            return getattr(base, name)

    def state_dict(self, *args: Any, **kwargs: Any) -> Any:
        """The base's state dict (no ``base.`` prefix)."""
        return self.base.state_dict(*args, **kwargs)

    def load_state_dict(
        self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False
    ):
        """Load into the base (no ``base.`` prefix)."""
        return self.base.load_state_dict(state_dict, strict=strict, assign=assign)

    def extra_repr(self) -> str:
        return f"method={self.method!r}"


@dataclass
class LoadContext:
    """What a variant loader may need besides the model, recipe and files.

    Args:
        device: where the model is (and runs).
        example_inputs: returns ``forward``'s positional example inputs (graph capture).
        input_axes: per positional input, axis -> name (``{0: "batch"}``) of the axes that vary.
    """

    device: torch.device
    example_inputs: Callable[[], tuple] | None = None
    input_axes: tuple[dict[int, str], ...] | None = None


VariantLoader = Callable[[nn.Module, dict, Mapping[str, Path], LoadContext], nn.Module]
MethodBuilder = Callable[[Any, Any], Any]
"""``build(method, ctx) -> Candidate``, with ``Method``, ``BuildContext`` and ``Candidate`` of
:mod:`abyssal.optimize.candidates` (a layer above this one, so not named in the type): how
``abyssal optimize`` makes a plugin method's candidate."""


@dataclass(frozen=True)
class Variant:
    """One runtime variant: its name, the device types it runs on, its loader and, for a plugin
    method, how ``abyssal optimize`` builds it.

    Args:
        name: the method name stored with a version (a plugin: its entry point's name).
        targets: device types it runs on (``("cuda",)``, ``("cpu", "cuda")``); for a plugin
            method also the ``--target`` values it is offered for.
        summary: one line for listings.
        load: ``load(model, recipe, files, ctx)`` -> the model to run (an :class:`OptimizedModel`;
            a plain module is wrapped in one). ``model`` is the eager model with the parent's
            weights on ``ctx.device``; ``files`` maps the version's own artifact names to paths.
        build: plugin methods only: ``build(method, ctx)`` -> a
            :class:`~abyssal.optimize.candidates.Candidate`, called by ``abyssal optimize``;
            ``None``: built from ``recipe`` alone (no files). abyssal's own variants leave it
            ``None`` (their builders live in :mod:`abyssal.optimize.candidates`).
        recipe: the JSON recipe ``build`` starts from (``method.recipe``), stored with the child.

    Example:
        >>> Variant("bf16-weights", ("cpu",), "weights rounded through bfloat16", load,
        ...         build=build)  # doctest: +SKIP
    """

    name: str
    targets: tuple[str, ...]
    summary: str
    load: VariantLoader
    build: MethodBuilder | None = None
    recipe: Mapping[str, Any] = field(default_factory=dict, hash=False)


VARIANTS: Registry[Variant] = Registry("optimization method", group="abyssal.optimizations")
"""Every runtime variant by method name."""


def _variant(name: str, targets: tuple[str, ...], summary: str) -> Callable:
    def add(load: VariantLoader) -> VariantLoader:
        VARIANTS.add(name, Variant(name, targets, summary, load), summary=summary)
        return load

    return add


def load_variant(
    model: nn.Module,
    method: str,
    recipe: Mapping[str, Any],
    files: Mapping[str, str | os.PathLike[str]],
    ctx: LoadContext,
) -> OptimizedModel:
    """Turn the freshly built eager model (parent's weights, on ``ctx.device``) into ``method``.

    Args:
        model: the eager model; quantizing and casting variants change it in place.
        method: a name in :data:`VARIANTS`.
        recipe: the JSON recipe stored with the version.
        files: the version's own artifact files, name -> local path.
        ctx: device, example inputs and varying axes.

    Returns:
        The model to run, in eval mode if ``model`` was.

    Raises:
        VariantError: an unknown method (the valid ones are listed), a device the method does not
            run on (``"... needs CUDA"``), a bad recipe or files.

    Example:
        >>> load_variant(model, "int8-dynamic", recipe, {"model.int8.safetensors": p}, ctx)
        ... # doctest: +SKIP
    """
    if method not in VARIANTS:
        raise VariantError(
            f"unknown optimization method '{method}'; valid: {', '.join(VARIANTS.names())}"
        )
    variant = plugin_checked(method, VARIANTS.get(method))
    _check_device(variant, torch.device(ctx.device))
    paths = {k: Path(v) for k, v in files.items()}
    origin = VARIANTS.origin(method)
    if origin is None:
        loaded = variant.load(model, dict(recipe), paths, ctx)
    else:  # a plugin's failure names its package
        try:
            loaded = variant.load(model, dict(recipe), paths, ctx)
        except Exception as exc:
            raise VariantError(
                f"optimization method '{method}' from the plugin package {origin.package} "
                f"{origin.version} failed to load: {type(exc).__name__}: {exc}"
            ) from exc
    if not isinstance(loaded, OptimizedModel):
        loaded = OptimizedModel(model, loaded)
    loaded.method, loaded.recipe = method, dict(recipe)
    return loaded.train(model.training)


def plugin_checked(name: str, variant: Any) -> Variant:
    """``variant`` if it is a :class:`Variant`; else an error naming the plugin that gave it.

    Raises:
        VariantError: the entry is not a Variant (named with its package and version).
    """
    if isinstance(variant, Variant):
        return variant
    origin = VARIANTS.origin(name)
    where = f" from the plugin package {origin.package} {origin.version}" if origin else ""
    raise VariantError(
        f"optimization method '{name}'{where} is a {type(variant).__name__}, not an "
        "abyssal.nn.variants.Variant"
    )


def _check_device(variant: Variant, device: torch.device) -> None:
    if device.type not in variant.targets:
        need = " or ".join("CUDA" if t == "cuda" else t.upper() for t in variant.targets)
        raise VariantError(f"'{variant.name}' needs {need}; the model is on {device}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise VariantError(f"'{variant.name}' needs CUDA; no CUDA device is available")


# ---------------------------------------------------------------- recipe and files helpers


def _choice(recipe: Mapping[str, Any], key: str, choices: Sequence[Any], default: Any) -> Any:
    value = recipe.get(key, default)
    if value not in choices:
        shown = ", ".join(repr(c) for c in choices)
        raise VariantError(f"recipe '{key}' is {value!r}; choose one of: {shown}")
    return value


def _one_file(files: Mapping[str, Path], suffix: str, method: str) -> Path:
    found = [path for name, path in files.items() if name.endswith(suffix)]
    if len(found) != 1:
        raise VariantError(
            f"'{method}' needs exactly one '{suffix}' file, the version has {sorted(files)}"
        )
    return found[0]


def _dtype(recipe: Mapping[str, Any], default: str, allowed: Sequence[str]) -> torch.dtype:
    return _DTYPES[_choice(recipe, "dtype", allowed, default)]


# ---------------------------------------------------------------- torch.compile


def inductor_cache_dir() -> Path:
    """Where Inductor keeps compiled artefacts: ``$TORCHINDUCTOR_CACHE_DIR`` if the user set it,
    else ``<abyssal home>/cache/inductor`` (and the variable is set to it for this process), so
    a second process loading the same version reuses the compiled kernels.

    Example:
        >>> inductor_cache_dir()  # doctest: +SKIP
        PosixPath('/home/me/.abyssal/cache/inductor')
    """
    given = os.environ.get(INDUCTOR_CACHE_ENV)
    if given:
        return Path(given)
    folder = abyssal_home() / "cache" / "inductor"
    os.environ[INDUCTOR_CACHE_ENV] = str(folder)
    return folder


def _compile(model: nn.Module, recipe: dict, ctx: LoadContext, mode: str) -> OptimizedModel:
    backend = recipe.get("backend", "inductor")
    dynamic = recipe.get("dynamic")
    if not isinstance(backend, str) or dynamic not in (True, False, None):
        raise VariantError(
            f"recipe 'backend' must be a name and 'dynamic' true, false or null, got "
            f"{backend!r} and {dynamic!r}"
        )
    inductor_cache_dir()
    if ctx.device.type == "cpu":  # Inductor notes the missing CUDA runtime when it builds C++
        logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    options: dict[str, Any] = {"backend": backend, "dynamic": dynamic}
    if backend == "inductor":
        options["mode"] = mode
    compiled = torch.compile(model, **options)
    return OptimizedModel(model, DynamicAxesRunner(compiled, ctx.input_axes))


@_variant("compile", ("cpu", "cuda"), "torch.compile (Inductor), batch axis dynamic")
def _load_compile(model: nn.Module, recipe: dict, files: Mapping[str, Path], ctx: LoadContext):
    """``torch.compile(model, mode=..., dynamic=...)``; compiles on the first call.

    Recipe: ``mode`` (``default``, ``reduce-overhead``, ``max-autotune-no-cudagraphs``),
    ``dynamic`` (true, false, null), ``backend`` (default ``inductor``; ``eager`` or
    ``aot_eager`` for tests). Inductor's on-disk cache is :func:`inductor_cache_dir`.
    """
    return _compile(model, recipe, ctx, _choice(recipe, "mode", _COMPILE_MODES, "default"))


@_variant("compile-cudagraphs", ("cuda",), "torch.compile mode reduce-overhead (CUDA graphs)")
def _load_compile_cudagraphs(model: nn.Module, recipe: dict, files, ctx: LoadContext):
    """``compile`` with mode ``reduce-overhead`` (Inductor's CUDA graph trees)."""
    return _compile(model, recipe, ctx, "reduce-overhead")


@_variant("cudagraph", ("cuda",), "whole-model CUDA graph replay, one graph per input shape")
def _load_cudagraph(model: nn.Module, recipe: dict, files, ctx: LoadContext):
    """:class:`CudaGraphRunner`; recipe ``dtype``: ``float32`` (default), ``bfloat16``,
    ``float16`` (a copy of the model is cast to it; the base keeps FP32 for callers of its other
    methods, such as a live scorer that runs layers one by one)."""
    dtype = _dtype(recipe, "float32", tuple(_DTYPES))
    runs = copy.deepcopy(model).to(dtype) if dtype != torch.float32 else model
    return OptimizedModel(model, CudaGraphRunner(runs, torch.device(ctx.device), dtype))


def _load_low_precision(default: str):
    def load(model: nn.Module, recipe: dict, files, ctx: LoadContext) -> OptimizedModel:
        """Eager forward in half precision on a cast copy; recipe ``dtype``: ``bfloat16`` or
        ``float16``. The base keeps FP32 for callers of its other methods."""
        dtype = _dtype(recipe, default, ("bfloat16", "float16"))
        return OptimizedModel(model, LowPrecisionRunner(copy.deepcopy(model).to(dtype), dtype))

    return load


_variant("bf16", ("cuda",), "eager forward in bfloat16")(_load_low_precision("bfloat16"))
_variant("half", ("cuda",), "eager forward in float16")(_load_low_precision("float16"))


def _load_onnx(model: nn.Module, recipe: dict, files: Mapping[str, Path], ctx: LoadContext):
    """:class:`OnnxRunner` over the version's one ``.onnx`` file.

    Recipe: ``input_names``, ``input_positions``, ``output_names`` (informative), ``outputs``
    (the output structure), ``providers`` (e.g. ``["CUDAExecutionProvider"]``),
    ``intra_op_num_threads``, ``arity`` (the number of positional inputs it was exported with;
    a call with another number is refused rather than fed in part).
    """
    path = _one_file(files, ".onnx", "onnx")
    arity = recipe.get("arity")
    runner = OnnxRunner(
        path,
        input_names=recipe.get("input_names"),
        input_positions=recipe.get("input_positions"),
        outputs=recipe.get("outputs"),
        providers=recipe.get("providers"),
        intra_op_num_threads=recipe.get("intra_op_num_threads"),
    )
    if arity is None:
        return OptimizedModel(model, runner)

    def run(*args: Any) -> Any:
        if len(args) != arity:
            raise VariantError(
                f"this ONNX graph was exported for {arity} inputs and is called with "
                f"{len(args)}; optimize the model with inputs shaped like this call"
            )
        return runner(*args)

    return OptimizedModel(model, run)


_variant("onnx", ("cpu", "cuda"), "ONNX Runtime session (FP32)")(_load_onnx)
_variant("onnx-int8-dynamic", ("cpu", "cuda"), "ONNX Runtime, dynamic INT8")(_load_onnx)
_variant("onnx-int8-static", ("cpu", "cuda"), "ONNX Runtime, static QDQ INT8")(_load_onnx)


@_variant("int8-dynamic", ("cpu",), "torch dynamic INT8 of nn.Linear (CPU)")
def _load_int8_dynamic(model: nn.Module, recipe: dict, files: Mapping[str, Path], ctx):
    """Quantize the fresh model as :func:`quantize_linear_dynamic` does, then load the stored
    quantized state (:func:`dynamic_int8_state`); the meta is ``recipe["state"]`` or the
    version's one ``.json`` file."""
    tensors = load_file(str(_one_file(files, ".safetensors", "int8-dynamic")))
    meta = recipe.get("state")
    if meta is None:
        meta = json.loads(_one_file(files, ".json", "int8-dynamic").read_text())
    quantized = quantize_linear_dynamic(model, inplace=True)
    with quiet_quantization():
        _load_part(quantized, unflatten_state(tensors, meta), "int8-dynamic")
    return OptimizedModel(quantized, quantized)


def _load_part(model: nn.Module, state: Mapping[str, Any], method: str) -> None:
    """Load ``state`` (part of the model's keys) and refuse keys that do not fit."""
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        raise VariantError(f"{method}: the stored state does not fit the model: {exc}") from exc
    if result.unexpected_keys:
        raise VariantError(
            f"{method}: the stored state has keys the quantized model lacks: "
            f"{sorted(result.unexpected_keys)[:10]}"
        )


@_variant("int8-weight", ("cpu", "cuda"), "weight-only INT8 Linear/Embedding (per channel)")
def _load_int8_weight(model: nn.Module, recipe: dict, files: Mapping[str, Path], ctx):
    """:func:`quantize_weights_int8` (recipe ``embeddings``, default true), then the stored INT8
    weights and scales (:func:`int8_weight_state`) are loaded over the fresh ones."""
    tensors = load_file(str(_one_file(files, ".safetensors", "int8-weight")))
    embeddings = _choice(recipe, "embeddings", (True, False), True)
    quantized = quantize_weights_int8(model, embeddings=embeddings)
    missing = set(int8_weight_state(quantized)) - set(tensors)
    if missing:
        raise VariantError(f"int8-weight: the stored file lacks {sorted(missing)[:10]}")
    _load_part(quantized, tensors, "int8-weight")
    return OptimizedModel(quantized, quantized)


# ---------------------------------------------------------------- device placement


@_variant("placement", ("cpu", "cuda"), "captured graph split over devices")
def _load_placement(model: nn.Module, recipe: dict, files, ctx: LoadContext):
    """Capture the model's graph and place its nodes as the recipe says.

    The graph is captured on ``ctx.example_inputs()`` at load (so a changed model is refused
    at once) and again for each new input signature whose shapes that graph does not hold (a
    graph exported with fixed shapes); up to :data:`PLACED_GRAPHS` placed graphs are kept.

    Recipe: ``assignment`` (node name -> device), ``io_device`` (default ``cpu``), ``dynamic``
    (passed to capture).
    """
    assignment = recipe.get("assignment")
    if not isinstance(assignment, Mapping) or not assignment:
        raise VariantError("placement: recipe 'assignment' must map node names to devices")
    if ctx.example_inputs is None:
        raise VariantError("placement needs the model's example inputs to re-capture its graph")
    dynamic = recipe.get("dynamic")
    if dynamic is not None:  # JSON turned the axis numbers into strings
        dynamic = [{int(k): v for k, v in (axes or {}).items()} for axes in dynamic]
    runner = PlacedRunner(model, dict(assignment), recipe.get("io_device", "cpu"), dynamic)
    runner.graph_for(tuple(ctx.example_inputs()))
    return OptimizedModel(model, runner)


PLACED_GRAPHS = 8
"""How many placed graphs (one per input signature) the placement variant keeps."""


class PlacedRunner:
    """Runs the placed graph that fits the inputs, capturing and placing one when none does."""

    def __init__(
        self, model: nn.Module, assignment: dict[str, str], io_device: str, dynamic: Any
    ) -> None:
        self.model, self.assignment, self.io_device = model, assignment, io_device
        self.dynamic = dynamic
        self.graphs: OrderedDict[tuple, Any] = OrderedDict()
        self.shape_free: Any = None  # a graph with dynamic axes serves every signature

    def __call__(self, *args: Any) -> Any:
        io = torch.device(self.io_device)  # the graph expects its inputs there
        args = tuple(a.to(io) if isinstance(a, torch.Tensor) else a for a in args)
        return self.graph_for(args)(*args)

    def graph_for(self, args: tuple) -> Any:
        if self.shape_free is not None:
            return self.shape_free
        key = tuple(
            (tuple(a.shape), a.dtype) if isinstance(a, torch.Tensor) else repr(a) for a in args
        )
        if key in self.graphs:
            self.graphs.move_to_end(key)
            return self.graphs[key]
        from abyssal.nn.capture import capture, place

        graph = capture(self.model, args, dynamic=self.dynamic)
        names = {node.name for node in graph.module.graph.nodes}
        missing = sorted(set(self.assignment) - names)
        if missing:
            raise VariantError(
                f"placement: the re-captured graph ({graph.method}) has no node(s) "
                f"{', '.join(missing[:10])}; the model changed since the placement was measured"
            )
        placed = place(graph.module, self.assignment, self.io_device)
        if graph.method == "export" and "dynamic axes dropped" not in graph.note and self.dynamic:
            self.shape_free = placed
            return placed
        self.graphs[key] = placed
        while len(self.graphs) > PLACED_GRAPHS:
            self.graphs.popitem(last=False)
        return placed
