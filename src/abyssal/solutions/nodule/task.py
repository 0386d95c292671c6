"""The nodule solution's training tasks: malignancy with attribute heads, and Models Genesis
restoration pretraining.

Batches hold uint8 cubes and the random draws of their augmentation (made on the CPU from
``(train.seed, epoch, batch)``), so a resumed run sees the same batches; the device turns them
into floats, augments them (flips on three axes and in-plane transposition: the 16 symmetries
that keep the slice axis; with ``data.rotate`` and ``data.shift_mm`` also a turn by any angle
about the slice axis and an in-plane shift) and, for Models Genesis, corrupts them.

Loss of the classifier: binary cross-entropy of the malignancy logit over the labelled nodules
(malignant ones weighted by ``loss.positive_weight``), plus ``loss.attribute_weight`` times the
mean squared error of the standardised attributes over the attributes each nodule has (ratings
as they are, diameter on a log scale; standardised with the training split's mean and spread);
with ``model.segment``, plus ``loss.segment_weight`` times the mask loss (voxel-wise binary
cross-entropy against the readers' agreement, plus soft Dice) over the nodules that have a mask.

Example:
    >>> task = ClassifyTask(cfg, data, spec)  # doctest: +SKIP
    >>> batch = next(iter(task.train_batches(0, Shard())))  # doctest: +SKIP
    >>> loss = task.training_loss(model, batch)  # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from abyssal.contracts.task import LazyBatches, Shard, cut_batches
from abyssal.core.devices import derive_seed
from abyssal.solutions.nodule.config import NoduleConfig, NoduleDataConfig
from abyssal.solutions.nodule.data import NoduleData

AUGMENT_DRAWS = 4
"""Per cube: flip z, flip y, flip x, transpose y and x (each 0 or 1)."""


@dataclass
class CubeBatch:
    """Cubes as the network takes them.

    Attributes:
        cubes: (B, S, S, S) uint8.
        labels: (B,) int64 (-1: unlabelled).
        attributes: (B, A) float32, NaN where missing.
        draws: (B, 4) augmentation draws (0 columns without augmentation).
        seed: the batch's seed (Models Genesis corruptions).
        plans: the Models Genesis corruptions drawn from ``seed`` (GenesisTask), made with the
            batch on the CPU, so that ``train.prefetch_batches`` overlaps their drawing with
            the model's work.
        masks: (B, S, S, S) uint8 nodule masks (agreement times 255) or ``None``.
        has_mask: (B,) bool, which cubes have a mask, or ``None``.
        shares: (B,) float32 readers' share of malignant calls (NaN where unknown), or
            ``None`` (hard labels).
    """

    cubes: torch.Tensor
    labels: torch.Tensor
    attributes: torch.Tensor
    draws: torch.Tensor
    seed: int = 0
    plans: list[Any] | None = None
    masks: torch.Tensor | None = None
    has_mask: torch.Tensor | None = None
    shares: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> CubeBatch:
        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device, non_blocking=True)

        moved = [move(t) for t in (self.cubes, self.labels, self.attributes, self.draws)]
        return CubeBatch(
            *moved,
            seed=self.seed,
            plans=self.plans,
            masks=move(self.masks),
            has_mask=move(self.has_mask),
            shares=move(self.shares),
        )

    def __len__(self) -> int:
        return len(self.labels)

    def voxels(self) -> torch.Tensor:
        """(B, 1, S, S, S) float in [0, 1], augmented when the batch has draws."""
        x = self.cubes.unsqueeze(1).float().div_(255.0)
        return x if self.draws.shape[1] == 0 else augment(x, self.draws)

    def voxels_and_masks(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The cubes as :meth:`voxels` and their masks (B, 1, S, S, S) in [0, 1], augmented
        alike; ``None`` without masks."""
        if self.masks is None:
            return self.voxels(), None
        both = torch.stack([self.cubes, self.masks], dim=1).float().div_(255.0)
        if self.draws.shape[1]:
            both = augment(both, self.draws)
        return both[:, :1], both[:, 1:]


def augment(x: torch.Tensor, draws: torch.Tensor) -> torch.Tensor:
    """Flip each cube along z, y, x and transpose y/x where its draws say so, then, with more
    than :data:`AUGMENT_DRAWS` columns, turn it about the slice axis and shift it in-plane (all
    channels alike).

    Shapes:
        x: (B, C, D, H, W) with H == W; draws: (B, 4) 0/1, or (B, 7) with the angle in radians
        and the y and x shifts in normalised coordinates (a cube spans -1 to 1); output like x.
    """
    out = x
    for column, dim in ((0, 2), (1, 3), (2, 4)):
        pick = draws[:, column].bool().view(-1, 1, 1, 1, 1)
        out = torch.where(pick, out.flip(dim), out)
    pick = draws[:, 3].bool().view(-1, 1, 1, 1, 1)
    out = torch.where(pick, out.transpose(3, 4), out)
    if draws.shape[1] <= AUGMENT_DRAWS:
        return out
    return turn_and_shift(out, draws[:, AUGMENT_DRAWS].float(), draws[:, 5:7].float())


def turn_and_shift(x: torch.Tensor, angle: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Each cube of ``x`` (B, C, D, H, W, H == W) turned by ``angle`` (B,) radians about the
    slice axis and shifted by ``shift`` (B, 2) (y, x in normalised coordinates), resampled
    trilinearly; what comes from outside the cube takes the nearest edge value."""
    b = x.shape[0]
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.zeros(b, 3, 4, device=x.device, dtype=torch.float32)
    # grid coordinates are (x, y, z): the turn is in the (x, y) plane, z is kept
    theta[:, 0, 0], theta[:, 0, 1], theta[:, 0, 3] = cos, -sin, shift[:, 1]
    theta[:, 1, 0], theta[:, 1, 1], theta[:, 1, 3] = sin, cos, shift[:, 0]
    theta[:, 2, 2] = 1.0
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(
        x.float(), grid.to(x.device), mode="bilinear", padding_mode="border", align_corners=False
    )
    return out.to(x.dtype)


def augment_draws(n: int, cfg: NoduleDataConfig, generator: torch.Generator) -> torch.Tensor:
    """(n, 4) flip draws, or (n, 7) with an angle and in-plane shifts when ``data.rotate`` or
    ``data.shift_mm``; (n, 0) without ``data.augment``."""
    if not cfg.augment:
        return torch.zeros(n, 0)
    flips = torch.randint(0, 2, (n, AUGMENT_DRAWS), generator=generator).float()
    if not cfg.rotate and cfg.shift_mm == 0:
        return flips
    angle = torch.rand(n, 1, generator=generator) * (2 * math.pi if cfg.rotate else 0.0)
    reach = cfg.shift_mm / (cfg.cube * cfg.voxel_mm / 2)  # mm to normalised coordinates
    shift = (torch.rand(n, 2, generator=generator) * 2 - 1) * reach
    return torch.cat([flips, angle, shift], dim=1)


class _CubeTask:
    """What both tasks share: data, batching, moving."""

    def __init__(self, cfg: NoduleConfig, data: NoduleData, spec: Mapping[str, Any]) -> None:
        self.cfg, self.data, self.spec = cfg, data, spec
        # the model's attributes (the table may have more: model.rating_head=false)
        self.attribute_names = [n for n in spec.get("attributes", []) if n in data.attribute_names]
        self.pretrained: Mapping[str, torch.Tensor] | None = None

    def build_model(self) -> torch.nn.Module:
        from abyssal.solutions.nodule.model import build_nodule_model, load_encoder

        model = build_nodule_model(self.cfg.model, dict(self.spec))
        if self.pretrained is not None:
            load_encoder(model, self.pretrained, self.cfg.model.pretrained)
        return model

    def _pool(self) -> np.ndarray:
        return self.data.rows("train")

    def _val_rows(self) -> np.ndarray:
        return self.data.rows("val")

    def train_batches(self, epoch: int, shard: Shard) -> LazyBatches:
        order = self._pool()
        mine = shard.split(order, seed=derive_seed(self.cfg.train.seed, epoch))
        parts = cut_batches(mine, len(order), shard, self.cfg.data.batch_size)
        seed = derive_seed(self.cfg.train.seed, epoch, shard.rank, shard.offset, 11)

        def make(i: int, rows: np.ndarray) -> CubeBatch:
            g = torch.Generator().manual_seed(derive_seed(seed, i))
            draws = augment_draws(len(rows), self.cfg.data, g)
            return self.batch_of(rows, draws, derive_seed(seed, i, 1))

        return LazyBatches(make, parts)

    def val_batches(self, shard: Shard) -> LazyBatches:
        rows = self._val_rows()
        parts = cut_batches(shard.split(rows), len(rows), shard, self.cfg.data.eval_batch_size)
        return LazyBatches(
            lambda i, r: self.batch_of(r, torch.zeros(len(r), 0), derive_seed(9, i)), parts
        )

    def batch_of(self, rows: np.ndarray, draws: torch.Tensor, seed: int) -> CubeBatch:
        """The cubes of ``rows`` as a batch (``draws``: augmentation, (B, 0) for none)."""
        rows = np.asarray(rows, dtype=np.int64)
        d = self.data
        with_masks = d.masks is not None and self.cfg.model.segment
        soft = self.cfg.loss.reader_scores and d.shares is not None
        return CubeBatch(
            torch.from_numpy(d.cubes[rows]),
            torch.from_numpy(d.labels[rows]),
            torch.from_numpy(d.attribute_values(rows, self.attribute_names)),
            draws,
            seed,
            masks=torch.from_numpy(d.masks[rows]) if with_masks else None,
            has_mask=torch.from_numpy(d.has_mask[rows]) if with_masks else None,
            shares=torch.from_numpy(d.shares[rows]) if soft else None,
        )

    def move_batch(self, batch: CubeBatch, device: torch.device | str) -> CubeBatch:
        return batch.to(device)


class ClassifyTask(_CubeTask):
    """Malignancy (binary cross-entropy) and attribute (standardised MSE) losses."""

    def __init__(self, cfg: NoduleConfig, data: NoduleData, spec: Mapping[str, Any]) -> None:
        super().__init__(cfg, data, spec)
        weight = cfg.loss.positive_weight
        if weight == "balanced":
            benign, malignant = data.counts("train")
            weight = benign / max(1, malignant)
        self.positive_weight = float(weight)
        self.uses_attributes = bool(spec.get("attributes")) and cfg.model.knowledge
        self.uses_masks = cfg.model.segment and bool(data.has_mask.any())

    def _pool(self) -> np.ndarray:
        unlabelled_help = self.uses_attributes or self.uses_masks
        if self.cfg.loss.reader_scores or (unlabelled_help and self.cfg.loss.unlabelled_attributes):
            return self.data.rows("train")
        return self.data.rows("train", labelled=True)

    def _val_rows(self) -> np.ndarray:
        return self.data.rows("val", labelled=True)

    def training_loss(self, model: torch.nn.Module, batch: CubeBatch) -> torch.Tensor:
        loss = self.cfg.loss
        if not self.uses_masks:
            out = model(batch.voxels()).float()
            return nodule_loss(model, out, batch, self.positive_weight, loss.attribute_weight)
        x, masks = batch.voxels_and_masks()
        out, logits = model(x, with_mask=True)
        total = nodule_loss(model, out.float(), batch, self.positive_weight, loss.attribute_weight)
        if masks is None or batch.has_mask is None or loss.segment_weight == 0:
            return total
        return total + loss.segment_weight * mask_loss(logits.float(), masks, batch.has_mask)

    def validation_step(self, model: torch.nn.Module, batch: CubeBatch) -> dict[str, Any]:
        net = getattr(model, "module", model)
        with net.single_view():  # early stopping on one view; test-time views at the end
            out = model(batch.voxels()).float()
        logit = out[:, 0]
        return {"probability": torch.sigmoid(logit), "logit": logit, "label": batch.labels}

    def validation_metrics(self, outputs: Mapping[str, np.ndarray]) -> dict[str, float]:
        from abyssal.solutions.nodule.evaluation import auroc

        # ranked by logit: float32 probabilities of confident nodules tie at exactly 1
        return {"val_auroc": auroc(outputs["label"], outputs["logit"])}


def nodule_loss(
    model: torch.nn.Module,
    out: torch.Tensor,
    batch: CubeBatch,
    positive_weight: float,
    attribute_weight: float,
) -> torch.Tensor:
    """Weighted BCE over the labelled rows plus the attribute MSE over the known attributes.
    With ``batch.shares`` (``loss.reader_scores``) the BCE's target is the readers' share of
    malignant calls wherever it is known (rated-3 nodules too), the label elsewhere; the
    malignant part weighs ``positive_weight``.

    Shapes:
        out: (B, 1 + A) the model's output; returns a scalar.
    """
    labelled = batch.labels >= 0
    logit = out[:, 0]
    if batch.shares is None:
        weight = torch.where(batch.labels == 1, positive_weight, 1.0)
        bce = F.binary_cross_entropy_with_logits(
            logit, batch.labels.clamp_min(0).float(), weight=weight, reduction="none"
        )
    else:
        known = ~torch.isnan(batch.shares)
        target = torch.where(known, batch.shares, batch.labels.clamp_min(0).float())
        labelled = labelled | known
        bce = F.binary_cross_entropy_with_logits(
            logit, target, pos_weight=logit.new_tensor(positive_weight), reduction="none"
        )
    loss = (bce * labelled).sum() / labelled.sum().clamp_min(1)
    if out.shape[1] > 1 and attribute_weight > 0:
        scale = getattr(model, "module", model).scale
        target = batch.attributes
        known = ~torch.isnan(target)
        error = scale.standardise(out[:, 1:]) - scale.standardise(torch.nan_to_num(target, 1.0))
        mse = (error.square() * known).sum() / known.sum().clamp_min(1)
        loss = loss + attribute_weight * mse
    return loss


def mask_loss(logits: torch.Tensor, target: torch.Tensor, has_mask: torch.Tensor) -> torch.Tensor:
    """Voxel-wise binary cross-entropy against a soft target plus soft Dice (1 - 2|P T| / (|P| +
    |T|)), each averaged over the cubes that have a mask; 0 when none has. The target is
    averaged down to the logits' size (agreement per coarser voxel).

    Shapes:
        logits: (B, 1, s, s, s); target: (B, 1, S, S, S) with S a multiple of s; has_mask:
        (B,) bool; returns a scalar.
    """
    if not bool(has_mask.any()):
        return logits.sum() * 0.0  # keeps the head in the graph (DDP)
    logits, target = logits[has_mask], target[has_mask]
    if target.shape[2:] != logits.shape[2:]:
        target = F.adaptive_avg_pool3d(target, logits.shape[2:])
    bce = F.binary_cross_entropy_with_logits(logits, target)
    p = torch.sigmoid(logits).flatten(1)
    t = target.flatten(1)
    dice = 1 - (2 * (p * t).sum(1) + 1.0) / (p.sum(1) + t.sum(1) + 1.0)
    return bce + dice.mean()


class GenesisTask(_CubeTask):
    """Models Genesis (Zhou et al., MICCAI 2019; MedIA 2021, arXiv:2004.07882): restore cubes
    from non-linear intensity, local-shuffle and in/out-painting corruptions (mean squared
    error). Labels are never used: every nodule of the training split, labelled or not."""

    def batch_of(self, rows: np.ndarray, draws: torch.Tensor, seed: int) -> CubeBatch:
        """The cubes of ``rows`` with their corruptions drawn (on the CPU, from ``seed``)."""
        batch = super().batch_of(rows, draws, seed)
        batch.plans = self._plans(len(batch), seed)
        return batch

    def _plans(self, n: int, seed: int) -> list[Any]:
        from abyssal.solutions.nodule.genesis import GenesisOptions, plan_corruptions

        g = self.cfg.genesis
        options = GenesisOptions(
            nonlinear_rate=g.nonlinear, local_rate=g.local_shuffle, paint_rate=g.painting
        )
        s = self.data.cube
        return plan_corruptions((n, 1, s, s, s), seed, options)

    def _corrupted(self, batch: CubeBatch) -> tuple[torch.Tensor, torch.Tensor]:
        from abyssal.solutions.nodule.genesis import apply_corruptions

        clean = batch.voxels()
        plans = batch.plans if batch.plans is not None else self._plans(len(batch), batch.seed)
        return apply_corruptions(clean, plans), clean

    def training_loss(self, model: torch.nn.Module, batch: CubeBatch) -> torch.Tensor:
        noisy, clean = self._corrupted(batch)
        return F.mse_loss(model(noisy).float(), clean)

    def validation_step(self, model: torch.nn.Module, batch: CubeBatch) -> dict[str, Any]:
        noisy, clean = self._corrupted(batch)
        error = (model(noisy).float() - clean).square().flatten(1).mean(dim=1)
        return {"error": error}

    def validation_metrics(self, outputs: Mapping[str, np.ndarray]) -> dict[str, float]:
        return {"val_loss": float(np.mean(outputs["error"]))}
