"""INT8 weights in torch: dynamic quantization of ``nn.Linear`` and weight-only INT8 modules.

Both ``abyssal optimize`` (building a version) and :mod:`abyssal.nn.variants` (loading it) use
these functions, so a loaded version runs exactly what was measured.

Example:
    >>> model = quantize_weights_int8(nn.Sequential(nn.Linear(16, 4)))
    >>> sorted(int8_weight_state(model))
    ['0.weight_int8', '0.weight_scale']
"""

from __future__ import annotations

import contextlib
import warnings
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from abyssal.core.state_flatten import flatten_state
from abyssal.nn.variant_runners import VariantError

_QUANT_WARNINGS = (
    r".*torch\.ao\.quantization is deprecated.*",
    r".*quantized tensor creation functions.*",
)


@contextlib.contextmanager
def quiet_quantization() -> Iterator[None]:
    """Silence torch.ao's deprecation warnings (the API still works in this torch)."""
    with warnings.catch_warnings():
        for message in _QUANT_WARNINGS:
            warnings.filterwarnings("ignore", message=message)
        yield


def quantize_linear_dynamic(model: nn.Module, *, inplace: bool = False) -> nn.Module:
    """Dynamic INT8 quantization of every ``nn.Linear`` (qint8 weights, activations quantized
    per call), as ``torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, torch.qint8)``.

    Only modules whose type is exactly ``nn.Linear`` are replaced (the out-projection of
    ``nn.MultiheadAttention`` is left alone). CPU only (fbgemm / qnnpack kernels).

    Args:
        model: a float model on the CPU.
        inplace: change ``model`` itself (the loader) instead of a copy (the builder).

    Returns:
        The quantized model.

    Example:
        >>> quantize_linear_dynamic(nn.Sequential(nn.Linear(4, 2)))[0]  # doctest: +ELLIPSIS
        DynamicQuantizedLinear(in_features=4, out_features=2, dtype=torch.qint8, ...)
    """
    with quiet_quantization():
        return torch.ao.quantization.quantize_dynamic(
            model, {nn.Linear}, dtype=torch.qint8, inplace=inplace
        )


def dynamic_int8_state(quantized: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """What an ``int8-dynamic`` version stores: the state of its quantized ``Linear`` modules,
    flattened with :func:`~abyssal.core.state_flatten.flatten_state` (the rest of the model is
    the parent's weights).

    Returns:
        ``(tensors, meta)``: the tensors go in one safetensors file, ``meta`` in the recipe under
        ``"state"`` (or, instead, as the version's one ``.json`` file).

    Raises:
        VariantError: the model has no dynamically quantized ``Linear``.

    Example:
        >>> tensors, meta = dynamic_int8_state(quantize_linear_dynamic(model))  # doctest: +SKIP
    """
    prefixes = tuple(f"{name}." if name else "" for name in _quantized_linears(quantized))
    if not prefixes:
        raise VariantError(
            "the model has no nn.Linear submodule to quantize dynamically (a bare Linear is not "
            "replaced: wrap it in nn.Sequential)"
        )
    state = quantized.state_dict()
    kept = OrderedDict((k, v) for k, v in state.items() if k.startswith(prefixes))
    kept._metadata = state._metadata  # type: ignore[attr-defined]
    with quiet_quantization():
        return flatten_state(kept)


def _quantized_linears(model: nn.Module) -> list[str]:
    dynamic = torch.ao.nn.quantized.dynamic.Linear
    return [name for name, module in model.named_modules() if isinstance(module, dynamic)]


def quantize_per_channel(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-row INT8: ``weight ≈ q * scale[:, None]`` with ``|q| <= 127``.

    ``scale = max(|row|) / 127`` (1 for an all-zero row), so the error of every element is at
    most ``scale / 2``.

    Shapes:
        weight: (out, in) -> q: (out, in) int8, scale: (out,) in ``weight``'s dtype.

    Example:
        >>> q, s = quantize_per_channel(torch.tensor([[1.0, -0.5], [0.0, 0.0]]))
        >>> q.tolist(), s.tolist()
        ([[127, -64], [0, 0]], [0.007874015718698502, 1.0])
    """
    weight = weight.detach()
    amax = weight.abs().amax(dim=1)
    scale = torch.where(amax > 0, amax / 127, torch.ones_like(amax))
    q = torch.clamp(torch.round(weight / scale[:, None]), -127, 127).to(torch.int8)
    return q, scale


class WeightOnlyInt8Linear(nn.Module):
    """A ``Linear`` whose weight is stored as INT8 with one float scale per output channel and
    dequantized in ``forward`` (activations stay float): 4x less weight memory than float32.

    Shapes:
        input: (*, in_features) -> output: (*, out_features); ``weight_int8``: (out, in) int8,
        ``weight_scale``: (out,).

    Example:
        >>> layer = WeightOnlyInt8Linear.from_float(nn.Linear(16, 4))
        >>> layer(torch.randn(2, 16)).shape
        torch.Size([2, 4])
    """

    def __init__(
        self, in_features: int, out_features: int, bias: bool = True, device: Any = None
    ) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer(
            "weight_int8", torch.zeros(out_features, in_features, dtype=torch.int8, device=device)
        )
        self.register_buffer("weight_scale", torch.ones(out_features, device=device))
        self.bias = nn.Parameter(torch.zeros(out_features, device=device)) if bias else None

    @classmethod
    def from_float(cls, linear: nn.Linear) -> WeightOnlyInt8Linear:
        """Quantize ``linear``'s weight (:func:`quantize_per_channel`); its bias is shared."""
        module = cls(
            linear.in_features, linear.out_features, bias=False, device=linear.weight.device
        )
        q, scale = quantize_per_channel(linear.weight)
        module.weight_int8, module.weight_scale = q, scale
        module.bias = linear.bias
        return module

    def dequantized_weight(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """The float weight the INT8 one stands for."""
        dtype = dtype or self.weight_scale.dtype
        return self.weight_int8.to(dtype) * self.weight_scale.to(dtype)[:, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, self.dequantized_weight(x.dtype), bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 weight"


class WeightOnlyInt8Embedding(nn.Module):
    """An ``Embedding`` table stored as INT8 with one scale per row; only the looked-up rows are
    dequantized.

    Shapes:
        input: (*) integer ids -> output: (*, embedding_dim) in the scale's dtype.

    Example:
        >>> emb = WeightOnlyInt8Embedding.from_float(nn.Embedding(10, 4))
        >>> emb(torch.tensor([[1, 2]])).shape
        torch.Size([1, 2, 4])
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, device: Any = None) -> None:
        super().__init__()
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.register_buffer(
            "weight_int8",
            torch.zeros(num_embeddings, embedding_dim, dtype=torch.int8, device=device),
        )
        self.register_buffer("weight_scale", torch.ones(num_embeddings, device=device))

    @classmethod
    def from_float(cls, embedding: nn.Embedding) -> WeightOnlyInt8Embedding:
        """Quantize ``embedding``'s table row by row (:func:`quantize_per_channel`)."""
        module = cls(embedding.num_embeddings, embedding.embedding_dim, embedding.weight.device)
        module.weight_int8, module.weight_scale = quantize_per_channel(embedding.weight)
        return module

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        flat = ids.reshape(-1)
        rows = self.weight_int8.index_select(0, flat).to(self.weight_scale.dtype)
        rows = rows * self.weight_scale.index_select(0, flat)[:, None]
        return rows.view(*ids.shape, self.embedding_dim)


def quantize_weights_int8(model: nn.Module, *, embeddings: bool = True) -> nn.Module:
    """Replace, in place, every ``nn.Linear`` (exact type; not the out-projection inside
    ``nn.MultiheadAttention``) by :class:`WeightOnlyInt8Linear` and, with ``embeddings``, every
    ``nn.Embedding`` without ``max_norm`` by :class:`WeightOnlyInt8Embedding`.

    Returns:
        ``model`` (or the replacement when ``model`` itself is a ``Linear`` / ``Embedding``).

    Example:
        >>> quantize_weights_int8(nn.Sequential(nn.Linear(4, 2)))[0].weight_int8.dtype
        torch.int8
    """
    if (replaced := _weight_only(model, embeddings)) is not None:
        return replaced
    for parent in list(model.modules()):
        if isinstance(parent, nn.MultiheadAttention):
            continue
        for name, child in list(parent.named_children()):
            if (replaced := _weight_only(child, embeddings)) is not None:
                setattr(parent, name, replaced)
    return model


def _weight_only(module: nn.Module, embeddings: bool) -> nn.Module | None:
    if type(module) is nn.Linear:
        return WeightOnlyInt8Linear.from_float(module)
    if embeddings and type(module) is nn.Embedding and module.max_norm is None:
        return WeightOnlyInt8Embedding.from_float(module)
    return None


def int8_weight_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """What an ``int8-weight`` version stores: every ``weight_int8`` and ``weight_scale`` buffer
    (plain tensors, one safetensors file; biases and the rest are the parent's weights).

    Raises:
        VariantError: the model holds no weight-only INT8 module.

    Example:
        >>> sorted(int8_weight_state(quantize_weights_int8(nn.Sequential(nn.Linear(4, 2)))))
        ['0.weight_int8', '0.weight_scale']
    """
    state = {
        k: v
        for k, v in model.state_dict().items()
        if k.rsplit(".", 1)[-1] in ("weight_int8", "weight_scale")
    }
    if not state:
        raise VariantError("the model has no nn.Linear or nn.Embedding to quantize to INT8")
    return state
