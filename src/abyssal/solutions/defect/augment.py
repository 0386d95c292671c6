"""Batched image augmentation on the training device, driven by random draws made on the CPU.

The random numbers of a batch are drawn when the batch is made (seeded by run seed, epoch and
batch), and applied on the device by :func:`augment`: one ``affine_grid`` / ``grid_sample`` per
batch (random resized crop, flips, quarter turns) and a brightness/contrast change. So a resumed
run sees the same augmented images, and the GPU does the pixel work.

Example:
    >>> draws = augment_draws(4, torch.Generator().manual_seed(0))
    >>> augment(torch.rand(4, 1, 32, 32), draws).shape
    torch.Size([4, 1, 32, 32])
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

DRAWS = 8
"""Random numbers per image: scale, aspect, x, y, flip, quarter turns, brightness, contrast."""


def augment_draws(n: int, generator: torch.Generator) -> torch.Tensor:
    """(n, DRAWS) uniform draws in [0, 1) for :func:`augment`."""
    return torch.rand(n, DRAWS, generator=generator)


def augment(
    x: torch.Tensor,
    draws: torch.Tensor,
    *,
    min_scale: float = 0.6,
    max_aspect: float = 4 / 3,
    jitter: float = 0.2,
) -> torch.Tensor:
    """Random resized crop (area share in ``[min_scale, 1]``), horizontal flip, quarter turns,
    brightness and contrast (each within ``±jitter``) of a batch.

    Surface defects have no up or down, so every quarter turn and flip is a valid view.

    Shapes:
        x: (B, C, H, W) float in [0, 1] (H == W for quarter turns); draws: (B, DRAWS) in [0, 1).
        Returns (B, C, H, W) in [0, 1].
    """
    d = draws.to(x.device, torch.float32)
    area = min_scale + (1 - min_scale) * d[:, 0]
    log_r = math.log(max_aspect)
    aspect = torch.exp((2 * d[:, 1] - 1) * log_r)
    sx = torch.sqrt(area * aspect).clamp(max=1.0)  # half-widths relative to the image
    sy = torch.sqrt(area / aspect).clamp(max=1.0)
    tx = (2 * d[:, 2] - 1) * (1 - sx)  # the crop stays inside the image
    ty = (2 * d[:, 3] - 1) * (1 - sy)
    flip = torch.where(d[:, 4] < 0.5, -1.0, 1.0)
    turn = torch.floor(d[:, 5] * 4) * (math.pi / 2)
    cos, sin = torch.cos(turn), torch.sin(turn)
    theta = torch.stack(
        [
            torch.stack([sx * flip * cos, -sy * sin, tx], dim=1),
            torch.stack([sx * flip * sin, sy * cos, ty], dim=1),
        ],
        dim=1,
    )  # (B, 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    brightness = (2 * d[:, 6] - 1) * jitter
    contrast = 1 + (2 * d[:, 7] - 1) * jitter
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    out = (out - mean) * contrast[:, None, None, None] + mean + brightness[:, None, None, None]
    return out.clamp(0.0, 1.0)
