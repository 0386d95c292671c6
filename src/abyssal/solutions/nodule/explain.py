"""Pictures that explain a nodule prediction: slices of a nodule-centred CT cube, with a 3-D heat
map (e.g. from :class:`abyssal.nn.gradcam.GradCAM` on (B, 1, D, H, W) cubes) blended over them.

Pillow only (no matplotlib); Pillow is imported when a picture is written, and
:func:`saliency_slices` and :func:`heat_in_mask` need only numpy.

Arrays are indexed ``[z, y, x]`` as in :mod:`abyssal.solutions.nodule.volumes`. The columns are
``n = slices`` axial slices (``[z, :, :]``) evenly spaced around the centre slice ``z = D // 2``,
then the coronal slice ``[:, H // 2, :]`` and the sagittal slice ``[:, :, W // 2]`` through the
centre; in those two, ``z`` grows downwards (array order, nothing is flipped).

Layout of :func:`render_saliency` (``s = scale``, cube ``D x H x W``, ``R = max(D, H) * s``)::

    +-----------------------------------------------------------+  TITLE_HEIGHT, only with a title
    | title                                                     |
    +-------+-----+-------+-----+-----+---------+-----+---------+  LABEL_HEIGHT
    | z=2   |     | z=5   | ... |     | coronal |     | sagittal|
    +-------+-----+-------+-----+-----+---------+-----+---------+
    | CT    | gap | CT    | ... | gap | CT      | gap | CT      |  R px (panels top-aligned)
    +-------+-----+-------+-----+-----+---------+-----+---------+  PANEL_GAP
    | heat  |     | heat  | ... |     | heat    |     | heat    |  R px
    +-------+-----+-------+-----+-----+---------+-----+---------+
      W * s  GAP    W * s               W * s           H * s

    width  = ((n + 1) * W + H) * s + (n + 1) * PANEL_GAP
    height = TITLE_HEIGHT (with a title) + LABEL_HEIGHT + 2 * R + PANEL_GAP
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np

from abyssal.core.atomic import atomic_path
from abyssal.core.colours import heatmap_colours
from abyssal.core.optional import require

if TYPE_CHECKING:
    from PIL import Image

SaliencySlice = tuple[str, np.ndarray, np.ndarray]
"""(label, grey, heat): one column of the picture, two 2-D float arrays in [0, 1]."""

PANEL_GAP = 4
"""Pixels of background between panels, across and down."""

TITLE_HEIGHT = 20
"""Pixels of the title band above everything (none without a title)."""

LABEL_HEIGHT = 14
"""Pixels of the band of column labels ("z=8", "coronal", "sagittal") above the panels."""

VALUE_TOLERANCE = 1e-6
"""How far outside [0, 1] a value may stray (rounding) before it is an error; it is clipped."""

BACKGROUND = (255, 255, 255)
TEXT_COLOUR = (0, 0, 0)


def saliency_slices(volume: np.ndarray, cam: np.ndarray, slices: int = 5) -> list[SaliencySlice]:
    """The columns of :func:`render_saliency`: labelled 2-D cuts of the CT cube and of its heat.

    Axial slices ``z = c + k * step`` around the centre ``c = D // 2`` (``slices // 2`` below it,
    the rest above), with the largest whole ``step`` that keeps them all inside the cube, so they
    spread over it; then the coronal and sagittal cuts through the centre. Heat is cut from the
    3-D map as it is (not renormalised per slice), so the panels compare with one another.

    Args:
        volume: CT intensities in [0, 1] (windowed and scaled), e.g. a nodule-centred crop.
        cam: heat in [0, 1], one value per voxel.
        slices: how many axial slices, ``1 <= slices <= D``.

    Returns:
        ``slices + 2`` tuples ``(label, grey, heat)``: labels ``"z=<index>"`` (ascending), then
        ``"coronal"`` and ``"sagittal"``.

    Raises:
        ValueError: an array not 3-D, the shapes differ, NaN or infinite values, values outside
            [0, 1], or ``slices`` out of range; the message names the argument.

    Shapes:
        - volume, cam: (D, H, W).
        - grey, heat: (H, W) axial, (D, W) coronal, (D, H) sagittal.

    Example:
        >>> cuts = saliency_slices(np.zeros((16, 16, 16)), np.zeros((16, 16, 16)), slices=3)
        >>> [label for label, _, _ in cuts]
        ['z=1', 'z=8', 'z=15', 'coronal', 'sagittal']
    """
    grey, heat = _check_cubes(volume, cam)
    depth, height, width = grey.shape
    _check_slices(slices, depth)
    cuts = [(f"z={z}", grey[z], heat[z]) for z in _axial_indices(depth, slices)]
    cuts.append(("coronal", grey[:, height // 2, :], heat[:, height // 2, :]))
    cuts.append(("sagittal", grey[:, :, width // 2], heat[:, :, width // 2]))
    return cuts


def render_saliency(
    volume: np.ndarray,
    cam: np.ndarray,
    path: str | Path,
    *,
    title: str = "",
    scale: int = 4,
    alpha: float = 0.5,
    slices: int = 5,
) -> Path:
    """Write one PNG: CT slices of a nodule-centred cube above the same slices with heat blended in.

    The layout is in the module docstring. Panels are upscaled ``scale`` times (nearest
    neighbour, so voxels stay sharp); the bottom row is ``(1 - alpha) * grey + alpha * inferno``.
    Labels and the title use Pillow's default font, cut off where wider than their column or the
    picture. The file is written atomically (a temporary file beside it, then renamed); folders
    are created.

    Args:
        volume: CT intensities in [0, 1] (windowed and scaled).
        cam: heat in [0, 1], one value per voxel, e.g. one item of :class:`GradCAM`'s output.
        path: the PNG to write.
        title: a line of text above the panels; ``""`` for none.
        scale: whole-number upscaling factor, ``>= 1``.
        alpha: weight of the heat colours in the blend, in [0, 1].
        slices: how many axial slices, ``1 <= slices <= D``.

    Returns:
        ``path``.

    Raises:
        ValueError: a bad shape or value of any argument; the message names it.

    Shapes:
        - volume, cam: (D, H, W).

    Example:
        >>> cam, _ = GradCAM(net, "features")(cubes, classes=[0] * len(cubes))  # doctest: +SKIP
        >>> render_saliency(cubes[0, 0].numpy(), cam[0].numpy(), "out/n7.png")  # doctest: +SKIP
        PosixPath('out/n7.png')
    """
    _check_options(alpha, scale)
    cuts = saliency_slices(volume, cam, slices)
    picture = _compose(cuts, title, scale, alpha)
    path = Path(path)
    with atomic_path(path) as tmp:
        picture.save(tmp, format="PNG")
    return path


def heat_in_mask(cam: np.ndarray, mask: np.ndarray) -> float:
    """Share of a heat map's total heat that lies where ``mask`` is true (e.g. a nodule's voxels).

    Args:
        cam: non-negative, finite heat, any shape (usually (D, H, W)).
        mask: boolean, the shape of ``cam``.

    Returns:
        A share in [0, 1]; ``0.0`` when the map has no heat at all.

    Raises:
        ValueError: shapes differ, ``mask`` not boolean, or ``cam`` negative, NaN or infinite.

    Shapes:
        - cam, mask: (D, H, W), or any shape the two share.

    Example:
        >>> heat_in_mask(np.ones((2, 2, 2)), np.arange(8).reshape(2, 2, 2) < 2)
        0.25
    """
    heat = np.asarray(cam, dtype=np.float64)
    inside = np.asarray(mask)
    if inside.dtype != np.bool_:
        raise ValueError(f"heat_in_mask mask must be boolean, got {inside.dtype}")
    if inside.shape != heat.shape:
        raise ValueError(f"heat_in_mask mask shape {inside.shape} != cam shape {heat.shape}")
    if not np.isfinite(heat).all():
        raise ValueError("heat_in_mask cam must be finite, found NaN or infinite values")
    if heat.size and heat.min() < 0:
        raise ValueError(f"heat_in_mask cam must be non-negative, min is {heat.min()}")
    total = heat.sum()
    return float(heat[inside].sum() / total) if total > 0 else 0.0


def _axial_indices(depth: int, slices: int) -> list[int]:
    """``slices`` evenly spaced axial indices around ``depth // 2``, all inside ``[0, depth)``."""
    centre = depth // 2
    below, above = slices // 2, slices - 1 - slices // 2
    rooms = [depth]  # no limit from a side with no slices
    rooms += [centre // below] if below else []
    rooms += [(depth - 1 - centre) // above] if above else []
    step = max(1, min(rooms))
    return [centre + step * k for k in range(-below, above + 1)]


def _check_cubes(volume: np.ndarray, cam: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``volume`` and ``cam`` as float64 (D, H, W) arrays clipped to [0, 1], or ``ValueError``."""
    cubes = [np.asarray(volume, dtype=np.float64), np.asarray(cam, dtype=np.float64)]
    for name, cube in zip(("volume", "cam"), cubes, strict=True):
        if cube.ndim != 3 or 0 in cube.shape:
            raise ValueError(f"{name} must be a non-empty 3-D (D, H, W) array, got {cube.shape}")
    if cubes[0].shape != cubes[1].shape:
        raise ValueError(f"cam shape {cubes[1].shape} != volume shape {cubes[0].shape}")
    for name, cube in zip(("volume", "cam"), cubes, strict=True):
        if np.isnan(cube).any() or np.isinf(cube).any():
            bad = int(np.isnan(cube).sum()), int(np.isinf(cube).sum())
            raise ValueError(f"{name} has {bad[0]} NaN and {bad[1]} infinite values")
        low, high = cube.min(), cube.max()
        if low < -VALUE_TOLERANCE or high > 1 + VALUE_TOLERANCE:
            raise ValueError(f"{name} values must be in [0, 1], got min {low:.4g}, max {high:.4g}")
    return np.clip(cubes[0], 0.0, 1.0), np.clip(cubes[1], 0.0, 1.0)


def _check_slices(slices: int, depth: int) -> None:
    if not isinstance(slices, int) or isinstance(slices, bool) or not 1 <= slices <= depth:
        raise ValueError(f"slices must be a whole number in [1, D={depth}], got {slices!r}")


def _check_options(alpha: float, scale: int) -> None:
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if not isinstance(scale, int) or isinstance(scale, bool) or scale < 1:
        raise ValueError(f"scale must be a whole number >= 1, got {scale!r}")


def _compose(cuts: list[SaliencySlice], title: str, scale: int, alpha: float) -> Image.Image:
    """The full picture (a ``PIL.Image``): title band, label band, then the two rows of panels."""
    image_mod, draw_mod, font_mod = _pillow()
    font = font_mod.load_default()
    top = TITLE_HEIGHT if title else 0
    row = max(grey.shape[0] for _, grey, _ in cuts) * scale  # R: the tallest panel
    widths = [grey.shape[1] * scale for _, grey, _ in cuts]
    size = (sum(widths) + PANEL_GAP * (len(cuts) - 1), top + LABEL_HEIGHT + 2 * row + PANEL_GAP)
    canvas = image_mod.new("RGB", size, BACKGROUND)
    left = 0
    for (label, grey, heat), width in zip(cuts, widths, strict=True):
        tag = image_mod.new("RGB", (width, LABEL_HEIGHT), BACKGROUND)  # clips the label
        draw_mod.Draw(tag).text((1, 1), label, fill=TEXT_COLOUR, font=font)
        canvas.paste(tag, (left, top))
        for k, pixels in enumerate(_panel_pixels(grey, heat, alpha)):
            panel = image_mod.fromarray(pixels)  # (h, w, 3) uint8 -> RGB
            panel = panel.resize((width, grey.shape[0] * scale), image_mod.NEAREST)
            canvas.paste(panel, (left, top + LABEL_HEIGHT + k * (row + PANEL_GAP)))
        left += width + PANEL_GAP
    if title:
        draw_mod.Draw(canvas).text((4, 4), title, fill=TEXT_COLOUR, font=font)
    return canvas


def _panel_pixels(grey: np.ndarray, heat: np.ndarray, alpha: float) -> list[np.ndarray]:
    """The grey panel and the heat-over-grey panel of one cut, each (h, w, 3) uint8."""
    shade = np.rint(grey * 255.0).astype(np.uint8)  # (h, w)
    rgb = np.repeat(shade[:, :, None], 3, axis=2)  # (h, w, 3)
    blend = (1.0 - alpha) * rgb.astype(np.float64) + alpha * heatmap_colours(heat)
    return [rgb, np.rint(blend).astype(np.uint8)]


def _pillow() -> tuple[ModuleType, ModuleType, ModuleType]:
    """``PIL.Image``, ``PIL.ImageDraw`` and ``PIL.ImageFont``, or an error naming the extra."""
    require("PIL", extra="nodule", purpose="drawing saliency pictures")
    from PIL import Image, ImageDraw, ImageFont

    return Image, ImageDraw, ImageFont
