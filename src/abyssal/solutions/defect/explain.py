"""Pictures that explain a defect prediction: the image with its annotated boxes beside a heat map
(e.g. from :class:`abyssal.nn.gradcam.GradCAM`) blended over it.

Pillow only (no matplotlib); Pillow is imported when a picture is written.

Layout of :func:`render_explanation` (``s = scale``, image ``H x W``)::

    +------------------------------------------+   TITLE_HEIGHT px, only with a title
    | title                                    |
    +-------------------+-----+----------------+
    | image + boxes     | gap | heat + boxes   |   H * s px
    +-------------------+-----+----------------+
      W * s px           PANEL_GAP  W * s px
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np

from abyssal.core.atomic import atomic_path
from abyssal.core.colours import INFERNO_ANCHORS as INFERNO_ANCHORS  # re-exported
from abyssal.core.colours import heatmap_colours
from abyssal.core.optional import require

if TYPE_CHECKING:
    from PIL import Image, ImageDraw

Box = tuple[float, float, float, float]
"""(xmin, ymin, xmax, ymax) in image pixels; xmax and ymax are exclusive."""

PANEL_GAP = 4
"""Pixels of background between the two panels."""

TITLE_HEIGHT = 20
"""Pixels of the title band above the panels (none without a title)."""

BOX_COLOUR = (0, 255, 0)
BOX_WIDTH = 2
BACKGROUND = (255, 255, 255)
TEXT_COLOUR = (0, 0, 0)


def render_explanation(
    image: np.ndarray,
    cam: np.ndarray,
    path: str | Path,
    *,
    boxes: Sequence[Box] = (),
    title: str = "",
    alpha: float = 0.45,
    scale: int = 2,
) -> Path:
    """Write a PNG: the image with its boxes, beside the heat map blended over the image.

    Both panels are upscaled ``scale`` times (nearest neighbour, so pixels stay sharp) and carry the
    same green boxes (``BOX_WIDTH`` px, drawn inside the box's edge). The picture is
    ``2 * W * scale + PANEL_GAP`` wide and ``H * scale`` high, plus ``TITLE_HEIGHT`` with a title
    (drawn in Pillow's default font, cut off where it is wider than the picture). The file is
    written atomically (a temporary file in the same folder, then renamed); folders are created.

    Args:
        image: the picture, channels first, grey (1) or RGB (3).
        cam: heat in [0, 1], one value per image pixel.
        path: the PNG to write.
        boxes: annotated regions (xmin, ymin, xmax, ymax) in image pixels, xmax/ymax exclusive.
        title: a line of text above the panels; ``""`` for none.
        alpha: weight of the heat colours in the blend, in [0, 1].
        scale: whole-number upscaling factor, ``>= 1``.

    Returns:
        ``path``.

    Raises:
        ValueError: a bad shape, dtype or value of any argument; the message names it.

    Shapes:
        - image: (C, H, W) uint8 with C in {1, 3}.
        - cam: (H, W) float.

    Example:
        >>> render_explanation(img, cam, "out/item7.png", boxes=[(3, 4, 9, 12)])  # doctest: +SKIP
        PosixPath('out/item7.png')
    """
    rgb = _check_image(image)
    heat = _check_cam(cam, rgb.shape[:2])
    _check_options(boxes, alpha, scale)
    blend = (1.0 - alpha) * rgb.astype(np.float64) + alpha * heatmap_colours(heat)
    panels = [rgb, np.rint(blend).astype(np.uint8)]
    picture = _compose(panels, boxes, title, scale)
    path = Path(path)
    with atomic_path(path) as tmp:
        picture.save(tmp, format="PNG")
    return path


def _check_image(image: np.ndarray) -> np.ndarray:
    """The image as (H, W, 3) uint8 RGB, or ``ValueError``."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        kind = image.dtype if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(f"image must be a uint8 numpy array (C, H, W), got {kind}")
    if image.ndim != 3 or image.shape[0] not in (1, 3) or 0 in image.shape[1:]:
        raise ValueError(f"image must be (C, H, W) with C in {{1, 3}}, got shape {image.shape}")
    rgb = np.transpose(image, (1, 2, 0))  # (H, W, C)
    return np.ascontiguousarray(np.repeat(rgb, 3, axis=2) if rgb.shape[2] == 1 else rgb)


def _check_cam(cam: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    heat = np.asarray(cam, dtype=np.float64)
    if heat.shape != size:
        raise ValueError(f"cam must have the image's shape {size}, got {heat.shape}")
    if not np.isfinite(heat).all() or heat.min() < -1e-6 or heat.max() > 1 + 1e-6:
        raise ValueError("cam values must be finite and in [0, 1]")
    return heat


def _check_options(boxes: Sequence[Box], alpha: float, scale: int) -> None:
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if not isinstance(scale, int) or isinstance(scale, bool) or scale < 1:
        raise ValueError(f"scale must be a whole number >= 1, got {scale!r}")
    for index, box in enumerate(boxes):
        if len(box) != 4:
            raise ValueError(f"box {index} must be (xmin, ymin, xmax, ymax), got {box!r}")
        xmin, ymin, xmax, ymax = box
        if not (xmin < xmax and ymin < ymax):
            raise ValueError(f"box {index} {box!r} needs xmin < xmax and ymin < ymax")


def _compose(panels: list[np.ndarray], boxes: Sequence[Box], title: str, scale: int) -> Image.Image:
    """The full picture (a ``PIL.Image``): title band, then the panels side by side with boxes."""
    image_mod, draw_mod, font_mod = _pillow()
    height, width = panels[0].shape[:2]
    top = TITLE_HEIGHT if title else 0
    size = (2 * width * scale + PANEL_GAP, height * scale + top)
    canvas = image_mod.new("RGB", size, BACKGROUND)
    draw = draw_mod.Draw(canvas)
    for k, panel in enumerate(panels):
        left = k * (width * scale + PANEL_GAP)
        big = image_mod.fromarray(panel)  # (H, W, 3) uint8 -> RGB
        canvas.paste(big.resize((width * scale, height * scale), image_mod.NEAREST), (left, top))
        _draw_boxes(draw, boxes, scale, (left, top), (width * scale, height * scale))
    if title:
        draw.text((4, 4), title, fill=TEXT_COLOUR, font=font_mod.load_default())
    return canvas


def _draw_boxes(
    draw: ImageDraw.ImageDraw,
    boxes: Sequence[Box],
    scale: int,
    origin: tuple[int, int],
    panel: tuple[int, int],
) -> None:
    """Green rectangles inside each box's edge, clipped to the panel at ``origin``."""
    (left, top), (width, height) = origin, panel
    for xmin, ymin, xmax, ymax in boxes:
        x0, x1 = _scaled_span(xmin, xmax, scale, width)
        y0, y1 = _scaled_span(ymin, ymax, scale, height)
        rect = (left + x0, top + y0, left + x1, top + y1)
        draw.rectangle(rect, outline=BOX_COLOUR, width=BOX_WIDTH)


def _scaled_span(low: float, high: float, scale: int, size: int) -> tuple[int, int]:
    """First and last upscaled pixel of ``[low, high)``, clipped to ``[0, size)``."""
    low, high = (min(max(float(v) * scale, 0.0), float(size)) for v in (low, high))
    first = min(round(low), size - 1)
    return first, max(first, min(round(high) - 1, size - 1))  # high is exclusive


def _pillow() -> tuple[ModuleType, ModuleType, ModuleType]:
    """``PIL.Image``, ``PIL.ImageDraw`` and ``PIL.ImageFont``, or an error naming the extra."""
    require("PIL", extra="defect", purpose="drawing explanation pictures")
    from PIL import Image, ImageDraw, ImageFont

    return Image, ImageDraw, ImageFont
