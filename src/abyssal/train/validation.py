"""Validation across processes: every process scores its shard, the outputs are gathered, and
the task's metrics are computed once on the whole validation set (AUROC, mAP or Dice cannot be
averaged across ranks)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from abyssal.contracts.task import TrainTask
from abyssal.core.errors import AbyssalError
from abyssal.train.strategy import Strategy


def validate_task(
    task: TrainTask,
    model: nn.Module,
    strategy: Strategy,
    device: torch.device,
    dtype: torch.dtype | None = None,
) -> dict[str, float]:
    """Validation metrics over every process's shard: outputs per batch, concatenated, gathered
    across processes, then ``task.validation_metrics`` on the whole set (call on every rank).

    Under a strategy whose forward runs collectives (``lockstep``, e.g. FSDP's parameter
    gathers), processes with fewer batches repeat their first one, discarding the outputs, so
    that every process makes the same number of calls.

    Args:
        task: the task.
        model: the model as the strategy set it up (called through ``forward``).
        strategy: gives this process's shard and gathers the outputs.
        device: where batches go.
        dtype: the autocast dtype, or ``None`` for none.

    Returns:
        The task's metrics, the same on every process.

    Raises:
        AbyssalError: in lockstep, a process has no validation batch while others have some.
    """
    was_training = model.training
    model.eval()
    parts: dict[str, list[np.ndarray]] = {}
    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)
    batches = task.val_batches(strategy.shard)
    extra, first = 0, None
    if getattr(strategy, "lockstep", False) and strategy.world_size > 1:
        batches = list(batches)
        counts = strategy.all_gather(len(batches))  # one collective for both ends
        fewest, most = min(counts), max(counts)
        if fewest == 0 and most > 0:
            raise AbyssalError(
                f"a process has no validation batch while another has {most}: the validation "
                f"set is smaller than the {strategy.world_size} processes that share it"
            )
        extra = most - len(batches)
    try:
        with torch.no_grad(), autocast:
            for batch in batches:
                moved = task.move_batch(batch, device)
                first = moved if first is None else first
                out = task.validation_step(model, moved)
                for key, value in out.items():
                    parts.setdefault(key, []).append(_to_numpy(value))
            for _ in range(extra):  # keep in step with processes that have more batches
                task.validation_step(model, first)
    finally:
        model.train(was_training)
    outputs = strategy.gather({k: np.concatenate(v) for k, v in parts.items()})
    return dict(task.validation_metrics(outputs))


def _to_numpy(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach()
        if value.is_floating_point() and value.dtype != torch.float64:
            value = value.float()  # bf16 / fp16 outputs of autocast
        return value.cpu().numpy()
    return np.asarray(value)
