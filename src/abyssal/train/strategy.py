"""Where training runs: the :class:`Strategy` protocol and the one-process :class:`LocalStrategy`.

The trainer talks to processes and devices only through a strategy, so that DDP, FSDP or a
parameter server slot in as new registered strategies without changes to the training loop.

Example:
    >>> strategy = STRATEGIES.get("local")()
    >>> model = strategy.setup(torch.nn.Linear(2, 1), strategy.device("cpu"))
    >>> strategy.unwrap(model) is model
    True
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import nn

from abyssal.core.devices import resolve_device
from abyssal.core.registry import Registry


@runtime_checkable
class Strategy(Protocol):
    """How the trainer places a model on devices and processes.

    Attributes:
        is_main: whether this process writes records, checkpoints and the progress bar.
    """

    is_main: bool

    def device(self, spec: str) -> torch.device:
        """The device this process trains on, given the config's device spec."""

    def setup(self, model: nn.Module, device: torch.device) -> nn.Module:
        """Move ``model`` to ``device`` and wrap it as the strategy needs (e.g. in DDP)."""

    def unwrap(self, model: nn.Module) -> nn.Module:
        """The plain module inside what :meth:`setup` returned (what checkpoints hold)."""

    def reduce_metrics(self, metrics: dict[str, float]) -> dict[str, float]:
        """Combine per-process metrics into the values every process agrees on."""

    def barrier(self) -> None:
        """Wait until every process reaches this point."""


class LocalStrategy:
    """One process on the CPU or on one CUDA device: no wrapping, no communication.

    Example:
        >>> LocalStrategy().reduce_metrics({"auc": 0.9})
        {'auc': 0.9}
    """

    is_main = True

    def device(self, spec: str) -> torch.device:
        """``resolve_device(spec)``: ``auto`` picks CUDA when available."""
        return resolve_device(spec)

    def setup(self, model: nn.Module, device: torch.device) -> nn.Module:
        """``model`` moved to ``device``."""
        return model.to(device)

    def unwrap(self, model: nn.Module) -> nn.Module:
        """``model`` itself."""
        return model

    def reduce_metrics(self, metrics: dict[str, float]) -> dict[str, float]:
        """``metrics`` unchanged (there is one process)."""
        return dict(metrics)

    def barrier(self) -> None:
        """Nothing to wait for."""


STRATEGIES: Registry[type] = Registry("strategy")
STRATEGIES.add("local", LocalStrategy)
