"""Image-text retrieval blocks: a symmetric contrastive loss for a dual encoder, a cross-attention
pair scorer that re-ranks the dual encoder's top candidates, and ranking metrics.

- :func:`info_nce`: the symmetric InfoNCE loss of CLIP (Radford et al. 2021, arXiv:2103.00020)
  over a batch of paired embeddings, with several positives per row when rows share an item
  (several captions of one image).
- :class:`CrossAttentionScorer`: one score per (text, image) pair from the text tokens attending
  to the image tokens, through :mod:`abyssal.nn.fusion`'s cross-modal blocks; trained on hard
  negatives mined from the dual encoder's similarities, as ALBEF's image-text matching head
  (Li et al. 2021, arXiv:2107.07651) is. :func:`sample_hard_negatives` draws them.
- :func:`rerank_top_k`, :func:`first_hit`, :func:`recall_at`: reorder the top ``k`` of a ranking
  by new scores (the rest keeps its order), the rank of the first correct item, recall@K.

Example:
    >>> text, image = F.normalize(torch.randn(4, 8), dim=1), F.normalize(torch.randn(4, 8), dim=1)
    >>> info_nce(text, image, torch.tensor(10.0)).shape
    torch.Size([])
    >>> dual = torch.tensor([[0.9, 0.1, 0.5]])
    >>> order, _ = rerank_top_k(dual, 2, lambda cand: torch.tensor([[0.0, 1.0]]))
    >>> order.tolist()  # the top 2 (items 0 and 2) swapped; item 1 stays last
    [[2, 0, 1]]
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor, nn

from abyssal.nn.fusion import _check_heads, _CrossModalBlock, _masked_mean


def positives(groups_a: Tensor, groups_b: Tensor) -> Tensor:
    """(A, B) bool: row i of ``a`` and column j of ``b`` show the same item (same group id)."""
    return groups_a[:, None] == groups_b[None, :]


def info_nce(text: Tensor, image: Tensor, scale: Tensor, groups: Tensor | None = None) -> Tensor:
    """Symmetric InfoNCE over a batch of pairs, averaged over both directions.

    ``logits = scale * text @ image.T``; text row i's positives are the images of its own group
    (by default only image i), and likewise for image rows. With several positives a row's loss
    is ``-log(sum_pos softmax)``, so two captions of one image in a batch are not pushed apart.

    Args:
        text: (B, E) text embeddings (L2-normalised for cosine similarity).
        image: (B, E) image embeddings, row i paired with text row i.
        scale: scalar, the inverse temperature (e.g. ``logit_scale.exp()``).
        groups: (B,) integer item ids (rows with equal ids show the same image), or ``None``.

    Returns:
        A scalar loss.

    Shapes:
        text, image: (B, E); groups: (B,); returns ().

    Example:
        >>> e = F.normalize(torch.eye(3), dim=1)
        >>> float(info_nce(e, e, torch.tensor(100.0))) < 1e-6  # perfect pairs: no loss
        True
    """
    if text.shape != image.shape or text.ndim != 2:
        raise ValueError(
            f"info_nce expects text and image of one shape (B, E), got {tuple(text.shape)} "
            f"and {tuple(image.shape)}"
        )
    b = len(text)
    if groups is None:
        groups = torch.arange(b, device=text.device)
    if groups.shape != (b,):
        raise ValueError(f"info_nce groups must be ({b},), got {tuple(groups.shape)}")
    logits = scale * text.float() @ image.float().T  # (B, B)
    pos = positives(groups, groups)  # (B, B), symmetric
    return 0.5 * (_multi_positive(logits, pos) + _multi_positive(logits.T, pos))


def _multi_positive(logits: Tensor, pos: Tensor) -> Tensor:
    """Mean over rows of ``-log(sum_pos exp / sum_all exp)``."""
    own = logits.masked_fill(~pos, float("-inf")).logsumexp(1)  # (B,)
    return (logits.logsumexp(1) - own).mean()


def sample_hard_negatives(
    similarity: Tensor, pos: Tensor, n: int, generator: torch.Generator | None = None
) -> Tensor:
    """For each row, ``n`` columns that are not positives, drawn without replacement with
    probability ``softmax(similarity)`` over the negatives (ALBEF's hard negatives: similar
    items are likely, false negatives of equal score not always taken).

    Args:
        similarity: (Q, C) scores (no gradient is taken through it).
        pos: (Q, C) bool, the positives (never drawn).
        n: negatives per row; at most the fewest negatives any row has.
        generator: makes the draw reproducible (on ``similarity``'s device).

    Returns:
        (Q, n) int64 column indices.

    Raises:
        ValueError: a row has fewer than ``n`` negatives.

    Example:
        >>> sim = torch.tensor([[5.0, 0.0, 4.0], [0.0, 5.0, 0.0]])
        >>> sample_hard_negatives(sim, torch.eye(3, dtype=torch.bool)[:2], 2).shape
        torch.Size([2, 2])
    """
    fewest = int((~pos).sum(1).min()) if len(pos) else 0
    if n > fewest:
        raise ValueError(f"asked for {n} negatives per row but a row has only {fewest}")
    weights = similarity.detach().float().masked_fill(pos, float("-inf")).softmax(1)  # (Q, C)
    return torch.multinomial(weights, n, replacement=False, generator=generator)


class CrossAttentionScorer(nn.Module):
    """Scores (text, image) pairs: the text tokens attend to the image tokens in ``layers``
    pre-norm cross-modal blocks (:mod:`abyssal.nn.fusion`'s, with a feed-forward sublayer),
    then the masked mean of the text tokens goes through LayerNorm and a linear layer to one
    logit. Padded tokens are never attended to and do not change the score.

    Args:
        dim: token width D of both modalities.
        heads: attention heads (must divide ``dim``).
        layers: cross-attention blocks.
        dropout: dropout in the blocks.

    Shapes:
        - text: (P, T, D), text_mask: (P, T) bool; image: (P, S, D), image_mask: (P, S) bool.
        - returns (P,) float: one score per pair.

    Example:
        >>> scorer = CrossAttentionScorer(8, heads=2)
        >>> t, i = torch.randn(3, 5, 8), torch.randn(3, 4, 8)
        >>> ones = torch.ones(3, 5, dtype=torch.bool)
        >>> scorer(t, ones, i, ones[:, :4]).shape
        torch.Size([3])
    """

    def __init__(self, dim: int, *, heads: int = 4, layers: int = 1, dropout: float = 0.1) -> None:
        super().__init__()
        for name, value in (("dim", dim), ("heads", heads), ("layers", layers)):
            if value < 1:
                raise ValueError(f"CrossAttentionScorer {name} must be >= 1, got {value}")
        _check_heads("CrossAttentionScorer", dim, heads)
        self.dim = dim
        self.blocks = nn.ModuleList(_CrossModalBlock(dim, heads, dropout) for _ in range(layers))
        self.head = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, 1))

    def forward(self, text: Tensor, text_mask: Tensor, image: Tensor, image_mask: Tensor) -> Tensor:
        if text.ndim != 3 or image.ndim != 3 or len(text) != len(image):
            raise ValueError(
                "CrossAttentionScorer expects text (P, T, D) and image (P, S, D) with one P, got "
                f"{tuple(text.shape)} and {tuple(image.shape)}"
            )
        x = text.masked_fill(~text_mask.unsqueeze(-1), 0.0)
        keys = image.masked_fill(~image_mask.unsqueeze(-1), 0.0)
        for block in self.blocks:
            x, _ = block(x, text_mask, keys, image_mask)  # (P, T, D)
        return self.head(_masked_mean(x, text_mask)).squeeze(-1)  # (P,)


def rerank_top_k(
    dual: Tensor, k: int, score: Callable[[Tensor], Tensor], mix: float = 1.0
) -> tuple[Tensor, Tensor]:
    """Reorder each row's top ``k`` columns of ``dual`` by new scores; the rest keep their order.

    The top ``k`` (by ``dual``, descending) get ``(1 - mix) * dual + mix * score(candidates)``
    and are sorted by it; they stay in the first ``k`` places, so a re-ranker can move a correct
    item up within the top ``k`` but never into or out of it.

    Args:
        dual: (Q, C) first-stage scores.
        k: candidates re-scored per row (capped at C).
        score: ``(Q, k) candidate column indices -> (Q, k) scores``.
        mix: weight of the new scores (1: those alone; 0: the dual order is kept).

    Returns:
        ``(order, top)``: (Q, C) int64 columns, best first, and (Q, k) the combined scores of
        the first ``k`` of ``order``, in that order.

    Example:
        >>> order, top = rerank_top_k(torch.tensor([[3.0, 2.0, 1.0]]), 2,
        ...                           lambda c: torch.tensor([[0.0, 5.0]]), mix=0.5)
        >>> order.tolist(), top.tolist()
        ([[1, 0, 2]], [[3.5, 1.5]])
    """
    if not 0.0 <= mix <= 1.0:
        raise ValueError(f"rerank_top_k mix must be in [0, 1], got {mix}")
    order = dual.argsort(dim=1, descending=True, stable=True)  # (Q, C)
    k = min(k, dual.shape[1])
    candidates = order[:, :k]  # (Q, k)
    new = score(candidates).to(dual.dtype)
    if new.shape != candidates.shape:
        raise ValueError(
            f"the re-ranker gave {tuple(new.shape)}, expected {tuple(candidates.shape)}"
        )
    combined = (1.0 - mix) * dual.gather(1, candidates) + mix * new  # (Q, k)
    top, within = combined.sort(dim=1, descending=True, stable=True)
    order = torch.cat([candidates.gather(1, within), order[:, k:]], dim=1)
    return order, top


def first_hit(order: Tensor, pos: Tensor) -> Tensor:
    """0-based rank of the first positive in each row's ranking (C when there is none).

    Shapes:
        order: (Q, C) column indices, best first; pos: (Q, C) bool by column; returns (Q,).

    Example:
        >>> first_hit(torch.tensor([[2, 0, 1]]), torch.tensor([[True, False, False]])).tolist()
        [1]
    """
    hits = pos.gather(1, order)  # (Q, C): is the item at each rank positive
    none = torch.full((len(order),), order.shape[1], dtype=torch.long, device=order.device)
    return torch.where(hits.any(1), hits.float().argmax(1), none)


def recall_at(ranks: np.ndarray | Tensor, k: int) -> float:
    """Share of queries whose first positive is among the first ``k`` (ranks from
    :func:`first_hit`).

    Example:
        >>> recall_at(np.array([0, 3, 12]), 5)
        0.6666666666666666
    """
    ranks = np.asarray(ranks)
    return float((ranks < k).mean()) if len(ranks) else float("nan")
