"""State dicts as safetensors can store them: dense tensors only, plus a small JSON description.

safetensors holds named dense tensors. A real ``state_dict`` holds more: quantized tensors
(``torch.qint8`` with a scale and zero point, per tensor or per channel), tuples of tensors (the
``_packed_params._packed_params`` of a dynamically quantized ``Linear``), ``torch.dtype`` values and
plain Python scalars. :func:`flatten_state` turns such a dict into dense tensors and a JSON-ready
``meta`` dict; :func:`unflatten_state` rebuilds the original. Nothing is pickled.

Flattened names add ``::<part>`` to the original key, e.g. for a per-channel quantized ``w``::

    w             the integer representation (int8 / uint8 / int32)
    w::scales     float64 per-channel scales
    w::zero_points
    meta["entries"]["w"] = {"kind": "quantized", "dtype": "quint8",
                            "qscheme": "per_channel_affine", "axis": 0}

Dense tensors have no entry: a plain state dict flattens to itself and ``{}``. When there are
entries, ``meta["modules"]`` also keeps the state dict's ``_metadata`` (each module's version):
quantized modules read their state differently without it.

Example:
    >>> import torch
    >>> q = torch.quantize_per_tensor(torch.randn(3), 0.1, 2, torch.quint8)
    >>> tensors, meta = flatten_state({"q": q, "dtype": torch.qint8, "n": 3})
    >>> sorted(tensors)
    ['q']
    >>> torch.equal(unflatten_state(tensors, meta)["q"].int_repr(), q.int_repr())
    True
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import torch

from abyssal.core.errors import StoreError

SEPARATOR = "::"
"""Joins an original key and the part of it a flattened tensor holds."""

META_VERSION = 1

_QSCHEMES = {
    torch.per_tensor_affine: "per_tensor_affine",
    torch.per_channel_affine: "per_channel_affine",
}
_QUANT_DTYPES = {torch.quint8: "quint8", torch.qint8: "qint8", torch.qint32: "qint32"}
_SCALARS = (bool, int, float, str)


def flatten_state(state_dict: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Dense tensors plus a JSON description of everything that was not a dense tensor.

    Args:
        state_dict: name -> dense or quantized tensor, tuple/list of such, ``torch.dtype``, bool,
            int, float, str or None.

    Returns:
        ``(tensors, meta)``; ``meta`` is ``{}`` when every value was a dense tensor.

    Raises:
        StoreError: an empty dict, a non-string key, a sparse or meta tensor, an unsupported
            quantization scheme or any other object (the message names the key and its type).

    Example:
        >>> flatten_state({"w": torch.ones(2)})
        ({'w': tensor([1., 1.])}, {})
    """
    if not isinstance(state_dict, Mapping) or not state_dict:
        raise StoreError("state_dict must be a non-empty dict of parameter name -> tensor")
    tensors: dict[str, torch.Tensor] = {}
    entries: dict[str, Any] = {}
    for key, value in state_dict.items():
        if not isinstance(key, str):
            raise StoreError(f"state_dict key {key!r} is not a string")
        entry = _flatten_value(key, value, tensors)
        if entry is not None:
            entries[key] = entry
    if not entries:
        return tensors, {}
    meta: dict[str, Any] = {"version": META_VERSION, "entries": entries}
    modules = getattr(state_dict, "_metadata", None)
    if modules:  # module versions: quantized modules read their state differently without them
        meta["modules"] = {prefix: dict(value) for prefix, value in modules.items()}
    return tensors, meta


def unflatten_state(tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> dict[str, Any]:
    """The state dict that :func:`flatten_state` turned into ``tensors`` and ``meta``.

    Args:
        tensors: the dense tensors, e.g. read with ``safetensors.torch.load_file``.
        meta: the description; ``{}`` for a plain state dict.

    Returns:
        Name -> tensor, quantized tensor, tuple, list, dtype or scalar, as flattened.

    Raises:
        StoreError: ``meta`` names a tensor that ``tensors`` lacks, or is of an unknown version.

    Example:
        >>> unflatten_state({"w": torch.ones(2)}, {})
        {'w': tensor([1., 1.])}
    """
    if meta and meta.get("version") != META_VERSION:
        raise StoreError(f"state meta has version {meta.get('version')!r}, expected {META_VERSION}")
    entries = meta.get("entries", {}) if meta else {}
    out = OrderedDict((key, _rebuild(key, entry, tensors)) for key, entry in entries.items())
    for key, tensor in tensors.items():
        if SEPARATOR not in key and key not in out:
            out[key] = tensor
    if meta and "modules" in meta:
        out._metadata = OrderedDict((k, dict(v)) for k, v in meta["modules"].items())  # type: ignore[attr-defined]
    return out


def storable_tensors(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The tensors as ``safetensors`` can save them, copying only what must be copied.

    A contiguous CPU tensor with its own storage is passed through as is (detached, no copy). A
    tensor on another device is moved to the CPU, a non-contiguous one is packed, and a tensor whose
    storage an earlier tensor already uses (tied weights, views) is cloned: safetensors refuses
    tensors that share memory.

    Args:
        tensors: name -> dense (strided) tensor.

    Returns:
        Name -> contiguous CPU tensor, no two sharing a storage.

    Example:
        >>> emb = torch.nn.Embedding(3, 2)
        >>> out = storable_tensors({"a": emb.weight, "b": emb.weight})
        >>> [out[k].data_ptr() == emb.weight.data_ptr() for k in "ab"]  # "b" is a copy
        [True, False]
    """
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for key, value in tensors.items():
        value = value.detach()
        if value.device.type != "cpu":
            value = value.to("cpu")
        if not value.is_contiguous():
            value = value.contiguous()
        storage = value.untyped_storage().data_ptr() if value.numel() else 0
        out[key] = value.clone() if storage in seen else value
        if storage:
            seen.add(storage)
    return out


def _flatten_value(key: str, value: Any, tensors: dict[str, torch.Tensor]) -> dict[str, Any] | None:
    """Add ``value``'s tensors under ``key``; its meta entry, or ``None`` for a dense tensor."""
    if isinstance(value, torch.Tensor):
        return _flatten_tensor(key, value, tensors)
    if isinstance(value, tuple | list):
        kind = "tuple" if isinstance(value, tuple) else "list"
        items = [_flatten_value(f"{key}{SEPARATOR}{i}", v, tensors) for i, v in enumerate(value)]
        return {"kind": kind, "items": [{"kind": "tensor"} if e is None else e for e in items]}
    if isinstance(value, torch.dtype):
        return {"kind": "dtype", "name": str(value).removeprefix("torch.")}
    if value is None:
        return {"kind": "none"}
    if isinstance(value, float):
        return {"kind": "float", "value": value.hex()}
    if isinstance(value, _SCALARS):
        return {"kind": type(value).__name__, "value": value}
    raise StoreError(
        f"{_shown(key)} has type {type(value).__name__}; storable values are tensors, "
        "quantized tensors, tuples or lists of them, torch dtypes, bool, int, float, str and None"
    )


def _shown(key: str) -> str:
    """``"w::1"`` -> ``"state_dict['w'][1]"``: how a user names an item of a tuple entry."""
    first, *items = key.split(SEPARATOR)
    return f"state_dict['{first}']" + "".join(f"[{i}]" for i in items)


def _flatten_tensor(key: str, value: torch.Tensor, tensors: dict[str, torch.Tensor]) -> dict | None:
    if value.layout != torch.strided or value.is_meta:
        raise StoreError(f"{_shown(key)} must be a dense tensor with data")
    if not value.is_quantized:
        _put(tensors, key, value)
        return None
    scheme = _QSCHEMES.get(value.qscheme())
    if scheme is None or value.dtype not in _QUANT_DTYPES:
        raise StoreError(
            f"{_shown(key)} is quantized with {value.qscheme()} / {value.dtype}; storable: "
            f"{', '.join(_QSCHEMES.values())} with {', '.join(_QUANT_DTYPES.values())}"
        )
    entry: dict[str, Any] = {"kind": "quantized", "dtype": _QUANT_DTYPES[value.dtype]}
    entry["qscheme"] = scheme
    _put(tensors, key, value.int_repr())
    if scheme == "per_tensor_affine":
        entry.update(scale=float(value.q_scale()), zero_point=int(value.q_zero_point()))
    else:
        entry["axis"] = int(value.q_per_channel_axis())
        _put(tensors, f"{key}{SEPARATOR}scales", value.q_per_channel_scales())
        _put(tensors, f"{key}{SEPARATOR}zero_points", value.q_per_channel_zero_points())
    return entry


def _put(tensors: dict[str, torch.Tensor], key: str, value: torch.Tensor) -> None:
    if key in tensors:
        raise StoreError(f"state_dict key '{key}' clashes with a flattened name; rename it")
    tensors[key] = value


def _rebuild(key: str, entry: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]) -> Any:
    """The value that ``entry`` describes for ``key``."""
    kind = entry.get("kind")
    if kind in ("tuple", "list"):
        items = [_rebuild(f"{key}{SEPARATOR}{i}", e, tensors) for i, e in enumerate(entry["items"])]
        return tuple(items) if kind == "tuple" else items
    if kind == "tensor":
        return _tensor(tensors, key)
    if kind == "quantized":
        return _quantized(key, entry, tensors)
    if kind == "dtype":
        return _dtype(key, entry["name"])
    if kind == "none":
        return None
    if kind == "float":
        return float.fromhex(entry["value"])
    if kind in ("bool", "int", "str"):
        return entry["value"]
    raise StoreError(f"state meta for '{key}' has unknown kind {kind!r}")


def _quantized(key: str, entry: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]) -> Any:
    values = _tensor(tensors, key)
    if entry["qscheme"] == "per_tensor_affine":
        q = torch._make_per_tensor_quantized_tensor(values, entry["scale"], entry["zero_point"])
    else:
        scales = _tensor(tensors, f"{key}{SEPARATOR}scales")
        zero_points = _tensor(tensors, f"{key}{SEPARATOR}zero_points")
        q = torch._make_per_channel_quantized_tensor(values, scales, zero_points, entry["axis"])
    if _QUANT_DTYPES.get(q.dtype) != entry["dtype"]:
        raise StoreError(
            f"'{key}' was stored as {entry['dtype']} but its values are {values.dtype}"
        )
    return q


def _dtype(key: str, name: str) -> torch.dtype:
    found = getattr(torch, name, None)
    if not isinstance(found, torch.dtype):
        raise StoreError(f"state meta for '{key}' names an unknown torch dtype '{name}'")
    return found


def _tensor(tensors: Mapping[str, torch.Tensor], key: str) -> torch.Tensor:
    if key not in tensors:
        raise StoreError(f"state meta names tensor '{key}', which the tensors file does not hold")
    return tensors[key]
