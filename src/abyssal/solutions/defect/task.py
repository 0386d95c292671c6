"""The defect solution's training tasks: supervised classification and SimCLR pretraining.

Batches hold uint8 images and the random draws of their augmentation (made on the CPU from
``(train.seed, epoch, batch)``); the device turns them into floats and augments them. Each epoch
the training images (or, with ``loss.sampler=balanced``, a class-balanced draw of them) are
shuffled, dealt to the processes by :meth:`Shard.split` and cut into equally many batches.

Example:
    >>> task = ClassifyTask(cfg, data, spec)  # doctest: +SKIP
    >>> batch = next(iter(task.train_batches(0, Shard())))  # doctest: +SKIP
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
from abyssal.nn.focal import FocalLoss, class_balanced_alpha
from abyssal.nn.metrics import classification_metrics, knn_accuracy, prefixed
from abyssal.solutions.defect.augment import augment, augment_draws
from abyssal.solutions.defect.config import DefectConfig
from abyssal.solutions.defect.data import DefectData


@dataclass
class ImageBatch:
    """Images as the network takes them.

    Attributes:
        images: (B, C, S, S) uint8.
        labels: (B,) int64 (-1 for unlabelled images).
        draws: (B, V, DRAWS) augmentation draws per view (V = 0 without augmentation).
        rows: (B,) int64 the images' indices (-1 - i for unlabelled image i).
    """

    images: torch.Tensor
    labels: torch.Tensor
    draws: torch.Tensor
    rows: torch.Tensor

    def to(self, device: torch.device | str) -> ImageBatch:
        return ImageBatch(*(t.to(device, non_blocking=True) for t in vars(self).values()))

    def __len__(self) -> int:
        return len(self.rows)

    def pixels(self) -> torch.Tensor:
        """(B, C, S, S) float in [0, 1]."""
        return self.images.float().div_(255.0)

    def view(self, v: int) -> torch.Tensor:
        """The pixels under augmentation view ``v`` (unaugmented without draws)."""
        x = self.pixels()
        return x if self.draws.shape[1] == 0 else augment(x, self.draws[:, v])


class _ImageTask:
    """What both tasks share: the data, batches, validation batches, moving."""

    views = 1

    def __init__(self, cfg: DefectConfig, data: DefectData, spec: Mapping[str, Any]) -> None:
        self.cfg, self.data, self.spec = cfg, data, spec
        self.pretrained: Mapping[str, torch.Tensor] | None = None  # starting backbone weights

    def build_model(self) -> torch.nn.Module:
        """The network, its backbone from ``self.pretrained`` when set, its head fresh."""
        from abyssal.solutions.defect.model import load_backbone_weights
        from abyssal.solutions.defect.solution import build_defect_model

        model = build_defect_model(self.cfg, dict(self.spec))
        if self.pretrained is not None:
            load_backbone_weights(model, self.pretrained, source=self.cfg.model.pretrained)
        return model

    def _pool(self) -> np.ndarray:
        """Indices of the images one epoch draws from (>= 0 labelled, < 0 unlabelled)."""
        return self.data.rows("train")

    def _epoch_order(self, epoch: int) -> np.ndarray:
        return self._pool()

    def train_batches(self, epoch: int, shard: Shard) -> LazyBatches:
        order = self._epoch_order(epoch)
        mine = shard.split(order, seed=derive_seed(self.cfg.train.seed, epoch))
        parts = cut_batches(mine, len(order), shard, self.cfg.data.batch_size)
        seed = derive_seed(self.cfg.train.seed, epoch, shard.rank, shard.offset, 7)

        def make(i: int, rows: np.ndarray) -> ImageBatch:
            views = self.views if self.cfg.data.augment else 0
            g = torch.Generator().manual_seed(derive_seed(seed, i))
            draws = augment_draws(len(rows) * views, g).reshape(len(rows), views, -1)
            return self._batch(rows, draws)

        return LazyBatches(make, parts)

    def val_batches(self, shard: Shard) -> LazyBatches:
        val = self.data.rows("val")
        parts = cut_batches(shard.split(val), len(val), shard, self.cfg.data.eval_batch_size)
        return LazyBatches(lambda i, rows: self._batch(rows, None), parts)

    def _batch(self, rows: np.ndarray, draws: torch.Tensor | None) -> ImageBatch:
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) == 0 or rows.min() >= 0:  # labelled images only: one gather
            images = self.data.images[rows]
        else:
            images = np.stack([self._image(r) for r in rows])
        labels = np.where(rows >= 0, self.data.labels[np.maximum(rows, 0)], -1)
        if draws is None:
            draws = torch.zeros(len(rows), 0, 0)
        return ImageBatch(
            torch.from_numpy(images), torch.from_numpy(labels), draws, torch.from_numpy(rows)
        )

    def _image(self, row: int) -> np.ndarray:
        return self.data.images[row] if row >= 0 else self.data.unlabelled[-1 - row]

    def move_batch(self, batch: ImageBatch, device: torch.device | str) -> ImageBatch:
        return batch.to(device)


class ClassifyTask(_ImageTask):
    """Supervised training: cross-entropy or focal loss, shuffled or class-balanced batches."""

    def __init__(self, cfg: DefectConfig, data: DefectData, spec: Mapping[str, Any]) -> None:
        super().__init__(cfg, data, spec)
        self.loss = make_loss(cfg, data.counts("train"))

    def _epoch_order(self, epoch: int) -> np.ndarray:
        train = self.data.rows("train")
        if self.cfg.loss.sampler != "balanced":
            return train
        return balanced_draw(
            self.data.labels[train], train, derive_seed(self.cfg.train.seed, epoch)
        )

    def training_loss(self, model: torch.nn.Module, batch: ImageBatch) -> torch.Tensor:
        self.loss.to(batch.labels.device)  # its class weights, once
        return self.loss(model(batch.view(0)).float(), batch.labels)

    def validation_step(self, model: torch.nn.Module, batch: ImageBatch) -> dict[str, Any]:
        logits = model(batch.pixels()).float()
        return {"probability": torch.softmax(logits, dim=1), "label": batch.labels}

    def validation_metrics(self, outputs: Mapping[str, np.ndarray]) -> dict[str, float]:
        metrics = classification_metrics(
            outputs["label"], outputs["probability"], self.data.classes
        )
        return prefixed(metrics, "val_")


class SimCLRTask(_ImageTask):
    """SimCLR (Chen et al. 2020, arXiv:2002.05709): two augmented views of each image, the
    NT-Xent loss over the batch's 2B projections. Labels are never used in training; the
    validation metric is the leave-one-out nearest-neighbour accuracy of the embeddings."""

    views = 2

    def _pool(self) -> np.ndarray:
        extra = -1 - np.arange(len(self.data.unlabelled), dtype=np.int64)
        return np.concatenate([self.data.rows("train"), extra])

    def training_loss(self, model: torch.nn.Module, batch: ImageBatch) -> torch.Tensor:
        if batch.draws.shape[1] < 2:
            raise ValueError("objective=simclr needs data.augment=true (two views per image)")
        z = model(torch.cat([batch.view(0), batch.view(1)])).float()  # (2B, P)
        return nt_xent(z, self.cfg.loss.temperature)

    def validation_step(self, model: torch.nn.Module, batch: ImageBatch) -> dict[str, Any]:
        net = getattr(model, "module", model)
        return {"embedding": net.embed(batch.pixels()).float(), "label": batch.labels}

    def validation_metrics(self, outputs: Mapping[str, np.ndarray]) -> dict[str, float]:
        return {"val_knn_accuracy": knn_accuracy(outputs["embedding"], outputs["label"])}


def nt_xent(z: torch.Tensor, temperature: float) -> torch.Tensor:
    """The normalised temperature-scaled cross-entropy of SimCLR.

    Row ``i`` and row ``i + B`` are the two views of one image; every other row is a negative.

    Shapes:
        z: (2B, P) projections; returns a scalar.
    """
    n = z.shape[0] // 2
    z = F.normalize(z, dim=1)
    sim = z @ z.T / temperature  # (2B, 2B)
    sim.fill_diagonal_(float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, target)


def make_loss(cfg: DefectConfig, counts: np.ndarray) -> torch.nn.Module:
    """Cross-entropy or focal loss, with ``loss.alpha`` as per-class weights."""
    alpha = _alpha(cfg, counts)
    if cfg.loss.name == "focal":
        return FocalLoss(gamma=cfg.loss.gamma, alpha=alpha)
    return _CrossEntropy(alpha, cfg.loss.label_smoothing)


class _CrossEntropy(torch.nn.Module):
    def __init__(self, weight: torch.Tensor | None, smoothing: float) -> None:
        super().__init__()
        self.register_buffer("weight", weight, persistent=False)
        self.smoothing = smoothing

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        weight = None if self.weight is None else self.weight.to(logits.device)
        return F.cross_entropy(logits, target, weight=weight, label_smoothing=self.smoothing)


def _alpha(cfg: DefectConfig, counts: np.ndarray) -> torch.Tensor | None:
    alpha = cfg.loss.alpha
    if alpha is None:
        return None
    if alpha == "balanced":
        return class_balanced_alpha(counts)
    if len(alpha) != len(counts):
        raise ValueError(f"loss.alpha has {len(alpha)} weights for {len(counts)} classes")
    return torch.tensor(alpha, dtype=torch.float32)


def balanced_draw(labels: np.ndarray, rows: np.ndarray, seed: int) -> np.ndarray:
    """``len(rows)`` rows drawn with replacement, every class equally likely."""
    counts = np.bincount(labels)
    weight = 1.0 / counts[labels]
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(rows, size=len(rows), replace=True, p=weight / weight.sum()))
