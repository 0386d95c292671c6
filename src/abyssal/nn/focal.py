"""Focal loss for imbalanced classification (Lin et al., "Focal Loss for Dense Object Detection",
ICCV 2017, arXiv:1708.02002), in its multi-class softmax form:

    FL(p_t) = -alpha_t * (1 - p_t) ** gamma * log(p_t)

where ``p_t`` is the softmax probability of the true class. ``gamma`` turns down the loss of items
the model already gets right (``gamma = 0`` is cross-entropy); ``alpha`` weights each class.

:func:`class_balanced_alpha` derives ``alpha`` from training counts, by inverse frequency or by the
effective number of samples of Cui et al., "Class-Balanced Loss Based on Effective Number of
Samples", CVPR 2019, arXiv:1901.05555.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, get_args

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

Reduction = Literal["mean", "sum", "none"]
REDUCTIONS: tuple[str, ...] = get_args(Reduction)

_TINY = torch.finfo(torch.float32).tiny
"""Floor for ``1 - p_t`` so that ``(1 - p_t) ** gamma`` has a finite gradient when ``p_t == 1``."""


def focal_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    gamma: float = 2.0,
    alpha: torch.Tensor | None = None,
    reduction: Reduction = "mean",
) -> torch.Tensor:
    """Multi-class focal loss, computed in float32 from log-softmax for numerical stability.

    Args:
        logits: unnormalised class scores, any float dtype (bf16 and fp16 are upcast).
        target: true class index of each item, an integer dtype, in ``[0, C)``.
        gamma: focusing parameter, ``>= 0``; ``0`` gives cross-entropy.
        alpha: per-class weights (``>= 0``), or ``None`` for no weighting.
        reduction: ``"mean"`` (sum of the per-item losses divided by ``N``; unlike
            ``F.cross_entropy(weight=...)`` it is *not* divided by the sum of the items' ``alpha``),
            ``"sum"`` or ``"none"``.

    Returns:
        The loss: a float32 scalar, or (N,) for ``reduction="none"``.

    Raises:
        ValueError: on a bad shape, dtype or value of any argument; the message names it.

    Shapes:
        - logits: (N, C).
        - target: (N,).
        - alpha: (C,).
        - output: () or (N,).

    Example:
        >>> logits = torch.tensor([[2.0, 0.0, -1.0]])
        >>> round(focal_loss(logits, torch.tensor([0]), gamma=0.0).item(), 4)  # cross-entropy
        0.1698
    """
    _check_loss_args(logits, target, gamma, alpha, reduction)
    log_p = F.log_softmax(logits.float(), dim=1)  # (N, C)
    log_pt = log_p.gather(1, target.long().unsqueeze(1)).squeeze(1)  # (N,)
    miss = (-torch.expm1(log_pt)).clamp_min(_TINY)  # 1 - p_t, accurate when p_t is near 1
    loss = -(miss**gamma) * log_pt  # (N,)
    if alpha is not None:
        loss = loss * alpha.to(device=loss.device, dtype=torch.float32)[target.long()]
    if reduction == "mean":
        return loss.mean()
    return loss.sum() if reduction == "sum" else loss


def _check_loss_args(
    logits: torch.Tensor,
    target: torch.Tensor,
    gamma: float,
    alpha: torch.Tensor | None,
    reduction: str,
) -> None:
    """Raise ``ValueError`` naming the first problem with :func:`focal_loss`'s arguments."""
    if logits.ndim != 2:
        raise ValueError(f"focal_loss logits must be 2-D (N, C), got shape {tuple(logits.shape)}")
    if not logits.dtype.is_floating_point:
        raise ValueError(f"focal_loss logits must be a float dtype, got {logits.dtype}")
    n, c = logits.shape
    if target.shape != (n,):
        raise ValueError(
            f"focal_loss target must have shape ({n},) to match logits {tuple(logits.shape)}, "
            f"got {tuple(target.shape)}"
        )
    if target.dtype.is_floating_point or target.dtype.is_complex or target.dtype == torch.bool:
        raise ValueError(f"focal_loss target must be an integer dtype, got {target.dtype}")
    if n > 0:
        low, high = int(target.min()), int(target.max())
        if low < 0 or high >= c:
            bad = low if low < 0 else high
            raise ValueError(f"focal_loss target {bad} is out of range [0, {c})")
    _check_gamma(gamma)
    if alpha is not None:
        _check_alpha(alpha, c)
    _check_reduction(reduction)


def _check_gamma(gamma: float) -> None:
    if not gamma >= 0:  # also rejects NaN
        raise ValueError(f"focal_loss gamma must be >= 0, got {gamma}")


def _check_alpha(alpha: torch.Tensor, num_classes: int | None) -> None:
    if alpha.ndim != 1:
        raise ValueError(f"focal_loss alpha must be 1-D (C,), got shape {tuple(alpha.shape)}")
    if num_classes is not None and alpha.numel() != num_classes:
        raise ValueError(
            f"focal_loss alpha has {alpha.numel()} weights but logits have {num_classes} classes"
        )
    if not bool((alpha >= 0).all()):  # also rejects NaN
        raise ValueError(f"focal_loss alpha must be >= 0, got {alpha.tolist()}")


def _check_reduction(reduction: str) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"focal_loss reduction must be one of {REDUCTIONS}, got {reduction!r}")


class FocalLoss(nn.Module):
    """Focal loss as a module; see :func:`focal_loss`.

    ``alpha`` is kept as a non-persistent buffer: ``.to(device)`` moves it, and it stays out of
    ``state_dict()`` (it is configuration, rebuilt from the constructor arguments).

    Args:
        gamma: focusing parameter, ``>= 0``.
        alpha: per-class weights (``>= 0``), e.g. from :func:`class_balanced_alpha`, or ``None``.
        reduction: ``"mean"`` (divided by ``N``), ``"sum"`` or ``"none"``.

    Shapes:
        - logits: (N, C), any float dtype.
        - target: (N,) integer class indices.
        - output: () or (N,) float32.

    Example:
        >>> loss_fn = FocalLoss(gamma=2.0, alpha=[0.25, 0.75])
        >>> loss_fn(torch.zeros(3, 2), torch.tensor([0, 1, 1])).shape
        torch.Size([])
    """

    alpha: torch.Tensor | None

    def __init__(
        self,
        gamma: float = 2.0,
        alpha: Sequence[float] | torch.Tensor | None = None,
        reduction: Reduction = "mean",
    ) -> None:
        super().__init__()
        _check_gamma(gamma)
        _check_reduction(reduction)
        weights = None
        if alpha is not None:
            weights = torch.as_tensor(alpha, dtype=torch.float32).detach().clone()
            _check_alpha(weights, None)
        self.gamma = float(gamma)
        self.reduction: Reduction = reduction
        self.register_buffer("alpha", weights, persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return focal_loss(
            logits, target, gamma=self.gamma, alpha=self.alpha, reduction=self.reduction
        )

    def extra_repr(self) -> str:
        alpha = None if self.alpha is None else [round(a, 4) for a in self.alpha.tolist()]
        return f"gamma={self.gamma}, alpha={alpha}, reduction={self.reduction!r}"


def class_balanced_alpha(
    counts: Sequence[int] | np.ndarray, *, beta: float | None = None
) -> torch.Tensor:
    """Per-class weights from training counts, normalised so that they average 1 over classes.

    - ``beta=None``: inverse frequency, ``w_c ∝ 1 / n_c``.
    - ``0 <= beta < 1``: inverse effective number of samples (Cui et al. 2019),
      ``w_c ∝ (1 - beta) / (1 - beta ** n_c)``; ``beta = 0`` gives equal weights and ``beta -> 1``
      approaches inverse frequency. Cui et al. suggest ``beta`` in ``{0.9, 0.99, 0.999, 0.9999}``.

    The class average is 1 in both cases, so the weights sum to ``C``. (scikit-learn's
    ``"balanced"`` weights ``n / (C * n_c)`` are the same up to a constant factor; they make the
    *item* average 1 instead.)

    Args:
        counts: number of training items of each class, all ``>= 1``.
        beta: ``None`` for inverse frequency, or the effective-number parameter in ``[0, 1)``.

    Returns:
        (C,) float32 weights, for ``FocalLoss(alpha=...)``.

    Raises:
        ValueError: ``counts`` empty, not 1-D, or with a count below 1 (the class is named);
            ``beta`` outside ``[0, 1)``.

    Example:
        >>> class_balanced_alpha([10, 30])
        tensor([1.5000, 0.5000])
    """
    n = np.asarray(counts, dtype=np.float64)
    if n.ndim != 1 or n.size == 0:
        raise ValueError(f"class counts must be a non-empty 1-D sequence, got shape {n.shape}")
    for index, count in enumerate(n):
        if not count >= 1:
            raise ValueError(f"class {index} has count {count:g}; every class needs >= 1 item")
    if beta is None:
        raw = 1.0 / n
    elif 0.0 <= beta < 1.0:
        raw = (1.0 - beta) / (1.0 - np.power(beta, n))
    else:
        raise ValueError(f"class-balanced beta must be in [0, 1) or None, got {beta}")
    return torch.as_tensor(raw / raw.mean(), dtype=torch.float32)
