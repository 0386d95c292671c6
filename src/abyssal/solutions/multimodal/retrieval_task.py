"""The image-text retrieval task: contrastive training of the dual encoder and, on the same
batches, the cross-attention re-ranker on hard negatives; validation by recall@K.

Training batches are rows (image-text pairs) of the training images, drawn from ``(train.seed,
epoch)``; two captions of one image in a batch are both positives of that image
(:func:`abyssal.nn.retrieval.info_nce` with groups). The loss is

    InfoNCE(text, image) + model.rerank_weight * (CE(text_scores) + CE(image_scores)) / 2

where each ``*_scores`` row holds the re-ranker's logits of the true pair (class 0) and of hard
negatives mined in the batch by the model (:mod:`.retrieval_model`).

With a frozen text encoder (``model.text_freeze``, the default) its last hidden states are
computed once for every row, on the first batch asked for, and batches carry them instead of
token ids: the same numbers the model would compute, without running MiniLM every epoch.

Validation is one batch per process: this shard's share of the validation texts and images as
queries against the whole validation split, ranked by the dual encoder and re-ranked
(:func:`~.retrieval_eval.split_ranks`); the ranks are gathered and turned into recall@1/5/10 in
both directions and their mean (``rerank_val_mean_recall`` is what training watches).

Example:
    >>> task = RetrievalTask(cfg, data, spec)  # doctest: +SKIP
    >>> batch = next(iter(task.train_batches(0, Shard())))  # doctest: +SKIP
    >>> loss = task.training_loss(model, batch)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from abyssal.contracts.task import LazyBatches, Shard, cut_batches
from abyssal.core.devices import derive_seed
from abyssal.nn.retrieval import info_nce
from abyssal.solutions.multimodal.config import MultimodalConfig
from abyssal.solutions.multimodal.data import MultimodalData
from abyssal.solutions.multimodal.model import length_mask
from abyssal.solutions.multimodal.retrieval_eval import (
    first_rows,
    recall_metrics,
    split_ranks,
)
from abyssal.solutions.multimodal.task import batch_inputs

MONITOR = "rerank_val_mean_recall"
"""The validation metric a retrieval run watches."""
HEADLINE = "rerank_test_mean_recall"
"""The test metric a retrieval version is listed with."""


@dataclass
class RetrievalBatch:
    """Network inputs of some rows (see :mod:`.retrieval_model`), groups included."""

    inputs: dict[str, Tensor]

    def to(self, device: torch.device | str) -> RetrievalBatch:
        return RetrievalBatch({k: v.to(device, non_blocking=True) for k, v in self.inputs.items()})

    def __len__(self) -> int:
        return len(self.inputs["groups"])


@dataclass
class RankingBatch:
    """Validation queries of one process: positions into the split's rows (texts) and into its
    images; the gallery is the whole split, encoded inside the step."""

    texts: np.ndarray
    images: np.ndarray

    def to(self, device: torch.device | str) -> RankingBatch:
        return self  # encoded in chunks on the model's device by the step

    def __len__(self) -> int:
        return len(self.texts) + len(self.images)


def retrieval_loss(out: Any, rerank_weight: float) -> Tensor:
    """InfoNCE over the dual scores plus ``rerank_weight`` x the re-ranker's cross-entropy
    (the true pair is class 0 of every candidate list)."""
    loss = info_nce(out.text, out.image, out.scale, out.groups)
    if rerank_weight > 0:
        target = torch.zeros(len(out.text_scores), dtype=torch.long, device=out.text.device)
        rerank = F.cross_entropy(out.text_scores.float(), target)
        rerank = rerank + F.cross_entropy(out.image_scores.float(), target)
        loss = loss + rerank_weight * rerank / 2
    return loss


class RetrievalTask:
    """Contrastive + re-ranker training over image-text pairs; recall@K validation."""

    def __init__(self, cfg: MultimodalConfig, data: MultimodalData, spec: Mapping[str, Any]):
        self.cfg, self.data, self.spec = cfg, data, spec
        self._hidden: np.ndarray | None = None

    def build_model(self) -> torch.nn.Module:
        from abyssal.solutions.multimodal.retrieval_model import build_retrieval_model

        return build_retrieval_model(self.cfg.model, dict(self.spec))

    def train_batches(self, epoch: int, shard: Shard) -> LazyBatches:
        order = self.data.rows("train")
        mine = shard.split(order, seed=derive_seed(self.cfg.train.seed, epoch))
        parts = cut_batches(mine, len(order), shard, self.cfg.data.batch_size)
        return LazyBatches(lambda i, rows: RetrievalBatch(self.inputs(rows)), parts)

    def inputs(self, rows: np.ndarray) -> dict[str, Tensor]:
        """The batch dict of ``rows``: pixels, groups, and the text model's cached hidden
        states (frozen text encoder) or token ids."""
        rows = np.asarray(rows, dtype=np.int64)
        out = batch_inputs(self.data.inputs, rows)
        assert self.data.groups is not None
        out["groups"] = torch.from_numpy(self.data.groups[rows])
        hidden = self.text_hidden()
        if hidden is not None:
            width = out.pop("tokens").shape[1]
            out["text_hidden"] = torch.from_numpy(hidden[rows, :width])
        return out

    def text_hidden(self) -> np.ndarray | None:
        """(N, L, H) float32 last hidden states of the frozen text model for every row (zeros
        after each text's tokens), computed on first use; ``None`` when it is trained."""
        if not self.cfg.model.text_freeze:
            return None
        if self._hidden is None:
            self._hidden = _hidden_states(self.spec, self.data, self.cfg.data.eval_batch_size)
        return self._hidden

    def move_batch(self, batch: Any, device: torch.device | str) -> Any:
        return batch.to(device)

    def training_loss(self, model: torch.nn.Module, batch: RetrievalBatch) -> Tensor:
        return retrieval_loss(model(batch.inputs), self.cfg.model.rerank_weight)

    def val_batches(self, shard: Shard) -> list[RankingBatch]:
        assert self.data.groups is not None
        rows = self.data.rows("val")
        images = len(first_rows(self.data.groups, rows))
        return [RankingBatch(shard.split(np.arange(len(rows))), shard.split(np.arange(images)))]

    def validation_step(self, model: torch.nn.Module, batch: RankingBatch) -> dict[str, Any]:
        m = self.cfg.model
        ranks = split_ranks(
            model, self.inputs, self.data, "val", k=m.rerank_k, mix=m.rerank_mix,
            batch_size=self.cfg.data.eval_batch_size, text_queries=batch.texts,
            image_queries=batch.images,
        )  # fmt: skip
        direction = np.r_[np.zeros(len(batch.texts)), np.ones(len(batch.images))]
        return {
            "image_query": direction.astype(np.int64),  # 0: a text query, 1: an image query
            "dual": np.r_[ranks["t2i_dual"], ranks["i2t_dual"]],
            "rerank": np.r_[ranks["t2i_rerank"], ranks["i2t_rerank"]],
        }

    def validation_metrics(self, outputs: Mapping[str, np.ndarray]) -> dict[str, float]:
        image = outputs["image_query"].astype(bool)
        ranks = {
            f"{d}_{kind}": outputs[kind][image if d == "i2t" else ~image]
            for d in ("i2t", "t2i")
            for kind in ("dual", "rerank")
        }
        return recall_metrics(ranks, "val")


@torch.no_grad()
def _hidden_states(spec: Mapping[str, Any], data: MultimodalData, batch_size: int) -> np.ndarray:
    """The frozen text model's last hidden states of every row's tokens, in chunks."""
    from abyssal.solutions.text.model import transformers_module

    inputs = data.inputs
    assert inputs.tokens is not None and inputs.token_lengths is not None
    model = transformers_module().AutoModel.from_pretrained(str(spec["text_base"])).eval()
    out: np.ndarray | None = None
    for start in range(0, len(inputs), batch_size):
        rows = np.arange(start, min(start + batch_size, len(inputs)))
        lengths = torch.from_numpy(inputs.token_lengths[rows])
        width = max(1, int(lengths.max()))
        ids = torch.from_numpy(inputs.tokens[rows, :width])
        mask = length_mask(lengths, width).long()
        hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state  # (b, w, H)
        if out is None:
            out = np.zeros((len(inputs), inputs.tokens.shape[1], hidden.shape[2]), np.float32)
        out[rows, :width] = (hidden * mask[..., None]).numpy()
    assert out is not None
    return out
