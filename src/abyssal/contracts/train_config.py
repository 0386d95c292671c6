"""How to train (not what): :class:`TrainConfig`, the ``train`` section of every solution's config.

Optimizers and learning-rate schedules are chosen by name from the registries in
:mod:`abyssal.train.optim`; the names are checked there before a run starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from abyssal.core.config import field
from abyssal.core.errors import ConfigError


@dataclass
class TrainConfig:
    """Optimisation, schedule, precision, evaluation, stopping and checkpoints.

    Example:
        >>> TrainConfig(max_steps=100, schedule="cosine", warmup_steps=10).schedule
        'cosine'
    """

    epochs: int = field(50, help="maximum number of epochs")
    max_steps: int | None = field(
        None, help="stop after this many optimizer steps (also mid-epoch); null: epochs only"
    )
    optimizer: str = field("adamw", help="optimizer by name: adamw, adam or sgd")
    lr: float = field(3e-3, help="peak learning rate")
    weight_decay: float = field(1e-4, help="weight decay (on weight matrices only, by default)")
    decay_norm_and_bias: bool = field(
        False, help="also decay 1-D parameters (biases, norm scales); false: only >= 2-D tensors"
    )
    betas: list[float] = field(
        default_factory=lambda: [0.9, 0.999], help="adam/adamw: the two moment decay rates"
    )
    momentum: float = field(0.9, help="sgd: momentum")
    schedule: str = field(
        "constant", help="learning-rate schedule after warmup: constant, cosine or linear"
    )
    warmup_steps: int = field(0, help="steps of linear warmup from 0 to train.lr")
    min_lr_ratio: float = field(0.0, help="cosine/linear: final learning rate as a share of lr")
    trainable: list[str] | None = field(
        None,
        help="glob patterns of parameter names to train (e.g. ['head.*']); null: every parameter "
        "that requires a gradient",
    )
    frozen: list[str] = field(
        default_factory=list,
        help="glob patterns of parameter names to freeze (e.g. ['backbone.*'])",
    )
    grad_accum_steps: int = field(1, help="batches whose gradients are summed before a step")
    clip_grad_norm: float | None = field(1.0, help="clip gradients to this L2 norm; null: no clip")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = field(
        "auto", help="auto: bf16 autocast on CUDA devices that support it, fp32 on CPU"
    )
    device: str = field("auto", help="auto, cpu, cuda or cuda:N")
    seed: int = field(0, help="seed for weights, batches and dropout")
    eval_every_steps: int | None = field(
        None, help="validate every N optimizer steps and at the end; null: after every epoch"
    )
    early_stopping_metric: str | None = field(
        None, help="validation metric to watch; null: the solution's default"
    )
    early_stopping_mode: Literal["auto", "max", "min"] = field(
        "auto", help="whether larger is better; auto: the solution's choice for its metric"
    )
    patience: int = field(10, help="evaluations without improvement before stopping; 0: never stop")
    checkpoint_every: int = field(1, help="write a resumable checkpoint every N evaluations")
    progress: bool = field(True, help="show a progress bar with ETA and live metrics")
    strategy: Literal["local"] = field("local", help="local: one process, CPU or one CUDA device")
    deterministic: bool = field(
        True,
        help="deterministic kernels (torch.use_deterministic_algorithms), so that a run repeats "
        "and resumes bit for bit on the same machine, also with several threads",
    )

    def __post_init__(self) -> None:
        for name in ("epochs", "grad_accum_steps", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("max_steps", "eval_every_steps"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"train.{name} must be >= 1 or null, got {value}")
        if self.lr <= 0:
            raise ConfigError(f"train.lr must be > 0, got {self.lr}")
        if self.weight_decay < 0:
            raise ConfigError(f"train.weight_decay must be >= 0, got {self.weight_decay}")
        if self.patience < 0 or self.warmup_steps < 0:
            raise ConfigError("train.patience and train.warmup_steps must be >= 0")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ConfigError(f"train.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ConfigError(f"train.betas must be two numbers in [0, 1), got {self.betas}")
        if self.clip_grad_norm is not None and self.clip_grad_norm <= 0:
            raise ConfigError(
                f"train.clip_grad_norm must be > 0 or null, got {self.clip_grad_norm}"
            )
