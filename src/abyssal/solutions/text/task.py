"""The text solution's training task: cross-entropy over token batches.

Training batches are length-bucketed by default (:mod:`abyssal.data.buckets`): texts of similar
length share a batch whose padded size stays under ``data.max_tokens``, so little compute goes to
padding; ``data.batching=fixed`` cuts the shuffled texts into ``data.batch_size`` instead. Either
way the epoch's batches depend only on ``(train.seed, epoch)``, and processes get equally many.
The task counts the real and padded tokens it trains on, and the time between training steps, so
a run reports its tokens per second and padding efficiency.

Example:
    >>> task = TextTask(cfg, data, spec)  # doctest: +SKIP
    >>> batch = next(iter(task.train_batches(0, Shard())))  # doctest: +SKIP
    >>> batch.input_ids.shape  # doctest: +SKIP
    torch.Size([41, 23])
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from abyssal.contracts.task import Shard
from abyssal.core.devices import derive_seed
from abyssal.data.buckets import length_buckets
from abyssal.nn.metrics import classification_metrics, prefixed
from abyssal.solutions.text.config import TextConfig
from abyssal.solutions.text.data import TextData


@dataclass
class TokenBatch:
    """Padded token ids of a batch of texts.

    Attributes:
        input_ids: (B, T) int64, right-padded.
        attention_mask: (B, T) int64, 1 on real tokens.
        labels: (B,) int64 (-1 when unknown).
        rows: (B,) int64 the texts' indices.
        real_tokens: how many tokens are real (counted on the CPU: no device sync to read it).
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor
    rows: torch.Tensor
    real_tokens: int = 0

    def to(self, device: torch.device | str) -> TokenBatch:
        tensors = (self.input_ids, self.attention_mask, self.labels, self.rows)
        moved = (t.to(device, non_blocking=True) for t in tensors)
        return TokenBatch(*moved, real_tokens=self.real_tokens)

    def __len__(self) -> int:
        return len(self.rows)


def pad_batch(
    ids: Sequence[np.ndarray], pad_id: int, labels: Any = None, rows: Any = None
) -> TokenBatch:
    """A :class:`TokenBatch` of token-id arrays, right-padded with ``pad_id``."""
    width = max(len(x) for x in ids)
    input_ids = np.full((len(ids), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(ids), width), dtype=np.int64)
    for i, x in enumerate(ids):
        input_ids[i, : len(x)] = x
        mask[i, : len(x)] = 1
    labels = np.full(len(ids), -1) if labels is None else np.asarray(labels)
    rows = np.arange(len(ids)) if rows is None else np.asarray(rows)
    return TokenBatch(
        torch.from_numpy(input_ids),
        torch.from_numpy(mask),
        torch.from_numpy(labels.astype(np.int64)),
        torch.from_numpy(rows.astype(np.int64)),
        real_tokens=int(mask.sum()),
    )


def length_sorted_batches(lengths: np.ndarray, rows: np.ndarray, size: int) -> list[np.ndarray]:
    """``rows`` sorted by length and cut into batches of ``size`` (for scoring: little padding,
    any order)."""
    order = rows[np.argsort(lengths[rows], kind="stable")]
    return [order[i : i + size] for i in range(0, len(order), size)]


@dataclass
class TokenClock:
    """Real and padded tokens trained on, and the time spent between training steps (a pause,
    such as an evaluation, is not counted)."""

    real: int = 0
    padded: int = 0
    seconds: float = 0.0
    last: float | None = field(default=None, repr=False)

    def tick(self, real: int, padded: int) -> None:
        now = time.perf_counter()
        if self.last is not None:
            self.seconds += now - self.last
            self.real += real
            self.padded += padded
        self.last = now

    def pause(self) -> None:
        self.last = None

    def metrics(self) -> dict[str, float]:
        """``train_tokens_per_s`` and ``train_padding_efficiency`` (real over padded tokens)."""
        if self.seconds <= 0 or self.padded == 0:
            return {}
        return {
            "train_tokens_per_s": self.real / self.seconds,
            "train_padding_efficiency": self.real / self.padded,
        }


class TokenBatches:
    """Batches padded as they are iterated; has a length."""

    def __init__(self, data: TextData, parts: list[np.ndarray]) -> None:
        self.data, self.parts = data, parts

    def __len__(self) -> int:
        return len(self.parts)

    def __iter__(self) -> Iterator[TokenBatch]:
        tokens = self.data.tokens
        for rows in self.parts:
            ids = [tokens.ids[r] for r in rows]
            yield pad_batch(ids, tokens.pad_id, self.data.labels[rows], rows)


class TextTask:
    """Supervised text classification with cross-entropy."""

    def __init__(self, cfg: TextConfig, data: TextData, spec: Mapping[str, Any]) -> None:
        self.cfg, self.data, self.spec = cfg, data, spec
        self.clock = TokenClock()

    def build_model(self) -> torch.nn.Module:
        from abyssal.solutions.text.solution import build_text_model

        return build_text_model(self.cfg, dict(self.spec))

    def epoch_batches(self, epoch: int) -> list[np.ndarray]:
        """The epoch's batches of training rows, in training order (every process the same)."""
        cfg, train = self.cfg, self.data.rows("train")
        seed = derive_seed(cfg.train.seed, epoch, 11)
        if cfg.data.batching == "buckets":
            lengths = self.data.tokens.lengths[train]
            cut = length_buckets(
                lengths, max_tokens=cfg.data.max_tokens, seed=seed, max_items=cfg.data.batch_size
            )
            return [train[b] for b in cut]
        order = train[np.random.default_rng(seed).permutation(len(train))]
        size = cfg.data.batch_size
        return [order[i : i + size] for i in range(0, len(order), size)]

    def train_batches(self, epoch: int, shard: Shard) -> TokenBatches:
        """This process's share of the epoch's batches: every ``world_size``-th batch, the tail
        that would leave processes unequal dropped."""
        batches = self.epoch_batches(epoch)
        if shard.world_size > 1:
            usable = len(batches) - len(batches) % shard.world_size
            batches = batches[:usable][shard.rank :: shard.world_size]
        return TokenBatches(self.data, batches)

    def val_batches(self, shard: Shard) -> TokenBatches:
        rows = shard.split(self.data.rows("val"))
        size = self.cfg.data.eval_batch_size
        return TokenBatches(self.data, length_sorted_batches(self.data.tokens.lengths, rows, size))

    def move_batch(self, batch: TokenBatch, device: torch.device | str) -> TokenBatch:
        return batch.to(device)

    def training_loss(self, model: torch.nn.Module, batch: TokenBatch) -> torch.Tensor:
        mask = batch.attention_mask
        self.clock.tick(batch.real_tokens, mask.numel())
        logits = model(batch.input_ids, mask).float()
        return F.cross_entropy(logits, batch.labels)

    def validation_step(self, model: torch.nn.Module, batch: TokenBatch) -> dict[str, Any]:
        self.clock.pause()
        logits = model(batch.input_ids, batch.attention_mask).float()
        return {"probability": torch.softmax(logits, dim=1), "label": batch.labels}

    def validation_metrics(self, outputs: Mapping[str, np.ndarray]) -> dict[str, float]:
        metrics = classification_metrics(
            outputs["label"], outputs["probability"], self.data.classes, count="texts"
        )
        return prefixed(metrics, "val_")
