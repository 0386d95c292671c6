"""What the trainer needs from a solution: the :class:`TrainTask` protocol and :class:`TrainConfig`.

A solution turns its config and prepared data into a ``TrainTask``; the trainer (local today,
DDP / FSDP / parameter server later) drives any task the same way.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

from abyssal.core.config import field
from abyssal.core.errors import ConfigError


@runtime_checkable
class TrainTask(Protocol):
    """A trainable problem, independent of where and how it is trained.

    The trainer calls, in order: ``build_model`` once; per epoch ``train_batches(epoch)``, and for
    each batch ``move_batch`` then ``training_loss``; then ``validate``. Batches of one epoch must
    depend only on the epoch number and the task's own seed, so that a resumed run sees the same
    batches.
    """

    def build_model(self) -> Any:
        """A fresh ``torch.nn.Module`` (weights drawn from the current torch RNG)."""

    def train_batches(self, epoch: int) -> Iterable[Any]:
        """The training batches of epoch ``epoch`` (0-based), on the CPU."""

    def move_batch(self, batch: Any, device: Any) -> Any:
        """``batch`` moved to ``device``."""

    def training_loss(self, model: Any, batch: Any) -> Any:
        """A scalar loss tensor for one batch, with gradients."""

    def validate(self, model: Any) -> dict[str, float]:
        """Validation metrics (the model is in eval mode, gradients off)."""


@dataclass
class TrainConfig:
    """How to train: optimisation, precision, stopping and checkpoints (not what to train)."""

    epochs: int = field(50, help="maximum number of epochs")
    lr: float = field(3e-3, help="AdamW learning rate")
    weight_decay: float = field(1e-4, help="AdamW weight decay")
    grad_accum_steps: int = field(1, help="batches whose gradients are summed before a step")
    clip_grad_norm: float | None = field(1.0, help="clip gradients to this L2 norm; null: no clip")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = field(
        "auto", help="auto: bf16 autocast on CUDA devices that support it, fp32 on CPU"
    )
    device: str = field("auto", help="auto, cpu, cuda or cuda:N")
    seed: int = field(0, help="seed for weights, batches and dropout")
    early_stopping_metric: str | None = field(
        None, help="validation metric to watch; null: the solution's default"
    )
    early_stopping_mode: Literal["max", "min"] = field("max", help="whether larger is better")
    patience: int = field(10, help="epochs without improvement before stopping; 0: never stop")
    checkpoint_every: int = field(1, help="write a checkpoint every N epochs")
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
        if self.lr <= 0:
            raise ConfigError(f"train.lr must be > 0, got {self.lr}")
        if self.patience < 0:
            raise ConfigError(f"train.patience must be >= 0, got {self.patience}")
        if self.clip_grad_norm is not None and self.clip_grad_norm <= 0:
            raise ConfigError(
                f"train.clip_grad_norm must be > 0 or null, got {self.clip_grad_norm}"
            )
