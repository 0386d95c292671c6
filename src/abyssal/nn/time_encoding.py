"""Harmonic encoding of time differences (Xu et al., "Inductive Representation Learning on Temporal
Graphs", ICLR 2020; fixed frequencies as in Cong et al., "Do We Really Need Complicated Model
Architectures for Temporal Networks?", ICLR 2023).

    phi(dt) = cos(omega * dt + b),  omega_i = alpha ** (-(i - 1) / beta)

With the default ``alpha = 10**9`` over ``dim`` frequencies the encoding resolves differences from
seconds to decades.
"""

from __future__ import annotations

import torch
from torch import nn


class TimeEncoding(nn.Module):
    """Map time differences (seconds) to ``dim`` cosine features.

    Args:
        dim: number of output features.
        learnable: train the frequencies and phases (TGAT) instead of keeping them fixed.
        max_exponent: the slowest frequency is ``10 ** -max_exponent`` per second.

    Shapes:
        - input: (E,) time differences, any real dtype.
        - output: (E, dim) float32.

    Example:
        >>> enc = TimeEncoding(4)
        >>> enc(torch.tensor([0.0, 3600.0])).shape
        torch.Size([2, 4])
    """

    def __init__(self, dim: int, learnable: bool = False, max_exponent: float = 9.0) -> None:
        super().__init__()
        if dim < 1:
            raise ValueError(f"TimeEncoding dim must be >= 1, got {dim}")
        omega = 10.0 ** -torch.linspace(0.0, max_exponent, dim)
        self.omega = nn.Parameter(omega, requires_grad=learnable)
        self.phase = nn.Parameter(torch.zeros(dim), requires_grad=learnable)

    def forward(self, dt: torch.Tensor) -> torch.Tensor:
        dt = dt.to(self.omega.dtype).unsqueeze(-1)  # (E, 1)
        return torch.cos(dt * self.omega + self.phase)  # (E, dim)
