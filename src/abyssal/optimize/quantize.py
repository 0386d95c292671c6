"""INT8 builders for ``abyssal optimize``: what an INT8 child version stores.

Torch builders share their code with the loaders in :mod:`abyssal.nn.variants` (so a loaded
version runs what was measured): :func:`dynamic_int8` (``int8-dynamic``) and
:func:`weight_only_int8` (``int8-weight``) return the tensors to store. ONNX builders quantize an
exported FP32 file with ONNX Runtime's tools: :func:`onnx_int8_dynamic` (weights INT8,
activations quantized per call; for transformers and MLPs) and :func:`onnx_int8_static` (QDQ,
activation ranges calibrated on real inputs; for CNNs). Every file is written whole: intermediate
files live in a temporary folder beside the destination, which is renamed into place.

Measure before trusting: on a 2-core CPU, static QDQ INT8 was not faster than FP32 for ResNet-50.

Example:
    >>> onnx_int8_dynamic(Path("model.onnx"), Path("model.int8.onnx"))  # doctest: +SKIP
    PosixPath('model.int8.onnx')
"""

from __future__ import annotations

import contextlib
import copy
import logging
import tempfile
from collections.abc import Callable, Iterable, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from abyssal.core.atomic import move_into_place
from abyssal.core.errors import AbyssalError
from abyssal.core.logs import quiet_loggers
from abyssal.core.optional import require
from abyssal.core.state_flatten import storable_tensors
from abyssal.nn.int8 import (
    dynamic_int8_state,
    int8_weight_state,
    quantize_linear_dynamic,
    quantize_weights_int8,
)
from abyssal.nn.variant_runners import VariantError, first_line

log = logging.getLogger(__name__)

DYNAMIC_OPS = ("MatMul", "Attention", "LSTM")
"""Operators :func:`onnx_int8_dynamic` quantizes (2-D ``Gemm`` is rewritten to ``MatMul`` first;
``Conv`` is left to static quantization, ORT's dynamic ``ConvInteger`` is slow on CPU)."""

EMBEDDING_OPS = ("Gather", "EmbedLayerNormalization")
"""Added to :data:`DYNAMIC_OPS` with ``embeddings=True``: INT8 embedding tables."""

CALIBRATION_METHODS = ("minmax", "percentile", "entropy")


class QuantizationError(AbyssalError):
    """An INT8 version could not be built; the message names the step that failed."""


def dynamic_int8(model: nn.Module) -> tuple[nn.Module, dict[str, torch.Tensor], dict[str, Any]]:
    """Dynamic INT8 of every ``nn.Linear`` (the ``int8-dynamic`` variant), on a copy of ``model``.

    Args:
        model: a float model on the CPU.

    Returns:
        ``(quantized model, tensors, meta)``: store the tensors as one safetensors file and the
        meta in the recipe under ``"state"``.

    Raises:
        QuantizationError: the model is not on the CPU or has no ``nn.Linear``.

    Example:
        >>> module, tensors, meta = dynamic_int8(mlp)  # doctest: +SKIP
        >>> recipe = {"state": meta}  # doctest: +SKIP
    """
    _check_cpu(model, "dynamic_int8")
    try:
        quantized = quantize_linear_dynamic(model, inplace=False)
        tensors, meta = dynamic_int8_state(quantized)
    except VariantError as exc:
        raise QuantizationError(f"dynamic_int8: {exc}") from exc
    except RuntimeError as exc:
        raise QuantizationError(f"dynamic_int8: {first_line(exc)}") from exc
    return quantized, storable_tensors(tensors), meta


def weight_only_int8(
    model: nn.Module, embeddings: bool = True
) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """Weight-only INT8 (the ``int8-weight`` variant) of a copy of ``model``.

    Args:
        model: a float model (any device).
        embeddings: quantize ``nn.Embedding`` tables too (store ``{"embeddings": ...}`` in the
            recipe).

    Returns:
        ``(quantized model, tensors)``: the INT8 weights and per-channel scales, for one
        safetensors file.

    Raises:
        QuantizationError: the model has no ``nn.Linear`` (or ``nn.Embedding``) to quantize.

    Example:
        >>> module, tensors = weight_only_int8(mlp)  # doctest: +SKIP
    """
    quantized = quantize_weights_int8(copy.deepcopy(model), embeddings=embeddings)
    try:
        tensors = int8_weight_state(quantized)
    except VariantError as exc:
        raise QuantizationError(f"weight_only_int8: {exc}") from exc
    return quantized, storable_tensors(tensors)


def onnx_int8_dynamic(
    src: Path,
    dst: Path,
    *,
    per_channel: bool = True,
    embeddings: bool = True,
    reduce_range: bool | None = None,
) -> Path:
    """Dynamic INT8 of an FP32 ONNX file with ``onnxruntime.quantization.quantize_dynamic``.

    Steps: ORT's ``quant_pre_process`` (shape inference and graph optimisation; without symbolic
    shape inference where that fails, as exported where both fail), ``Gemm`` with constant
    weights rewritten as ``MatMul`` + ``Add`` (ORT quantizes ``MatMul`` dynamically, not
    ``Gemm``), then ``quantize_dynamic`` with QInt8 weights on :data:`DYNAMIC_OPS` (+
    :data:`EMBEDDING_OPS` with ``embeddings``, so an embedding-heavy transformer shrinks about
    4x).

    Args:
        src: the FP32 file.
        dst: the file to write (replaced atomically).
        per_channel: one weight scale per output channel (default: measured on
            all-MiniLM-L6-v2, per-tensor weights gave a mean cosine of 0.93 to the FP32
            embeddings, per-channel 0.99, at the same latency).
        embeddings: quantize ``Gather`` tables (embeddings) too.
        reduce_range: 7-bit weights; default: only where the CPU lacks VNNI. On x86 CPUs
            without VNNI (AVX2, plain AVX-512), ORT's ``MatMulInteger`` multiplies uint8
            activations by int8 weights with ``VPMADDUBSW``, which saturates each pair of
            products at int16: with full-range int8 weights, outputs were off by up to 0.25
            for a small MLP (7-bit weights: 0.01). A file built on a VNNI CPU for serving on
            one without should pass ``True``.

    Returns:
        ``dst``.

    Raises:
        QuantizationError: a step failed; the message names it.

    Example:
        >>> onnx_int8_dynamic(Path("bert.onnx"), Path("bert.int8.onnx"))  # doctest: +SKIP
        PosixPath('bert.int8.onnx')
    """
    quantization = _ort_quantization()
    ops = [*DYNAMIC_OPS, *(EMBEDDING_OPS if embeddings else ())]
    if reduce_range is None:
        reduce_range = not cpu_has_vnni()
    with _workspace(src, dst) as work:
        prepared = _preprocess(src, work / "pre.onnx", required=False)
        rewritten = _step("onnx_int8_dynamic", "Gemm rewrite", _rewrite_gemm, prepared, work)
        _step(
            "onnx_int8_dynamic",
            "quantize_dynamic",
            lambda: quantization.quantize_dynamic(
                rewritten,
                work / "out.onnx",
                op_types_to_quantize=ops,
                per_channel=per_channel,
                reduce_range=reduce_range,
                weight_type=quantization.QuantType.QInt8,
            ),
        )
        move_into_place(work / "out.onnx", dst)
    return Path(dst)


def onnx_int8_static(
    src: Path,
    dst: Path,
    calibration: Iterable[Mapping[str, np.ndarray]],
    *,
    per_channel: bool = True,
    method: str = "minmax",
    reduce_range: bool | None = None,
) -> Path:
    """Static QDQ INT8 of an FP32 ONNX file, calibrated on ``calibration``'s feeds.

    Follows ORT's guidance for x86 CPUs: QDQ format, QUInt8 activations, QInt8 weights,
    ``reduce_range`` (7-bit weights) only on CPUs without VNNI. Steps: ``quant_pre_process``,
    calibration (MinMax by default) and ``quantize_static``.

    Args:
        src: the FP32 file.
        dst: the file to write (replaced atomically).
        calibration: feeds (input name -> array), e.g. :meth:`OnnxExport.feed` of real batches;
            a few dozen samples are usually enough.
        per_channel: one weight scale per output channel (better accuracy for convolutions).
        method: ``minmax``, ``percentile`` or ``entropy``.
        reduce_range: 7-bit weights; default: only where the CPU lacks VNNI.

    Returns:
        ``dst``.

    Raises:
        QuantizationError: no calibration feed, an unknown method, or a step failed (named).

    Example:
        >>> onnx_int8_static(Path("cnn.onnx"), Path("cnn.int8.onnx"), feeds)  # doctest: +SKIP
        PosixPath('cnn.int8.onnx')
    """
    quantization = _ort_quantization()
    if method not in CALIBRATION_METHODS:
        raise QuantizationError(
            f"onnx_int8_static: unknown calibration method '{method}'; choose one of: "
            f"{', '.join(CALIBRATION_METHODS)}"
        )
    calibrate = getattr(quantization.CalibrationMethod, _METHOD_NAMES[method])
    reader = _feed_reader(quantization, calibration)
    if reduce_range is None:
        reduce_range = not cpu_has_vnni()
    with _workspace(src, dst) as work:
        prepared = _preprocess(src, work / "pre.onnx", required=True)
        _step(
            "onnx_int8_static",
            "calibration and quantize_static",
            lambda: quantization.quantize_static(
                prepared,
                work / "out.onnx",
                reader,
                quant_format=quantization.QuantFormat.QDQ,
                per_channel=per_channel,
                reduce_range=reduce_range,
                activation_type=quantization.QuantType.QUInt8,
                weight_type=quantization.QuantType.QInt8,
                calibrate_method=calibrate,
            ),
        )
        move_into_place(work / "out.onnx", dst)
    return Path(dst)


_METHOD_NAMES = {"minmax": "MinMax", "percentile": "Percentile", "entropy": "Entropy"}


def cpu_has_vnni() -> bool:
    """Whether this CPU has 8-bit dot-product instructions (AVX-512 VNNI, AVX-VNNI, AMX), read
    from ``/proc/cpuinfo``; ``False`` where that cannot be read.

    Example:
        >>> isinstance(cpu_has_vnni(), bool)
        True
    """
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags = set(text.split())
    return bool(flags & {"avx512_vnni", "avx_vnni", "amx_int8"})


def _ort_quantization() -> Any:
    require("onnx", extra="optimize", purpose="ONNX quantization")
    return require("onnxruntime.quantization", extra="optimize", purpose="ONNX quantization")


def _check_cpu(model: nn.Module, what: str) -> None:
    devices = {t.device.type for t in (*model.parameters(), *model.buffers())}
    if devices - {"cpu"}:
        raise QuantizationError(
            f"{what}: torch dynamic INT8 runs on the CPU; the model is on "
            f"{', '.join(sorted(devices))} (move it with .cpu())"
        )


@contextmanager
def _workspace(src: Path, dst: Path):
    """A temporary folder beside ``dst`` (same file system, so the final rename is atomic)."""
    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise QuantizationError(f"ONNX file '{src}' does not exist")
    dst.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dst.parent, prefix=f".{dst.name}.") as folder:
        yield Path(folder)


def _step(what: str, step: str, fn: Callable[..., Any], *args: Any) -> Any:
    """Run one step; its failure names ``what`` and ``step``. ORT's quantization tools log
    their notes (per-channel axes of 1-D weights, shape inference) to the root logger: only
    errors pass while a step runs."""
    try:
        with quiet_loggers(""):
            return fn(*args)
    except QuantizationError:
        raise
    except Exception as exc:  # ORT and onnx raise many types
        raise QuantizationError(f"{what}: {step} failed: {first_line(exc)}") from exc


def _preprocess(src: Path, out: Path, *, required: bool) -> Path:
    """ORT's ``quant_pre_process`` into ``out``: symbolic shape inference and graph optimisation;
    where symbolic inference fails (it does on exported transformers), ONNX's own shape inference
    only; where that fails too, the file as exported (dynamic) or an error (static)."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    errors = []
    source, target = str(Path(src).resolve()), str(out.resolve())
    for skip_symbolic in (False, True):
        try:
            # ORT's symbolic shape inference saves its partial result (and a weights file) into
            # the working directory when it fails: run it in the temporary folder instead
            with contextlib.chdir(out.parent):
                quant_pre_process(source, target, skip_symbolic_shape=skip_symbolic)
            return out
        except Exception as exc:  # ORT's shape inference raises many types
            errors.append(first_line(exc))
    if required:
        raise QuantizationError(
            f"preprocessing (quant_pre_process) of '{src}' failed: {errors[-1]}"
        )
    log.warning("quant_pre_process of %s failed (%s); quantizing it as exported", src, errors)
    return Path(src)


def _rewrite_gemm(path: Path, work: Path) -> Path:
    """``Gemm(A, B, C)`` with a constant ``B`` and ``alpha = beta = 1``, ``transA = 0`` becomes
    ``MatMul(A, B or B^T) + C``, which ``quantize_dynamic`` handles; the file is rewritten only
    when there was such a node."""
    onnx = require("onnx", extra="optimize", purpose="ONNX quantization")
    from onnx import helper, numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    inits = {init.name: init for init in graph.initializer}
    nodes, changed = [], 0
    for node in graph.node:
        replacement = _matmul_for(node, inits, graph, helper, numpy_helper)
        nodes.extend(replacement or [node])
        changed += replacement is not None
    if not changed:
        return path
    del graph.node[:]
    graph.node.extend(nodes)
    used = {name for node in graph.node for name in node.input}
    kept = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    out = work / "matmul.onnx"
    onnx.save(model, str(out))
    return out


def _matmul_for(node: Any, inits: dict, graph: Any, helper: Any, numpy_helper: Any) -> list | None:
    if node.op_type != "Gemm" or len(node.input) < 2 or node.input[1] not in inits:
        return None
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0:
        return None
    weight_name = node.input[1]
    if attrs.get("transB", 0):
        weight = numpy_helper.to_array(inits[weight_name]).T.copy()
        weight_name = f"{weight_name}_transposed_{node.name or len(inits)}"
        graph.initializer.append(numpy_helper.from_array(weight, weight_name))
        inits[weight_name] = graph.initializer[-1]
    has_bias = len(node.input) > 2 and node.input[2]
    product = f"{node.output[0]}_matmul" if has_bias else node.output[0]
    name = node.name or node.output[0]
    out = [helper.make_node("MatMul", [node.input[0], weight_name], [product], name=f"{name}_mm")]
    if has_bias:
        out.append(
            helper.make_node("Add", [product, node.input[2]], [node.output[0]], name=f"{name}_add")
        )
    return out


def _feed_reader(quantization: Any, calibration: Iterable[Mapping[str, np.ndarray]]) -> Any:
    feeds = [{name: np.asarray(value) for name, value in feed.items()} for feed in calibration]
    if not feeds:
        raise QuantizationError("onnx_int8_static: no calibration feeds were given")

    class FeedReader(quantization.CalibrationDataReader):
        def __init__(self) -> None:
            self._feeds = iter(feeds)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._feeds, None)

    return FeedReader()
