"""The :class:`TrainTask` protocol: what any trainer (one process, DDP, FSDP, parameter server)
needs from a solution, and :class:`Shard`, the part of the data one process works on.

The trainer calls, in order: ``build_model`` once; for each epoch ``train_batches(epoch, shard)``
and, for each batch, ``move_batch`` then ``training_loss``; at each evaluation
``val_batches(shard)``, ``move_batch`` and ``validation_step`` per batch. It concatenates the
outputs of every batch, gathers them across processes, and only then calls
``validation_metrics`` on the whole validation set: AUROC, mAP or Dice cannot be averaged across
ranks.

Example:
    >>> shard = Shard(rank=1, world_size=2)
    >>> shard.take(5).tolist()
    [1, 3]
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from abyssal.core.errors import ConfigError


@dataclass(frozen=True)
class Shard:
    """One process's part of the data: rank ``rank`` of ``world_size`` processes.

    Args:
        rank: this process's index, ``0 <= rank < world_size``.
        world_size: the number of processes sharing the data.
        offset: items at the front of the epoch's order already trained on (by any number of
            processes) and skipped before dealing: set by the trainer when a run resumes
            mid-epoch on another number of processes, 0 otherwise.

    Example:
        >>> Shard().take(3).tolist()
        [0, 1, 2]
        >>> Shard(0, 2, offset=4).take(8).tolist()
        [4, 6]
    """

    rank: int = 0
    world_size: int = 1
    offset: int = 0

    def __post_init__(self) -> None:
        if self.world_size < 1 or not 0 <= self.rank < self.world_size:
            raise ConfigError(f"bad shard: rank {self.rank} of world size {self.world_size}")
        if self.offset < 0:
            raise ConfigError(f"bad shard: offset {self.offset} < 0")

    def take(self, n: int, *, seed: int | None = None) -> np.ndarray:
        """This rank's indices of ``range(n)``.

        The indices (shuffled by ``seed``, or in order when ``seed`` is ``None``), past the first
        ``offset``, are dealt round robin, so the ranks' parts are disjoint, together cover the
        rest, and differ in size by at most one. The same ``(n, seed)`` gives the same parts on
        every process. Dealt this way, the first ``k`` items of every rank together are the first
        ``k * world_size`` items of the order, whatever the number of ranks.

        Args:
            n: how many items there are.
            seed: the permutation's seed (e.g. derived from the epoch); ``None``: no shuffle.

        Returns:
            The indices, int64.

        Example:
            >>> sorted(Shard(0, 2).take(6, seed=3).tolist() + Shard(1, 2).take(6, seed=3).tolist())
            [0, 1, 2, 3, 4, 5]
        """
        if seed is None:
            order = np.arange(n, dtype=np.int64)
        else:
            order = np.random.default_rng(seed).permutation(n).astype(np.int64)
        return order[self.offset + self.rank :: self.world_size]

    def split(self, items: np.ndarray, *, seed: int | None = None) -> np.ndarray:
        """This rank's part of ``items`` (an array of indices or rows), as :meth:`take` deals."""
        return np.asarray(items)[self.take(len(items), seed=seed)]


def cut_batches(rows: np.ndarray, total: int, shard: Shard, batch_size: int) -> list[np.ndarray]:
    """This shard's ``rows`` (its part of ``total`` items) in as many batches as every other
    shard cuts its part into, so that processes in lockstep train the same number of batches.

    Example:
        >>> [len(b) for b in cut_batches(Shard(1, 2).take(5), 5, Shard(1, 2), 2)]
        [1, 1]
    """
    largest = math.ceil(max(0, total - shard.offset) / shard.world_size)
    return np.array_split(rows, max(1, math.ceil(largest / batch_size)))


class LazyBatches:
    """Batches made one at a time as they are iterated (``make(i, rows)`` for part ``i``), with
    a length."""

    def __init__(self, make: Callable[[int, np.ndarray], Any], parts: list[np.ndarray]) -> None:
        self.make, self.parts = make, parts

    def __len__(self) -> int:
        return len(self.parts)

    def __iter__(self) -> Iterator[Any]:
        return (self.make(i, rows) for i, rows in enumerate(self.parts))


@runtime_checkable
class TrainTask(Protocol):
    """A trainable problem, independent of where and how it is trained.

    Batches of one epoch must depend only on the epoch number, the shard and the task's own seed,
    so that a resumed run (even one resumed mid-epoch) sees the same batches. Tasks hold no device
    state: the trainer moves every batch with :meth:`move_batch`, and models are called through
    ``forward`` only (a DDP or FSDP wrapper hooks gradient synchronisation there).
    """

    def build_model(self) -> Any:
        """A fresh ``torch.nn.Module`` (weights drawn from the current torch RNG)."""

    def train_batches(self, epoch: int, shard: Shard) -> Iterable[Any]:
        """This shard's training batches of epoch ``epoch`` (0-based), on the CPU.

        Under strategies that keep processes in lockstep (``ddp``, ``fsdp``) the batches need a
        length, so that every process trains the same number; a batch that defines ``len()``
        (its number of items) lets a run resume mid-epoch on another number of processes."""

    def move_batch(self, batch: Any, device: Any) -> Any:
        """``batch`` moved to ``device``."""

    def training_loss(self, model: Any, batch: Any) -> Any:
        """A scalar loss tensor for one batch, with gradients."""

    def val_batches(self, shard: Shard) -> Iterable[Any]:
        """This shard's validation batches, on the CPU."""

    def validation_step(self, model: Any, batch: Any) -> Mapping[str, Any]:
        """Outputs for one validation batch: name -> tensor or array, all with the batch's rows
        along the first dimension (e.g. ``{"score": (B,), "label": (B,)}``)."""

    def validation_metrics(self, outputs: Mapping[str, np.ndarray]) -> dict[str, float]:
        """Metrics over the whole validation set, from the concatenated, gathered outputs."""
