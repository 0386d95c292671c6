"""Scoring a retrieval model: both directions, the dual encoder's ranking and the re-ranked one.

For one split, every text is a query against the split's images (text->image, t2i; correct: its
own image) and every image a query against the split's texts (image->text, i2t; correct: any of
its captions). The dual encoder ranks every candidate by ``scale * cosine``; the top
``model.rerank_k`` of each query are then re-scored as ``(1 - mix) * dual + mix * scorer`` and
reordered among themselves (:func:`abyssal.nn.retrieval.rerank_top_k`), the rest keeping the dual
order. Recall@K is the share of queries with a correct item in the first K (K = 1, 5, 10);
``mean_recall`` is the mean of the six (the usual "rsum" / 6).

Example:
    >>> metrics = evaluate_retrieval(model, data, batch_size=64, k=20, mix=0.5)  # doctest: +SKIP
    >>> metrics["rerank_test_t2i_r1"], metrics["dual_test_t2i_r1"]  # doctest: +SKIP
    (0.08, 0.07)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from abyssal.nn.retrieval import first_hit, positives, recall_at, rerank_top_k
from abyssal.solutions.multimodal.data import MultimodalData
from abyssal.solutions.multimodal.inputs import DecodedInputs
from abyssal.solutions.multimodal.retrieval_model import EncodedSide
from abyssal.solutions.multimodal.task import batch_inputs

KS = (1, 5, 10)
"""The recall cut-offs reported."""
DIRECTIONS = ("i2t", "t2i")
Inputs = Callable[[np.ndarray], dict[str, Tensor]]
"""Rows -> the network's batch dict (e.g. :func:`~.task.batch_inputs`, or with cached text)."""


@dataclass
class Ranked:
    """One direction's rankings.

    Attributes:
        dual: (Q, C) candidates by the dual encoder, best first.
        order: (Q, C) after re-ranking the top k.
        top: (Q, k) combined scores of ``order``'s first k.
        cosine: (Q, C) cosine similarities (by candidate, not by rank).
    """

    dual: Tensor
    order: Tensor
    top: Tensor
    cosine: Tensor


@torch.no_grad()
def encode_rows(
    net: torch.nn.Module, make: Inputs, rows: np.ndarray, modality: str, batch_size: int
) -> EncodedSide:
    """Tokens, masks and embeddings of ``rows`` in chunks, on the CPU (texts padded to the
    longest)."""
    device = next(net.parameters()).device
    encode = net.encode_text if modality == "text" else net.encode_image
    parts = []
    for start in range(0, len(rows), batch_size):
        batch = {k: v.to(device) for k, v in make(rows[start : start + batch_size]).items()}
        side = encode(batch)
        parts.append(EncodedSide(side.tokens.cpu(), side.mask.cpu(), side.embedding.cpu()))
    width = max(p.tokens.shape[1] for p in parts)
    return EncodedSide(
        torch.cat([F.pad(p.tokens, (0, 0, 0, width - p.tokens.shape[1])) for p in parts]),
        torch.cat([F.pad(p.mask, (0, width - p.mask.shape[1])) for p in parts]),
        torch.cat([p.embedding for p in parts]),
    )


@torch.no_grad()
def rank_both(
    net: torch.nn.Module,
    texts: EncodedSide,
    images: EncodedSide,
    *,
    k: int,
    mix: float,
    batch_size: int,
    text_queries: np.ndarray | None = None,
    image_queries: np.ndarray | None = None,
) -> dict[str, Ranked]:
    """``{"t2i": ..., "i2t": ...}`` rankings of the given queries (default: all) against every
    item of the other side; the re-ranker scores ``batch_size`` pairs at a time."""
    cosine = texts.embedding @ images.embedding.T  # (Nt, Ni)
    logits = float(net.scale().detach()) * cosine
    tq = np.arange(len(cosine)) if text_queries is None else text_queries
    iq = np.arange(cosine.shape[1]) if image_queries is None else image_queries
    tq, iq = torch.as_tensor(tq, dtype=torch.long), torch.as_tensor(iq, dtype=torch.long)
    out = {}
    for direction, queries, dual, cos in (
        ("t2i", tq, logits[tq], cosine[tq]),
        ("i2t", iq, logits.T[iq], cosine.T[iq]),
    ):

        def score(candidates: Tensor, queries: Tensor = queries, t2i: bool = direction == "t2i"):
            q = queries[:, None].expand_as(candidates).reshape(-1)
            c = candidates.reshape(-1)
            t, i = (q, c) if t2i else (c, q)
            return _pair_scores(net, texts, images, t, i, batch_size).view(candidates.shape)

        order, top = rerank_top_k(dual, k, score, mix)
        out[direction] = Ranked(dual.argsort(dim=1, descending=True, stable=True), order, top, cos)
    return out


def _pair_scores(
    net: torch.nn.Module,
    texts: EncodedSide,
    images: EncodedSide,
    t: Tensor,
    i: Tensor,
    batch_size: int,
) -> Tensor:
    """(P,) re-ranker logits of pairs (texts[t[p]], images[i[p]]), in chunks, on the CPU."""
    device = next(net.parameters()).device
    scores = []
    for start in range(0, len(t), batch_size):
        tt, ii = t[start : start + batch_size], i[start : start + batch_size]
        text = EncodedSide(
            texts.tokens[tt].to(device), texts.mask[tt].to(device), texts.embedding[tt]
        )
        image = EncodedSide(
            images.tokens[ii].to(device), images.mask[ii].to(device), images.embedding[ii]
        )
        scores.append(net.score_pairs(text, image).float().cpu())
    return torch.cat(scores) if scores else torch.zeros(0)


def split_ranks(
    net: torch.nn.Module,
    make: Inputs,
    data: MultimodalData,
    split: str,
    *,
    k: int,
    mix: float,
    batch_size: int,
    text_queries: np.ndarray | None = None,
    image_queries: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """0-based rank of the first correct item for each query of ``split`` (or the given query
    positions: into the split's rows for texts, into its images for images):
    ``{"t2i_dual", "t2i_rerank", "i2t_dual", "i2t_rerank"}``."""
    assert data.groups is not None
    rows = data.rows(split)
    text_groups = torch.from_numpy(data.groups[rows])
    image_rows = first_rows(data.groups, rows)
    image_groups = torch.from_numpy(data.groups[image_rows])
    net = getattr(net, "module", net)
    was = net.training
    net.eval()
    try:
        texts = encode_rows(net, make, rows, "text", batch_size)
        images = encode_rows(net, make, image_rows, "image", batch_size)
        ranked = rank_both(
            net, texts, images, k=k, mix=mix, batch_size=batch_size,
            text_queries=text_queries, image_queries=image_queries,
        )  # fmt: skip
    finally:
        net.train(was)
    tq = slice(None) if text_queries is None else torch.as_tensor(text_queries, dtype=torch.long)
    iq = slice(None) if image_queries is None else torch.as_tensor(image_queries, dtype=torch.long)
    pos = {
        "t2i": positives(text_groups, image_groups)[tq],
        "i2t": positives(image_groups, text_groups)[iq],
    }
    out = {}
    for direction, r in ranked.items():
        out[f"{direction}_dual"] = first_hit(r.dual, pos[direction]).numpy()
        out[f"{direction}_rerank"] = first_hit(r.order, pos[direction]).numpy()
    return out


def first_rows(groups: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """The first of ``rows`` of each group, ordered by group: one row per image.

    Example:
        >>> first_rows(np.array([1, 0, 1, 0]), np.array([0, 1, 2, 3])).tolist()
        [1, 0]
    """
    _, first = np.unique(groups[rows], return_index=True)
    return rows[first]


def recall_metrics(ranks: dict[str, np.ndarray], split: str) -> dict[str, float]:
    """``dual_<split>_i2t_r1`` ... ``rerank_<split>_mean_recall`` from :func:`split_ranks`'s
    ranks, and the query counts (``<prefix><split>_images``, ``_texts``)."""
    metrics: dict[str, float] = {}
    for prefix in ("dual", "rerank"):
        values = []
        for direction in DIRECTIONS:
            for k in KS:
                value = recall_at(ranks[f"{direction}_{prefix}"], k)
                metrics[f"{prefix}_{split}_{direction}_r{k}"] = value
                values.append(value)
        metrics[f"{prefix}_{split}_mean_recall"] = float(np.mean(values))
        metrics[f"{prefix}_{split}_images"] = len(ranks["i2t_dual"])
        metrics[f"{prefix}_{split}_texts"] = len(ranks["t2i_dual"])
    return metrics


def evaluate_retrieval(
    model: torch.nn.Module, data: MultimodalData, *, batch_size: int, k: int, mix: float
) -> dict[str, float]:
    """Recall@1/5/10 both ways on val and test, dual and re-ranked; the temperature, k and mix."""
    net = getattr(model, "module", model)
    metrics: dict[str, float] = {}
    for split in ("val", "test"):
        ranks = split_ranks(
            net, inputs_of(data.inputs), data, split, k=k, mix=mix, batch_size=batch_size
        )
        metrics.update(recall_metrics(ranks, split))
    metrics["temperature"] = 1.0 / float(net.scale().detach())
    metrics["rerank_k"] = k
    metrics["rerank_mix"] = mix
    return metrics


def inputs_of(inputs: DecodedInputs) -> Inputs:
    """Rows -> the batch dict of ``inputs`` (no cached text)."""
    return lambda rows: batch_inputs(inputs, rows)
