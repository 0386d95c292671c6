"""Colour maps for pictures of heat (saliency, attention, error maps), numpy only.

:func:`heatmap_colours` turns values in [0, 1] into RGB with a piecewise-linear approximation of
matplotlib's "inferno", so abyssal draws heat maps without matplotlib.
"""

from __future__ import annotations

import numpy as np

INFERNO_ANCHORS = np.array(
    [
        (0.000, 0, 0, 4),
        (0.125, 31, 12, 72),
        (0.250, 87, 16, 110),
        (0.375, 137, 34, 106),
        (0.500, 188, 55, 84),
        (0.625, 228, 90, 50),
        (0.750, 249, 142, 9),
        (0.875, 246, 215, 70),
        (1.000, 252, 255, 164),
    ],
    dtype=np.float64,
)
"""(position, r, g, b) samples of matplotlib's "inferno": near black (cold) to pale yellow (hot)."""


def heatmap_colours(cam: np.ndarray) -> np.ndarray:
    """Colour a heat map with a piecewise-linear approximation of the "inferno" colour map.

    Inferno is perceptually uniform and reads in greyscale print; values are clipped to [0, 1]
    and ``nan`` is drawn as 0.

    Args:
        cam: heat values in [0, 1].

    Returns:
        RGB colours, uint8.

    Shapes:
        - cam: (H, W).
        - output: (H, W, 3).

    Example:
        >>> heatmap_colours(np.array([[0.0, 1.0]]))[0].tolist()
        [[0, 0, 4], [252, 255, 164]]
    """
    cam = np.asarray(cam, dtype=np.float64)
    if cam.ndim != 2:
        raise ValueError(f"heat map must be 2-D (H, W), got shape {cam.shape}")
    values = np.clip(np.nan_to_num(cam, nan=0.0), 0.0, 1.0)
    where = INFERNO_ANCHORS[:, 0]
    channels = [np.interp(values, where, INFERNO_ANCHORS[:, k]) for k in (1, 2, 3)]
    return np.rint(np.stack(channels, axis=-1)).astype(np.uint8)  # (H, W, 3)
