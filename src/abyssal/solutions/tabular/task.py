"""The tabular solution's training task: mini-batches of rows, cross-entropy or squared error.

Every epoch the training rows are shuffled by a seed derived from ``(train.seed, epoch)`` and dealt
to the processes by :meth:`Shard.split`; each process cuts its part into the same number of
batches (so that no process waits for a batch another never sends). Validation returns the
network's outputs per batch; metrics are computed once, on the gathered outputs of every process.

Example:
    >>> task = TabularTask(cfg, data, spec)  # doctest: +SKIP
    >>> batch = next(iter(task.train_batches(0, Shard(0, 2))))  # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from abyssal.contracts.task import Shard
from abyssal.core.devices import derive_seed
from abyssal.solutions.tabular.config import TabularConfig
from abyssal.solutions.tabular.data import TabularData
from abyssal.solutions.tabular.metrics import (
    classification_metrics,
    prefixed,
    regression_metrics,
    test_interval,
)
from abyssal.solutions.tabular.model import TabularMLP
from abyssal.solutions.tabular.preprocessing import TablePreprocessor, TargetEncoding
from abyssal.solutions.tabular.schema import TableSchema


@dataclass
class TabularBatch:
    """Rows of the table as the network takes them.

    Attributes:
        numeric: (B, W) float32 standardised numbers and missing indicators.
        categorical: (B, Fc) int64 category codes.
        target: (B,) int64 class indices, or float32 standardised regression target.
        rows: (B,) int64 the rows' positions in the table.
    """

    numeric: torch.Tensor
    categorical: torch.Tensor
    target: torch.Tensor
    rows: torch.Tensor

    def to(self, device: torch.device | str) -> TabularBatch:
        """The batch on ``device``."""
        return TabularBatch(*(t.to(device) for t in vars(self).values()))

    def __len__(self) -> int:
        """The number of rows (what a trainer counts to resume mid-epoch)."""
        return len(self.rows)


def build_model(cfg: TabularConfig, spec: Mapping[str, Any]) -> TabularMLP:
    """The network for ``cfg`` and a model spec (its ``preprocessing`` gives the input sizes).

    The network keeps the spec as ``input_spec`` (plain data, not part of its weights), so that
    evaluating it on another table encodes that table with the network's own encoders.
    """
    pre = TablePreprocessor.from_dict(spec["preprocessing"])
    m = cfg.model
    model = TabularMLP(
        pre.numeric_width,
        pre.cardinalities,
        pre.target.outputs,
        hidden=m.hidden,
        layers=m.layers,
        dropout=m.dropout,
        embedding_dim=m.embedding_dim,
    )
    model.input_spec = dict(spec)
    return model


def make_batch(data: TabularData, rows: np.ndarray) -> TabularBatch:
    """The batch of the table's ``rows`` (on the CPU)."""
    numeric, categorical, target = data.arrays(rows)
    return TabularBatch(
        torch.from_numpy(numeric),
        torch.from_numpy(categorical),
        torch.from_numpy(target),
        torch.from_numpy(np.asarray(rows, dtype=np.int64)),
    )


class RowBatches:
    """Batches of a table's rows, made one at a time as they are iterated; has a length.

    Args:
        data: the prepared table.
        parts: the rows of each batch.
    """

    def __init__(self, data: TabularData, parts: list[np.ndarray]) -> None:
        self.data = data
        self.parts = parts

    def __len__(self) -> int:
        return len(self.parts)

    def __iter__(self) -> Iterator[TabularBatch]:
        return (make_batch(self.data, rows) for rows in self.parts)


def balanced_batches(
    rows: np.ndarray, total: int, shard: Shard, batch_size: int
) -> list[np.ndarray]:
    """Cut one process's ``rows`` into as many batches as every other process cuts its part.

    Args:
        rows: this process's rows (from :meth:`Shard.split` of ``total`` rows).
        total: rows over all processes.
        shard: this process and the number of processes.
        batch_size: the largest batch.

    Example:
        >>> [len(b) for b in balanced_batches(np.arange(5), 11, Shard(1, 2), 4)]
        [3, 2]
    """
    # the biggest part any process holds (past the items a resumed epoch already trained on)
    largest = math.ceil(max(0, total - shard.offset) / shard.world_size)
    count = max(1, math.ceil(largest / batch_size))
    return np.array_split(rows, count)


def network_outputs(
    model: torch.nn.Module, batch: TabularBatch, target: TargetEncoding
) -> dict[str, torch.Tensor]:
    """The network's outputs on ``batch``, in the form its metrics take.

    Returns:
        classification: ``probability`` (B, C) and ``label`` (B,); regression: ``prediction``
        and ``target`` (B,), both in the target's own units.
    """
    out = model(batch.numeric, batch.categorical).float()  # (B, C) or (B, 1)
    if target.task == "classification":
        return {"probability": torch.softmax(out, dim=1), "label": batch.target}
    return {
        "prediction": out[:, 0] * target.std + target.mean,
        "target": batch.target.float() * target.std + target.mean,
    }


def outputs_metrics(outputs: Mapping[str, Any], target: TargetEncoding) -> dict[str, float]:
    """Metrics (unprefixed) of concatenated :func:`network_outputs`."""
    arrays = {k: _numpy(v) for k, v in outputs.items()}
    if target.task == "classification":
        return classification_metrics(arrays["label"], arrays["probability"])
    return regression_metrics(arrays["target"], arrays["prediction"])


def _interval(outputs: Mapping[str, Any], task: str) -> dict[str, float]:
    arrays = {k: _numpy(v) for k, v in outputs.items()}
    if task == "classification":
        return test_interval(arrays["label"], arrays["probability"], task)
    return test_interval(arrays["target"], arrays["prediction"], task)


@torch.no_grad()
def evaluate_network(
    model: torch.nn.Module, data: TabularData, batch_size: int
) -> dict[str, float]:
    """``val_*`` and ``test_*`` metrics of ``model`` (on any device) and ``train_rows``.

    If the model carries the spec it was built for (``input_spec``) and ``data`` was encoded
    differently (another table, another split), ``data`` is first re-encoded with the model's
    own schema and encoders.
    """
    spec = getattr(model, "input_spec", None)
    if spec is not None and spec != table_spec(data):
        data = data.encoded_for(
            TableSchema.from_dict(spec["schema"]),
            TablePreprocessor.from_dict(spec["preprocessing"]),
        )
    was_training = model.training
    model.eval()
    metrics: dict[str, float] = {"train_rows": len(data.rows("train"))}
    for split in ("val", "test"):
        outputs = split_outputs(model, data, data.rows(split), batch_size)
        metrics.update(prefixed(outputs_metrics(outputs, data.preprocessor.target), f"{split}_"))
    metrics.update(prefixed(_interval(outputs, data.schema.task), "test_"))
    model.train(was_training)
    return metrics


def split_outputs(
    model: torch.nn.Module, data: TabularData, rows: np.ndarray, batch_size: int
) -> dict[str, torch.Tensor]:
    """:func:`network_outputs` of ``rows``, batch by batch on the model's device, joined."""
    device = next(model.parameters()).device
    parts = np.array_split(rows, max(1, math.ceil(len(rows) / batch_size)))
    outputs = [
        network_outputs(model, make_batch(data, part).to(device), data.preprocessor.target)
        for part in parts
    ]
    return {k: torch.cat([o[k] for o in outputs]) for k in outputs[0]}


def table_spec(data: TabularData) -> dict[str, Any]:
    """The model spec of a prepared table: its schema and fitted encoders (JSON)."""
    return {"schema": data.schema.to_dict(), "preprocessing": data.preprocessor.to_dict()}


class TabularTask:
    """Implements :class:`~abyssal.contracts.task.TrainTask` for a table.

    Args:
        cfg: the solution config.
        data: the prepared table.
        spec: the model spec (:meth:`TabularSolution.model_spec`).
    """

    def __init__(self, cfg: TabularConfig, data: TabularData, spec: Mapping[str, Any]) -> None:
        self.cfg = cfg
        self.data = data
        self.spec = spec
        self.target = data.preprocessor.target
        self.class_weight = _class_weight(cfg, data)

    def build_model(self) -> TabularMLP:
        return build_model(self.cfg, self.spec)

    def train_batches(self, epoch: int, shard: Shard) -> RowBatches:
        train = self.data.rows("train")
        mine = shard.split(train, seed=derive_seed(self.cfg.train.seed, epoch))
        parts = balanced_batches(mine, len(train), shard, self.cfg.data.batch_size)
        return RowBatches(self.data, parts)

    def move_batch(self, batch: TabularBatch, device: torch.device | str) -> TabularBatch:
        return batch.to(device)

    def training_loss(self, model: torch.nn.Module, batch: TabularBatch) -> torch.Tensor:
        out = model(batch.numeric, batch.categorical).float()  # (B, C) or (B, 1)
        if self.target.task == "regression":
            return F.mse_loss(out[:, 0], batch.target)
        weight = None if self.class_weight is None else self.class_weight.to(out.device)
        return F.cross_entropy(out, batch.target, weight=weight)

    def val_batches(self, shard: Shard) -> RowBatches:
        val = self.data.rows("val")
        parts = balanced_batches(shard.split(val), len(val), shard, self.cfg.data.batch_size)
        return RowBatches(self.data, parts)

    def validation_step(self, model: torch.nn.Module, batch: TabularBatch) -> dict[str, Any]:
        return network_outputs(model, batch, self.target)

    def validation_metrics(self, outputs: Mapping[str, np.ndarray]) -> dict[str, float]:
        return prefixed(outputs_metrics(outputs, self.target), "val_")


def _class_weight(cfg: TabularConfig, data: TabularData) -> torch.Tensor | None:
    """``n / (C * count_c)`` over the training rows, for ``model.class_weight=balanced``."""
    if data.schema.task != "classification" or cfg.model.class_weight == "none":
        return None
    classes = len(data.preprocessor.target.classes)
    counts = np.bincount(data.target[data.rows("train")], minlength=classes).astype(np.float64)
    return torch.tensor(counts.sum() / (classes * np.maximum(counts, 1.0)), dtype=torch.float32)


def _numpy(value: Any) -> np.ndarray:
    if not isinstance(value, torch.Tensor):
        return np.asarray(value)
    value = value.detach().cpu()
    return (value.float() if value.is_floating_point() else value).numpy()
