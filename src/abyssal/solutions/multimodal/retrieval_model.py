"""The image-text retrieval network: a dual encoder and a cross-attention re-ranker.

The encoders are the classification model's (:func:`~.model.build_encoder`: a Hugging Face
text encoder, all-MiniLM-L6-v2 by default, frozen or not; a small CNN or a torchvision / timm
trunk for images), each giving ``dim``-wide tokens. **Dual encoder**: each side's tokens are
mean-pooled (over real tokens), put through LayerNorm and a linear map to ``embed_dim`` and
L2-normalised; a text and an image score ``scale * cosine`` with ``scale = exp(logit_scale)``,
a learned inverse temperature (started at ``1 / model.temperature``, capped at 100 as in CLIP).
**Re-ranker**: a :class:`~abyssal.nn.retrieval.CrossAttentionScorer` whose text tokens attend
to the image tokens, giving one logit per pair.

In training, :meth:`RetrievalNet.forward` also mines, for every text of the batch, ``negatives``
images of other groups drawn by the (detached) dual similarity, and as many texts for every
image (ALBEF's hard negatives), and scores each row's positive pair and its negatives with the
re-ranker; the loss (:mod:`.retrieval_task`) is InfoNCE on the dual scores plus cross-entropy
over each candidate list.

Batch keys: ``tokens`` (B, L) and ``token_lengths`` (B,), or ``text_hidden`` (B, L, H) (the
frozen text model's last hidden states, computed once: only the projection is applied) with
``token_lengths``; ``images`` (B, C, S, S) uint8; ``groups`` (B,) int64 (rows of one image share
a group).

Example:
    >>> net = build_retrieval_model(cfg.model, spec)  # doctest: +SKIP
    >>> text = net.encode_text(batch)  # doctest: +SKIP
    >>> text.embedding.shape  # doctest: +SKIP
    torch.Size([32, 128])
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from abyssal.nn.fusion import _masked_mean
from abyssal.nn.retrieval import CrossAttentionScorer, positives, sample_hard_negatives
from abyssal.solutions.multimodal.model import (
    IMAGE_MEAN,
    IMAGE_STD,
    build_encoder,
    encode_modality,
    length_mask,
)

MAX_SCALE = 100.0
"""The largest inverse temperature (CLIP's cap)."""


@dataclass
class EncodedSide:
    """One modality's encoded rows.

    Shapes:
        tokens (N, T, D); mask (N, T) bool; embedding (N, E), unit length.
    """

    tokens: Tensor
    mask: Tensor
    embedding: Tensor


@dataclass
class RetrievalOutput:
    """What :meth:`RetrievalNet.forward` gives a training step.

    Attributes:
        text, image: (B, E) unit embeddings, row i's text paired with row i's image.
        scale: the inverse temperature, a scalar.
        groups: (B,) the rows' image groups.
        text_scores: (B, 1 + n) re-ranker logits of each text with its own image (column 0)
            and its hard-negative images.
        image_scores: (B, 1 + n) the same for each image with its text and negative texts.
    """

    text: Tensor
    image: Tensor
    scale: Tensor
    groups: Tensor
    text_scores: Tensor
    image_scores: Tensor


class RetrievalNet(nn.Module):
    """Text and image encoders, their projection heads, a learned temperature and the
    cross-attention scorer (see the module docstring).

    Args:
        text_encoder: gives ``(tokens (B, L, dim), mask)`` from ids; has ``.proj`` (its hidden
            states to ``dim``) for cached hidden states.
        image_encoder: gives ``(tokens (B, S, dim), mask)`` from pixels in [0, 1].
        scorer: scores (text tokens, image tokens) pairs.
        dim: token width; embed_dim: the shared space's width.
        temperature: the starting temperature.
        negatives: hard negatives per text and per image in training.
        normalise_images: apply the ImageNet statistics (pretrained trunks).
    """

    def __init__(
        self,
        text_encoder: nn.Module,
        image_encoder: nn.Module,
        scorer: CrossAttentionScorer,
        *,
        dim: int,
        embed_dim: int,
        temperature: float = 0.07,
        negatives: int = 2,
        normalise_images: bool = False,
    ) -> None:
        super().__init__()
        self.modalities = ["text", "image"]
        self.encoders = nn.ModuleDict({"text": text_encoder, "image": image_encoder})
        self.heads = nn.ModuleDict(
            {
                m: nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, embed_dim))
                for m in self.modalities
            }
        )
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / temperature)))
        self.scorer = scorer
        self.negatives = negatives
        self.register_buffer("mean", torch.tensor(IMAGE_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGE_STD).view(1, 3, 1, 1))
        self.normalise_images = normalise_images

    def scale(self) -> Tensor:
        """The inverse temperature, ``exp(logit_scale)`` capped at :data:`MAX_SCALE`."""
        return self.logit_scale.clamp(max=math.log(MAX_SCALE)).exp()

    def encode_text(self, batch: Mapping[str, Tensor]) -> EncodedSide:
        encoder = self.encoders["text"]
        if "text_hidden" in batch:  # the frozen model's states, computed once
            hidden = batch["text_hidden"].float()  # (B, L, H)
            tokens, mask = (
                encoder.proj(hidden),
                length_mask(batch["token_lengths"], hidden.shape[1]),
            )
        else:
            tokens, mask = encode_modality(encoder, "text", batch)
        return self._side("text", tokens, mask)

    def encode_image(self, batch: Mapping[str, Tensor]) -> EncodedSide:
        stats = (self.mean, self.std) if self.normalise_images else None
        tokens, mask = encode_modality(self.encoders["image"], "image", batch, stats)
        return self._side("image", tokens, mask)

    def _side(self, modality: str, tokens: Tensor, mask: Tensor) -> EncodedSide:
        pooled = _masked_mean(tokens, mask)  # (B, dim)
        return EncodedSide(tokens, mask, F.normalize(self.heads[modality](pooled), dim=-1))

    def score_pairs(self, text: EncodedSide, image: EncodedSide) -> Tensor:
        """(P,) re-ranker logits of the pairs (text row p, image row p)."""
        return self.scorer(text.tokens, text.mask, image.tokens, image.mask)

    def forward(self, batch: Mapping[str, Tensor]) -> RetrievalOutput:
        text, image = self.encode_text(batch), self.encode_image(batch)
        groups = batch["groups"]
        pos = positives(groups, groups)  # (B, B)
        sim = text.embedding @ image.embedding.T  # (B, B) cosine
        n = min(self.negatives, int((~pos).sum(1).min()))  # a tiny batch may have fewer
        text_scores = self._candidates(text, image, sim, pos, n)
        image_scores = self._candidates(image, text, sim.T, pos, n, swap=True)
        return RetrievalOutput(
            text.embedding, image.embedding, self.scale(), groups, text_scores, image_scores
        )

    def _candidates(
        self,
        query: EncodedSide,
        other: EncodedSide,
        sim: Tensor,
        pos: Tensor,
        n: int,
        swap: bool = False,
    ) -> Tensor:
        """(B, 1 + n) scores of each query row with its own partner and ``n`` hard negatives."""
        b = len(sim)
        own = torch.arange(b, device=sim.device)[:, None]  # (B, 1)
        columns = own
        if n > 0:
            columns = torch.cat([own, sample_hard_negatives(sim, pos, n)], 1)  # (B, 1 + n)
        rows = own.expand_as(columns).reshape(-1)
        picked = _take(query, rows), _take(other, columns.reshape(-1))
        text, image = (picked[1], picked[0]) if swap else picked
        return self.score_pairs(text, image).view(b, -1)


def _take(side: EncodedSide, index: Tensor) -> EncodedSide:
    return EncodedSide(side.tokens[index], side.mask[index], side.embedding[index])


def build_retrieval_model(model_cfg: Any, spec: Mapping[str, Any]) -> RetrievalNet:
    """The network for a model config and a spec (``text_base``, ``image_channels``)."""
    weights = None if model_cfg.image_weights == "none" else str(Path(model_cfg.image_weights))
    dim = model_cfg.dim
    text = build_encoder("text", model_cfg.text, spec, dim, freeze=model_cfg.text_freeze)
    image = build_encoder("image", model_cfg.image, spec, dim, weights=weights)
    scorer = CrossAttentionScorer(
        dim, heads=model_cfg.heads, layers=model_cfg.layers, dropout=model_cfg.dropout
    )
    net = RetrievalNet(
        text,
        image,
        scorer,
        dim=dim,
        embed_dim=model_cfg.embed_dim,
        temperature=model_cfg.temperature,
        negatives=model_cfg.rerank_negatives,
        normalise_images=model_cfg.image != "small",
    )
    net.multimodal_spec = dict(spec)
    return net
