"""The multimodal classification task: batches of decoded samples, cross-entropy, accuracy.

A batch holds, for its rows, the arrays the network takes (:mod:`.model`), each cut to the
longest text and the longest clip in the batch, and the labels. Training batches are drawn from
``(train.seed, epoch)`` so a resumed run sees the same ones; modality dropout is the network's
own (training mode only).

Example:
    >>> task = ClassifyTask(cfg, data, spec)  # doctest: +SKIP
    >>> batch = next(iter(task.train_batches(0, Shard())))  # doctest: +SKIP
    >>> loss = task.training_loss(model, batch)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from abyssal.contracts.task import LazyBatches, Shard, cut_batches
from abyssal.core.devices import derive_seed
from abyssal.nn.metrics import classification_metrics
from abyssal.solutions.multimodal.config import MultimodalConfig
from abyssal.solutions.multimodal.data import MultimodalData
from abyssal.solutions.multimodal.inputs import DecodedInputs


@dataclass
class MultimodalBatch:
    """Network inputs (``tokens``, ``token_lengths``, ``images``, ``mels``, ``mel_lengths``,
    ``present``: those the data has) and (B,) int64 labels (-1: none)."""

    inputs: dict[str, torch.Tensor]
    labels: torch.Tensor

    def to(self, device: torch.device | str) -> MultimodalBatch:
        moved = {k: v.to(device, non_blocking=True) for k, v in self.inputs.items()}
        return MultimodalBatch(moved, self.labels.to(device, non_blocking=True))

    def __len__(self) -> int:
        return len(self.labels)


def batch_inputs(inputs: DecodedInputs, rows: np.ndarray) -> dict[str, torch.Tensor]:
    """The network inputs of ``rows``, texts and clips cut to the batch's longest.

    Shapes:
        tokens (B, L), token_lengths (B,), images (B, C, S, S) uint8, mels (B, n_mels, F),
        mel_lengths (B,) (or waves (B, S), wave_lengths (B,)), present (B, 3) bool; only the
        arrays ``inputs`` has.
    """
    rows = np.asarray(rows, dtype=np.int64)
    out = {"present": torch.from_numpy(inputs.present[rows])}
    if inputs.tokens is not None and inputs.token_lengths is not None:
        lengths = inputs.token_lengths[rows]
        width = max(1, int(lengths.max()))
        out["tokens"] = torch.from_numpy(inputs.tokens[rows, :width])
        out["token_lengths"] = torch.from_numpy(lengths)
    if inputs.images is not None:
        out["images"] = torch.from_numpy(inputs.images[rows])
    if inputs.mels is not None and inputs.mel_lengths is not None:
        lengths = inputs.mel_lengths[rows]
        frames = max(1, int(lengths.max()))
        out["mels"] = torch.from_numpy(np.ascontiguousarray(inputs.mels[rows, :, :frames]))
        out["mel_lengths"] = torch.from_numpy(lengths)
    if inputs.waves is not None and inputs.wave_lengths is not None:
        lengths = inputs.wave_lengths[rows]
        samples = max(1, int(lengths.max()))
        out["waves"] = torch.from_numpy(np.ascontiguousarray(inputs.waves[rows, :samples]))
        out["wave_lengths"] = torch.from_numpy(lengths)
    return out


class ClassifyTask:
    """Cross-entropy over the labelled training samples; validation accuracy and macro F1."""

    def __init__(self, cfg: MultimodalConfig, data: MultimodalData, spec: Mapping[str, Any]):
        self.cfg, self.data, self.spec = cfg, data, spec

    def build_model(self) -> torch.nn.Module:
        from abyssal.solutions.multimodal.model import build_multimodal_model

        return build_multimodal_model(self.cfg.model, dict(self.spec))

    def _labelled(self, split: str) -> np.ndarray:
        rows = self.data.rows(split)
        return rows[self.data.inputs.labels[rows] >= 0]

    def train_batches(self, epoch: int, shard: Shard) -> LazyBatches:
        order = self._labelled("train")
        mine = shard.split(order, seed=derive_seed(self.cfg.train.seed, epoch))
        parts = cut_batches(mine, len(order), shard, self.cfg.data.batch_size)
        return LazyBatches(lambda i, rows: self.batch_of(rows), parts)

    def val_batches(self, shard: Shard) -> LazyBatches:
        rows = self._labelled("val")
        parts = cut_batches(shard.split(rows), len(rows), shard, self.cfg.data.eval_batch_size)
        return LazyBatches(lambda i, r: self.batch_of(r), parts)

    def batch_of(self, rows: np.ndarray) -> MultimodalBatch:
        labels = torch.from_numpy(self.data.inputs.labels[np.asarray(rows, dtype=np.int64)])
        return MultimodalBatch(batch_inputs(self.data.inputs, rows), labels)

    def move_batch(self, batch: MultimodalBatch, device: torch.device | str) -> MultimodalBatch:
        return batch.to(device)

    def training_loss(self, model: torch.nn.Module, batch: MultimodalBatch) -> torch.Tensor:
        return F.cross_entropy(model(batch.inputs).float(), batch.labels)

    def validation_step(self, model: torch.nn.Module, batch: MultimodalBatch) -> dict[str, Any]:
        logits = model(batch.inputs).float()
        return {"probabilities": torch.softmax(logits, dim=1), "label": batch.labels}

    def validation_metrics(self, outputs: Mapping[str, np.ndarray]) -> dict[str, float]:
        m = classification_metrics(outputs["label"], outputs["probabilities"], self.data.classes)
        return {"val_accuracy": m["accuracy"], "val_macro_f1": m["macro_f1"]}
