"""Where training runs: the :class:`Strategy` protocol and the one-process :class:`LocalStrategy`.

The trainer talks to processes and devices only through a strategy, so that DDP, FSDP or a
parameter server slot in as new registered strategies without changes to the training loop. A
strategy tells each process its :class:`~abyssal.contracts.task.Shard` of the data, and gathers
validation outputs from every process before metrics are computed (AUROC, mAP or Dice cannot be
averaged across ranks); :func:`gather_outputs` does that over ``torch.distributed``.

Example:
    >>> strategy = STRATEGIES.get("local")()
    >>> model = strategy.setup(torch.nn.Linear(2, 1), strategy.device("cpu"))
    >>> strategy.unwrap(model) is model
    True
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from abyssal.contracts.task import Shard
from abyssal.core.devices import resolve_device
from abyssal.core.errors import AbyssalError
from abyssal.core.registry import Registry


@runtime_checkable
class Strategy(Protocol):
    """How the trainer places a model on devices and processes.

    Attributes:
        is_main: whether this process writes records, checkpoints and the progress bar.
        shard: this process's part of the data.
    """

    is_main: bool
    shard: Shard

    def device(self, spec: str) -> torch.device:
        """The device this process trains on, given the config's device spec."""

    def setup(self, model: nn.Module, device: torch.device) -> nn.Module:
        """Move ``model`` to ``device`` and wrap it as the strategy needs (e.g. in DDP)."""

    def unwrap(self, model: nn.Module) -> nn.Module:
        """The plain module inside what :meth:`setup` returned (what checkpoints hold)."""

    def gather(self, outputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Every process's outputs concatenated along the first axis, in rank order."""

    def mean(self, value: float) -> float:
        """The mean of ``value`` over processes (e.g. the training loss)."""

    def barrier(self) -> None:
        """Wait until every process reaches this point."""


class LocalStrategy:
    """One process on the CPU or on one CUDA device: no wrapping, no communication.

    Example:
        >>> LocalStrategy().mean(0.25)
        0.25
    """

    is_main = True
    shard = Shard(0, 1)

    def device(self, spec: str) -> torch.device:
        """``resolve_device(spec)``: ``auto`` picks CUDA when available."""
        return resolve_device(spec)

    def setup(self, model: nn.Module, device: torch.device) -> nn.Module:
        """``model`` moved to ``device``."""
        return model.to(device)

    def unwrap(self, model: nn.Module) -> nn.Module:
        """``model`` itself."""
        return model

    def gather(self, outputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``outputs`` unchanged (there is one process)."""
        return dict(outputs)

    def mean(self, value: float) -> float:
        """``value`` (there is one process)."""
        return value

    def barrier(self) -> None:
        """Nothing to wait for."""


def gather_outputs(
    outputs: Mapping[str, np.ndarray], group: object = None
) -> dict[str, np.ndarray]:
    """All ranks' validation outputs, concatenated in rank order (call on every rank).

    Ranks may hold different numbers of rows (shards differ in size by one); every rank must
    return the same keys.

    Args:
        outputs: name -> array with rows along the first axis.
        group: the ``torch.distributed`` process group; the default group when ``None``.

    Returns:
        name -> the concatenation of every rank's array.

    Raises:
        AbyssalError: ranks returned different output names.
    """
    import torch.distributed as dist

    parts: list[dict[str, np.ndarray] | None] = [None] * dist.get_world_size(group)
    dist.all_gather_object(parts, {k: np.asarray(v) for k, v in outputs.items()}, group=group)
    keys = set(parts[0] or {})
    if any(set(p or {}) != keys for p in parts):
        raise AbyssalError("validation outputs differ in their names across processes")
    return {k: np.concatenate([p[k] for p in parts if p is not None]) for k in sorted(keys)}


STRATEGIES: Registry[type] = Registry("strategy")
STRATEGIES.add("local", LocalStrategy)
