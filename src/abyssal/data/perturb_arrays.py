"""Perturbations of images and volumes for robustness benchmarks: Gaussian noise, Gaussian blur
and contrast (:data:`abyssal.data.perturb.KINDS`).

Every function takes a numpy array or a torch tensor of images ``(..., H, W)``
(``spatial_dims=2``) or volumes ``(..., D, H, W)`` (``spatial_dims=3``) and returns a new one of
the same kind, shape, device and (floating) dtype; integer and boolean inputs come back as
float32. Inputs are never changed in place.

An **item** is one image or volume: ``x[i]`` along the first axis when ``x`` has more axes than
the spatial ones (channels belong to the item), else the whole of ``x``. Levels are relative to
each item, so they mean the same in any intensity units (0-255, [0, 1], Hounsfield units):

- :func:`noise`: additive Gaussian noise of standard deviation ``level x (max - min)`` of the
  item; item ``i`` draws from ``numpy.random.default_rng(seed + i)`` (or from its own seed), so
  a result never depends on how items are batched;
- :func:`blur`: a Gaussian blur of ``sigma`` pixels (voxels) over the spatial axes only, edges
  reflected (``d c b a | a b c d | d c b a``, scipy's ``mode="reflect"``), truncated at 4 sigma
  as :func:`scipy.ndimage.gaussian_filter` is;
- :func:`contrast`: ``mean + factor x (x - mean)`` with the item's mean.

:func:`apply` dispatches a :class:`~abyssal.data.perturb.Perturbation` to them, and
:func:`apply_to_rows` perturbs some items of a stored array (e.g. a test split of uint8 images),
rounding and clipping integer arrays back to their type.

Example:
    >>> x = np.zeros((2, 1, 8, 8), dtype=np.float32)
    >>> x[:, :, 4, 4] = 1.0
    >>> y = blur(x, 1.0, spatial_dims=2)
    >>> y.shape, y.dtype, round(float(y.sum()), 6), float(x.sum())
    ((2, 1, 8, 8), dtype('float32'), 2.0, 2.0)
    >>> contrast(np.array([[0.0, 2.0]]), 0.5, spatial_dims=2).tolist()
    [[0.5, 1.5]]
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np

from abyssal.core.errors import ConfigError
from abyssal.data.perturb import Perturbation

ARRAY_KINDS = ("noise", "blur", "contrast")
"""The perturbation kinds of images and volumes."""
TRUNCATE = 4.0
"""The blur kernel reaches ``int(TRUNCATE * sigma + 0.5)`` pixels each way (scipy's default)."""
CHUNK = 64
"""Items perturbed at once by :func:`apply_to_rows` (bounds the float64 working copy)."""

Array = TypeVar("Array")
"""A numpy array or a torch tensor; functions return the same kind."""


def noise(x: Array, level: float, seed: int | Sequence[int], spatial_dims: int = 2) -> Array:
    """``x`` plus Gaussian noise of standard deviation ``level x (max - min)`` of each item.

    Args:
        x: images ``(..., H, W)`` or volumes ``(..., D, H, W)``, numpy or torch.
        level: the noise's standard deviation as a fraction of the item's range (0: none).
        seed: item ``i`` draws from ``default_rng(seed + i)``; or one seed per item.
        spatial_dims: 2 (images) or 3 (volumes).

    Raises:
        ValueError: a negative or non-finite level, a bad ``spatial_dims``, a seed list of the
            wrong length, a negative seed.

    Example:
        >>> x = np.tile(np.arange(4.0), (4, 1))  # one 4x4 item, range 3
        >>> y = noise(x, 0.1, seed=0, spatial_dims=2)
        >>> bool(np.array_equal(y, noise(x, 0.1, seed=0, spatial_dims=2))), y.shape
        (True, (4, 4))
        >>> bool(np.array_equal(noise(x, 0.0, seed=0, spatial_dims=2), x))
        True
    """
    _check_level("noise level", level)
    values, restore = _as_float64(x, spatial_dims)
    n = _item_count(values, spatial_dims)
    seeds = item_seeds(seed, n)
    if level == 0 or values.size == 0:
        return restore(values)
    flat = values.reshape(n, -1)
    span = flat.max(axis=1) - flat.min(axis=1)
    for i in range(n):
        if span[i] > 0:
            rng = np.random.default_rng(seeds[i])
            flat[i] += rng.standard_normal(flat.shape[1]) * (level * span[i])
    return restore(flat.reshape(values.shape))


def blur(x: Array, sigma: float, spatial_dims: int = 2) -> Array:
    """``x`` blurred by a Gaussian of ``sigma`` pixels (voxels) over its spatial axes only.

    Separable; edges reflected (scipy's ``mode="reflect"``); the kernel is truncated at
    ``int(4 * sigma + 0.5)`` pixels and sums to 1, so a constant image stays constant and an
    image's mean is kept up to the reflected edges. ``sigma=0`` changes nothing.

    Raises:
        ValueError: a negative or non-finite sigma, a bad ``spatial_dims``.

    Example:
        >>> x = np.full((3, 5, 5), 7.0)
        >>> bool(np.allclose(blur(x, 2.0, spatial_dims=2), 7.0))
        True
    """
    _check_level("blur sigma", sigma)
    values, restore = _as_float64(x, spatial_dims)
    if sigma == 0 or values.size == 0:
        return restore(values)
    radius = int(TRUNCATE * sigma + 0.5)
    offsets = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-0.5 * (offsets / sigma) ** 2)
    kernel /= kernel.sum()
    for axis in range(values.ndim - spatial_dims, values.ndim):
        values = _convolve_axis(values, kernel, radius, axis)
    return restore(values)


def contrast(x: Array, factor: float, spatial_dims: int = 2) -> Array:
    """``mean + factor x (x - mean)`` with each item's own mean (1: unchanged, 0: flat grey).

    Raises:
        ValueError: a negative or non-finite factor, a bad ``spatial_dims``.

    Example:
        >>> contrast(np.array([[[0.0, 4.0]], [[2.0, 2.0]]]), 2.0, spatial_dims=2).tolist()
        [[[-2.0, 6.0]], [[2.0, 2.0]]]
    """
    _check_level("contrast factor", factor)
    values, restore = _as_float64(x, spatial_dims)
    if factor == 1 or values.size == 0:
        return restore(values)
    n = _item_count(values, spatial_dims)
    flat = values.reshape(n, -1)
    mean = flat.mean(axis=1, keepdims=True)
    return restore((mean + factor * (flat - mean)).reshape(values.shape))


def apply(
    x: Array,
    perturbation: Perturbation,
    spatial_dims: int = 2,
    *,
    seeds: Sequence[int] | None = None,
) -> Array:
    """``x`` with ``perturbation`` (noise, blur or contrast) applied, as the functions above.

    Args:
        x: images or volumes, numpy or torch.
        perturbation: its kind picks the function, its level is the argument, its seed seeds
            the noise (item ``i``: ``seed + i``).
        spatial_dims: 2 (images) or 3 (volumes).
        seeds: one noise seed per item instead (e.g. ``seed + row`` of each item's place in the
            whole data, so a subset gets the noise the whole would).

    Raises:
        ConfigError: a kind images and volumes do not have (``typos``, ...), naming the kinds
            they have.

    Example:
        >>> x = np.arange(16.0).reshape(1, 4, 4)
        >>> apply(x, Perturbation("contrast", 1.0)).tolist() == x.tolist()
        True
    """
    kind = perturbation.kind
    if kind == "noise":
        seed = perturbation.seed if seeds is None else seeds
        return noise(x, perturbation.level, seed, spatial_dims)
    if kind == "blur":
        return blur(x, perturbation.level, spatial_dims)
    if kind == "contrast":
        return contrast(x, perturbation.level, spatial_dims)
    raise ConfigError(
        f"perturbation '{kind}' does not apply to images or volumes; their kinds: "
        + ", ".join(ARRAY_KINDS)
    )


def apply_to_rows(
    x: np.ndarray, rows: np.ndarray, perturbation: Perturbation, spatial_dims: int = 2
) -> np.ndarray:
    """A copy of the stored items ``x`` whose items ``rows`` carry ``perturbation``.

    Item ``r`` gets noise seed ``perturbation.seed + r`` (its place in ``x``), so the result is
    the same whatever other rows are perturbed with it. An integer array (uint8 pixels) is
    perturbed as float in its own units, then rounded and clipped to its type's range, as a
    stored image would be; a floating array keeps its values unclipped. ``x`` is not changed.

    Shapes:
        x: (N, ..., *spatial); rows: (R,) indices into the first axis.

    Example:
        >>> x = np.array([[[0, 100]], [[50, 250]]], dtype=np.uint8)
        >>> apply_to_rows(x, np.array([1]), Perturbation("contrast", 2.0)).tolist()
        [[[0, 100]], [[0, 255]]]
        >>> x.tolist()
        [[[0, 100]], [[50, 250]]]
    """
    x = np.asarray(x)
    if x.ndim <= spatial_dims:
        raise ValueError(
            f"expected items along a first axis and {spatial_dims} spatial axes; got shape "
            f"{x.shape}"
        )
    rows = np.asarray(rows, dtype=np.int64).reshape(-1)
    out = x.copy()
    for start in range(0, len(rows), CHUNK):
        part = rows[start : start + CHUNK]
        seeds = [perturbation.seed + int(r) for r in part]
        changed = apply(x[part].astype(np.float64), perturbation, spatial_dims, seeds=seeds)
        if np.issubdtype(x.dtype, np.integer):
            info = np.iinfo(x.dtype)
            changed = np.clip(np.rint(changed), info.min, info.max)
        out[part] = changed.astype(x.dtype)
    return out


def item_seeds(seed: int | Sequence[int], n: int) -> list[int]:
    """``[seed, seed + 1, ..., seed + n - 1]``, or the ``n`` seeds given; ValueError for a
    negative seed or a list of another length."""
    if isinstance(seed, int | np.integer):
        seeds = [int(seed) + i for i in range(n)]
    else:
        seeds = [int(s) for s in seed]
        if len(seeds) != n:
            raise ValueError(f"{len(seeds)} seeds for {n} items; give one seed per item")
    if any(s < 0 for s in seeds):
        raise ValueError(f"seeds must be >= 0; got {min(seeds)}")
    return seeds


# --- helpers -----------------------------------------------------------------------------------


def _check_level(what: str, value: float) -> None:
    value = float(value)
    if not np.isfinite(value) or value < 0:
        raise ValueError(f"{what} must be >= 0 and finite, not {value}")


def _item_count(values: np.ndarray, spatial_dims: int) -> int:
    return int(values.shape[0]) if values.ndim > spatial_dims else 1


def _as_float64(x: Any, spatial_dims: int) -> tuple[np.ndarray, Callable[[np.ndarray], Any]]:
    """A float64 numpy copy of ``x`` and the function that turns a result back into ``x``'s
    kind (numpy or torch), device and dtype (float32 for integer and boolean inputs)."""
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 (images) or 3 (volumes), not {spatial_dims}")
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(x, torch.Tensor):
        tensor = x
        if tensor.ndim < spatial_dims:
            raise ValueError(f"expected {spatial_dims} spatial axes; got shape {tuple(x.shape)}")
        dtype = tensor.dtype if tensor.is_floating_point() else torch.float32
        values = tensor.detach().cpu().to(torch.float64).numpy().copy()

        def back_to_torch(result: np.ndarray) -> Any:
            return torch.from_numpy(np.ascontiguousarray(result)).to(tensor.device, dtype)

        return values, back_to_torch
    array = np.asarray(x)
    if array.ndim < spatial_dims:
        raise ValueError(f"expected {spatial_dims} spatial axes; got shape {array.shape}")
    dtype = array.dtype if np.issubdtype(array.dtype, np.floating) else np.dtype(np.float32)

    def back_to_numpy(result: np.ndarray) -> np.ndarray:
        return result.astype(dtype, copy=False)

    return array.astype(np.float64, copy=True), back_to_numpy


def _convolve_axis(values: np.ndarray, kernel: np.ndarray, radius: int, axis: int) -> np.ndarray:
    """``values`` convolved with the symmetric ``kernel`` along ``axis``, edges reflected."""
    width = [(0, 0)] * values.ndim
    width[axis] = (radius, radius)
    padded = np.pad(values, width, mode="symmetric")
    size = values.shape[axis]
    before = (slice(None),) * axis
    out = np.zeros_like(values)
    for j, weight in enumerate(kernel):
        out += weight * padded[(*before, slice(j, j + size))]
    return out
