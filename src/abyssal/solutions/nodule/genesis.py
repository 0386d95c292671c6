"""Models Genesis image-restoration corruptions for self-supervised 3-D pretraining.

A network learns to restore the original sub-volume ``x`` from a corrupted copy of it. The
corruptions are those of Zhou et al., "Models Genesis: Generic Autodidactic Models for 3D Medical
Image Analysis", MICCAI 2019, and the journal version, Medical Image Analysis 67 (2021)
(arXiv:2004.07882), applied in the order of the authors' code (``generate_pair``):

1. local pixel shuffling (probability ``local_rate``): in many small random sub-cubes (each side
   up to 1/8 of the volume's) the voxels are permuted within the sub-cube, so the volume keeps
   its global layout and its multiset of values but loses local texture;
2. non-linear intensity transformation (``nonlinear_rate``): every voxel goes through one
   monotonic cubic Bézier curve from (0, 0) to (1, 1) with two random control points; half of
   the time the curve is reversed (a decreasing mapping, (0 -> 1, 1 -> 0)), as in the paper's code;
3. painting (``paint_rate``), either in-painting (``inpaint_rate``, 0.2 in the paper's code):
   up to five inner boxes (sides 1/6 to 1/3 of the volume's) become uniform noise; or
   out-painting: everything becomes uniform noise except one inner box (sides 3/7 to 4/7 of the
   volume's) and up to four more such boxes, which keep the transformed voxels.

The paper's code also flips input and target together; that is an augmentation of the pair, not
a corruption, and is left to the caller. Every random draw comes from a NumPy generator seeded
with ``(seed, item)`` on the CPU (:func:`plan_corruptions`); only applying the plan
(:func:`apply_corruptions`) runs on ``x``'s device, so a seed gives the same corruption on the CPU
and on a GPU (equal up to floating-point rounding of the curve), and item ``i`` of a batch gets
the same corruption whatever the batch size.

Example:
    >>> x = torch.rand(2, 1, 16, 16, 16)
    >>> y = corrupt(x, seed=0)
    >>> y.shape == x.shape and 0 <= float(y.min()) and float(y.max()) <= 1
    True
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from abyssal.core.config import field
from abyssal.core.errors import ConfigError

Box3 = tuple[tuple[int, int, int], tuple[int, int, int]]
"""A box of voxels: ``((z0, y0, x0), (depth, height, width))``."""
SideRange = Callable[[int], tuple[int, int]]
CURVE_POINTS = 1025
"""Entries of the look-up table a Bézier curve is sampled into, uniformly over [0, 1]."""
_BEZIER_SAMPLES = 10_001  # curve parameter samples before resampling onto the table
_INPAINT_BOXES = 5  # the paper's code: at most five in-painted boxes
_OUTPAINT_BOXES = 5  # one kept box and at most four more
_MORE_BOXES = 0.95  # chance of drawing each further box (the paper's code)


@dataclass
class GenesisOptions:
    """How often each Models Genesis corruption is applied (the paper's code's defaults)."""

    nonlinear_rate: float = field(0.9, help="chance of the non-linear intensity curve")
    local_rate: float = field(0.5, help="chance of local pixel shuffling")
    paint_rate: float = field(0.9, help="chance of in- or out-painting")
    inpaint_rate: float = field(0.2, help="of the painted volumes, the share in-painted (else out)")
    shuffle_blocks: int = field(1000, help="sub-cubes shuffled per volume by local shuffling")

    def __post_init__(self) -> None:
        for name in ("nonlinear_rate", "local_rate", "paint_rate", "inpaint_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"{name} is a probability and must lie in [0, 1], got {value}")
        if self.shuffle_blocks < 1:
            raise ConfigError(f"shuffle_blocks must be >= 1, got {self.shuffle_blocks}")


@dataclass(frozen=True, eq=False)
class Corruption:
    """The random draws that corrupt one volume (see :func:`plan_corruptions`).

    Attributes:
        shuffle: gather index over the flattened volume (``out[i] = x[shuffle[i]]``), a
            permutation that moves voxels only within their sub-cube; ``None``: no shuffling.
        curve: the intensity mapping sampled at ``CURVE_POINTS`` even steps over [0, 1];
            ``None``: no intensity change.
        paint: ``"in"``, ``"out"`` or ``None``.
        boxes: in-painting: the boxes that become noise; out-painting: the boxes that are kept.
        noise: uniform [0, 1) values, float32 (D, H, W), used where the volume is painted.
    """

    shuffle: np.ndarray | None = None
    curve: np.ndarray | None = None
    paint: Literal["in", "out"] | None = None
    boxes: tuple[Box3, ...] = ()
    noise: np.ndarray | None = None

    def paint_mask(self, shape: tuple[int, int, int]) -> np.ndarray:
        """Where noise replaces the voxels: bool (D, H, W)."""
        inside = np.zeros(shape, dtype=bool)
        if self.paint is None:
            return inside
        for (z, y, x), (d, h, w) in self.boxes:
            inside[z : z + d, y : y + h, x : x + w] = True
        return inside if self.paint == "in" else ~inside


def corrupt(x: torch.Tensor, seed: int, options: GenesisOptions | None = None) -> torch.Tensor:
    """A Models Genesis corruption of each volume of a batch; the restoration target is ``x``.

    Args:
        x: float volumes with values in [0, 1] (e.g. CT windowed to [-1000, 1000] HU and
            scaled), on any device.
        seed: the seed of every random draw: the same seed gives the same corruption.
        options: the probabilities of the corruptions (default: the paper's).

    Returns:
        A new tensor with ``x``'s shape, dtype and device and values in [0, 1].

    Shapes:
        x: (B, C, D, H, W), usually C = 1 (channels share the corruption). Returns the same.

    Raises:
        ValueError: ``x`` is not 5-D, not floating point, empty, or has values outside [0, 1].

    Example:
        >>> x = torch.rand(4, 1, 32, 32, 32)
        >>> target, inputs = x, corrupt(x, seed=7)
        >>> torch.equal(inputs, corrupt(x, seed=7)), inputs.shape
        (True, torch.Size([4, 1, 32, 32, 32]))
    """
    _check_volumes(x)
    return _apply(x, plan_corruptions(tuple(x.shape), seed, options))


def plan_corruptions(
    shape: tuple[int, ...], seed: int, options: GenesisOptions | None = None
) -> list[Corruption]:
    """Draw the corruption of each volume of a batch on the CPU, item ``i`` from ``(seed, i)``.

    Args:
        shape: the batch's shape (B, C, D, H, W).
        seed: the seed.
        options: the probabilities (default: the paper's).

    Returns:
        One :class:`Corruption` per volume.

    Example:
        >>> plans = plan_corruptions((2, 1, 16, 16, 16), seed=0)
        >>> len(plans), plans[0].paint in ("in", "out", None)
        (2, True)
    """
    if len(shape) != 5:
        raise ValueError(f"shape must be (B, C, D, H, W), got {tuple(shape)}")
    options = options or GenesisOptions()
    spatial = (int(shape[2]), int(shape[3]), int(shape[4]))
    return [_plan_one(np.random.default_rng([seed, i]), spatial, options) for i in range(shape[0])]


def apply_corruptions(x: torch.Tensor, plans: list[Corruption]) -> torch.Tensor:
    """Apply drawn corruptions on ``x``'s device: shuffling, then the curve, then painting.

    Args:
        x: the volumes, float in [0, 1].
        plans: one per volume, from :func:`plan_corruptions` for ``x.shape``.

    Returns:
        A new tensor like ``x``.

    Shapes:
        x: (B, C, D, H, W). Returns the same.

    Example:
        >>> x = torch.rand(1, 1, 16, 16, 16)
        >>> torch.equal(apply_corruptions(x, [Corruption()]), x)
        True
    """
    _check_volumes(x)
    if len(plans) != x.shape[0]:
        raise ValueError(f"got {len(plans)} corruption plans for a batch of {x.shape[0]} volumes")
    return _apply(x, plans)


def _apply(x: torch.Tensor, plans: list[Corruption]) -> torch.Tensor:
    b, c, d, h, w = x.shape
    out = x.reshape(b, c, d * h * w)  # (B, C, N)
    if not any(p.shuffle is not None or p.curve is not None or p.paint for p in plans):
        return x.clone()
    if any(p.shuffle is not None for p in plans):
        out = _shuffled(out, plans)  # each op returns a new tensor
    if any(p.curve is not None for p in plans):
        out = _curved(out, plans)
    if any(p.paint is not None for p in plans):
        out = _painted(out, plans, (d, h, w))
    return out.reshape(x.shape)


# --- drawing (CPU, NumPy) ----------------------------------------------------------------------


def _plan_one(
    rng: np.random.Generator, shape: tuple[int, int, int], options: GenesisOptions
) -> Corruption:
    """Draw one volume's corruption, in the order of the paper's ``generate_pair``."""
    shuffle = None
    if rng.random() < options.local_rate:
        shuffle = _shuffle_index(rng, shape, options.shuffle_blocks)
    curve = _bezier_curve(rng) if rng.random() < options.nonlinear_rate else None
    if rng.random() >= options.paint_rate:
        return Corruption(shuffle, curve)
    if rng.random() < options.inpaint_rate:
        boxes = _boxes(rng, shape, _INPAINT_BOXES, first_always=False, inner=_inpaint_sides)
        paint: Literal["in", "out"] = "in"
    else:
        boxes = _boxes(rng, shape, _OUTPAINT_BOXES, first_always=True, inner=_outpaint_sides)
        paint = "out"
    noise = rng.random(shape, dtype=np.float32)  # (D, H, W)
    return Corruption(shuffle, curve, paint, tuple(boxes), noise)


def _bezier_curve(rng: np.random.Generator) -> np.ndarray:
    """A cubic Bézier curve through (0, 0), two random control points and (1, 1), sampled at
    ``CURVE_POINTS`` even steps of x; reversed (decreasing) half of the time.

    With control points inside the unit square both coordinates of the curve are non-decreasing
    in its parameter t, so y is a monotonic function of x. The reversed curve pairs x(t) with
    y(1 - t), which is what the paper's code does by sorting only the x samples.
    """
    (p1x, p1y), (p2x, p2y) = rng.random((2, 2))
    reverse = rng.random() < 0.5
    t = np.linspace(0.0, 1.0, _BEZIER_SAMPLES)
    basis = np.stack([(1 - t) ** 3, 3 * t * (1 - t) ** 2, 3 * t**2 * (1 - t), t**3])  # (4, T)
    xs = np.array([0.0, p1x, p2x, 1.0]) @ basis  # (T,) non-decreasing
    ys = np.array([0.0, p1y, p2y, 1.0]) @ basis
    if reverse:
        ys = ys[::-1]
    return np.interp(np.linspace(0.0, 1.0, CURVE_POINTS), xs, ys)


def _shuffle_index(
    rng: np.random.Generator, shape: tuple[int, int, int], blocks: int
) -> np.ndarray:
    """A gather index over the flattened volume that permutes voxels within random sub-cubes.

    Sub-cubes may overlap: each voxel belongs to the last sub-cube drawn over it, and each such
    region is permuted as one, so the whole is a permutation (the multiset of values is kept).
    """
    dims = np.asarray(shape)
    _, h, w = shape
    sizes = rng.integers(1, np.maximum(1, dims // 8) + 1, size=(blocks, 3))  # (K, 3) z, y, x
    starts = rng.integers(0, dims - sizes + 1)  # (K, 3)
    counts = sizes.prod(axis=1)
    owner = np.repeat(np.arange(blocks), counts)  # (M,) which sub-cube each covered voxel is in
    local = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    _, sy, sx = sizes[owner].T
    z = starts[owner, 0] + local // (sx * sy)
    y = starts[owner, 1] + (local // sx) % sy
    x = starts[owner, 2] + local % sx
    label = np.full(int(dims.prod()), -1, dtype=np.int64)
    np.maximum.at(label, (z * h + y) * w + x, owner)  # the last sub-cube over a voxel owns it
    region = np.flatnonzero(label >= 0)
    keys = label[region]
    slots = region[np.argsort(keys, kind="stable")]  # grouped by sub-cube, in place order
    shuffled = region[np.argsort(keys + rng.random(region.size))]  # grouped, random order
    index = np.arange(label.size)
    index[slots] = shuffled
    return index


def _inpaint_sides(n: int) -> tuple[int, int]:
    return n // 6, n // 3


def _outpaint_sides(n: int) -> tuple[int, int]:
    return n - 4 * n // 7, n - 3 * n // 7


def _boxes(
    rng: np.random.Generator,
    shape: tuple[int, int, int],
    most: int,
    *,
    first_always: bool,
    inner: SideRange,
) -> list[Box3]:
    """Up to ``most`` random boxes; each after the first (or each, unless ``first_always``) is
    drawn with chance 0.95, as in the paper's code. Boxes keep 3 voxels from the border where
    the volume is large enough."""
    boxes = []
    for k in range(most):
        if not (first_always and k == 0) and rng.random() >= _MORE_BOXES:
            break
        boxes.append(_box(rng, shape, inner))
    return boxes


def _box(rng: np.random.Generator, shape: tuple[int, int, int], inner: SideRange) -> Box3:
    starts, sizes = [], []
    for n in shape:
        lo, hi = inner(n)
        lo = min(max(1, lo), n)
        size = int(rng.integers(lo, min(max(lo, hi), n) + 1))
        margin = min(3, (n - size) // 2)
        starts.append(int(rng.integers(margin, n - size - margin + 1)))
        sizes.append(size)
    return (starts[0], starts[1], starts[2]), (sizes[0], sizes[1], sizes[2])


# --- applying (x's device, torch) --------------------------------------------------------------


def _shuffled(out: torch.Tensor, plans: list[Corruption]) -> torch.Tensor:
    b, c, n = out.shape
    identity = np.arange(n)
    index = np.stack([identity if p.shuffle is None else p.shuffle for p in plans])  # (B, N)
    index_t = torch.as_tensor(index, device=out.device)[:, None, :].expand(b, c, n)
    return out.gather(2, index_t)


def _curved(out: torch.Tensor, plans: list[Corruption]) -> torch.Tensor:
    """Each volume through its curve: linear interpolation in its look-up table."""
    identity = np.linspace(0.0, 1.0, CURVE_POINTS)
    table = np.stack([identity if p.curve is None else p.curve for p in plans])  # (B, K)
    table_t = torch.as_tensor(table, dtype=torch.float32, device=out.device)
    b, c, n = out.shape
    position = out.float().clamp(0, 1).reshape(b, c * n) * (CURVE_POINTS - 1)  # (B, C*N)
    low = position.floor().long().clamp(max=CURVE_POINTS - 2)
    weight = position - low
    mapped = torch.lerp(table_t.gather(1, low), table_t.gather(1, low + 1), weight)
    mapped = mapped.clamp(0, 1).reshape(b, c, n).to(out.dtype)
    applied = torch.tensor([p.curve is not None for p in plans], device=out.device)
    return torch.where(applied[:, None, None], mapped, out)


def _painted(
    out: torch.Tensor, plans: list[Corruption], spatial: tuple[int, int, int]
) -> torch.Tensor:
    b, _, n = out.shape
    masks = np.zeros((b, n), dtype=bool)
    noise = np.zeros((b, n), dtype=np.float32)
    for i, plan in enumerate(plans):
        if plan.paint is not None and plan.noise is not None:
            masks[i] = plan.paint_mask(spatial).reshape(n)
            noise[i] = plan.noise.reshape(n)
    mask_t = torch.as_tensor(masks, device=out.device)[:, None, :]  # (B, 1, N)
    noise_t = torch.as_tensor(noise, device=out.device).to(out.dtype)[:, None, :]
    return torch.where(mask_t, noise_t, out)


def _check_volumes(x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 5:
        raise ValueError(f"x must be (B, C, D, H, W), got {x.ndim}-D shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"x must be floating point with values in [0, 1], got {x.dtype}")
    if x.numel() == 0:
        raise ValueError(f"x is empty (shape {tuple(x.shape)})")
    low, high = torch.aminmax(x.detach())
    if not (float(low) >= 0.0 and float(high) <= 1.0):
        raise ValueError(
            f"x must lie in [0, 1], got values from {float(low):g} to {float(high):g}; "
            "window and scale the volumes first (e.g. HU -1000..1000 to 0..1)"
        )
