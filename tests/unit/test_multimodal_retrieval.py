"""Image-text retrieval blocks on hand-made numbers and tiny modules: recall@K with several
captions per image, symmetric InfoNCE, hard negatives, the cross-attention scorer, re-ranking
that only reorders the top k, the retrieval network with cached text states, and the split by
image."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from abyssal.core.errors import DataError
from abyssal.nn.encoders import ImageEncoder, TextEncoder
from abyssal.nn.retrieval import (
    CrossAttentionScorer,
    first_hit,
    info_nce,
    positives,
    recall_at,
    rerank_top_k,
    sample_hard_negatives,
)
from abyssal.solutions.multimodal.config import MultimodalDataConfig
from abyssal.solutions.multimodal.model import small_trunk
from abyssal.solutions.multimodal.retrieval_data import image_groups, split_by_image
from abyssal.solutions.multimodal.retrieval_eval import first_rows, recall_metrics
from abyssal.solutions.multimodal.retrieval_model import RetrievalNet
from abyssal.solutions.multimodal.retrieval_task import retrieval_loss

# --- recall@K on a hand-made similarity matrix ----------------------------------------------------

# 3 images, 6 captions: captions 0, 1 show image 0; 2, 3 image 1; 4, 5 image 2.
CAPTION_IMAGE = torch.tensor([0, 0, 1, 1, 2, 2])
SIM = torch.tensor(
    [  # caption x image
        [0.9, 0.1, 0.2],  # caption 0: its image first
        [0.3, 0.8, 0.1],  # caption 1: its image second
        [0.1, 0.7, 0.2],  # caption 2: first
        [0.5, 0.4, 0.6],  # caption 3: third
        [0.2, 0.3, 0.1],  # caption 4: third
        [0.1, 0.2, 0.9],  # caption 5: first
    ]
)


def test_text_to_image_ranks_and_recall_are_counted_by_hand() -> None:
    pos = positives(CAPTION_IMAGE, torch.arange(3))  # (6, 3)
    order = SIM.argsort(dim=1, descending=True)
    ranks = first_hit(order, pos)
    assert ranks.tolist() == [0, 1, 0, 2, 2, 0]
    assert recall_at(ranks, 1) == pytest.approx(3 / 6)
    assert recall_at(ranks, 2) == pytest.approx(4 / 6)
    assert recall_at(ranks, 3) == 1.0


def test_image_to_text_counts_any_of_its_captions_as_a_hit() -> None:
    pos = positives(torch.arange(3), CAPTION_IMAGE)  # (3, 6)
    order = SIM.T.argsort(dim=1, descending=True)
    # image 0's captions by score: 0 (0.9), 3 (0.5), 1 (0.3): caption 0 is its own -> rank 0
    # image 1: 1 (0.8), 2 (0.7): caption 1 is not image 1's, caption 2 is -> rank 1
    # image 2: 5 (0.9), ... -> rank 0
    assert first_hit(order, pos).tolist() == [0, 1, 0]
    assert recall_at(first_hit(order, pos), 1) == pytest.approx(2 / 3)


def test_a_query_without_a_positive_ranks_past_the_end() -> None:
    order = torch.tensor([[1, 0, 2]])
    assert first_hit(order, torch.zeros(1, 3, dtype=torch.bool)).tolist() == [3]
    assert math.isnan(recall_at(np.array([]), 5))


def test_recall_metrics_name_both_directions_and_their_mean() -> None:
    ranks = {
        "i2t_dual": np.array([0, 6, 20]),
        "t2i_dual": np.array([0, 0, 9, 30]),
        "i2t_rerank": np.array([0, 0, 20]),
        "t2i_rerank": np.array([0, 0, 4, 30]),
    }
    m = recall_metrics(ranks, "test")
    assert m["dual_test_i2t_r1"] == pytest.approx(1 / 3)
    assert m["dual_test_i2t_r10"] == pytest.approx(2 / 3)
    assert m["rerank_test_t2i_r5"] == pytest.approx(3 / 4)
    dual = [1 / 3, 1 / 3, 2 / 3, 2 / 4, 2 / 4, 3 / 4]
    assert m["dual_test_mean_recall"] == pytest.approx(np.mean(dual))
    assert m["rerank_test_images"] == 3 and m["dual_test_texts"] == 4


# --- InfoNCE ----------------------------------------------------------------------------------


def test_info_nce_is_the_mean_of_both_directions_cross_entropy() -> None:
    torch.manual_seed(0)
    text, image = F.normalize(torch.randn(5, 4), dim=1), F.normalize(torch.randn(5, 4), dim=1)
    logits = 3.0 * text @ image.T
    target = torch.arange(5)
    expected = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
    assert float(info_nce(text, image, torch.tensor(3.0))) == pytest.approx(float(expected), 1e-5)


def test_info_nce_does_not_push_apart_two_captions_of_one_image() -> None:
    # rows 0 and 1 are two captions of one image (the same image twice in the batch)
    image = F.normalize(torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]), dim=1)
    text = image.clone()
    scale = torch.tensor(20.0)
    grouped = info_nce(text, image, scale, torch.tensor([0, 0, 1]))
    plain = info_nce(text, image, scale)
    assert float(grouped) < 1e-6  # both of the image's columns are positives
    # without groups rows 0 and 1 each lose log 2 (two equal columns), row 2 nothing
    assert float(plain) == pytest.approx(2 / 3 * math.log(2), abs=1e-3)


def test_info_nce_refuses_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match=r"one shape \(B, E\)"):
        info_nce(torch.zeros(3, 4), torch.zeros(2, 4), torch.tensor(1.0))


# --- hard negatives, scorer, re-ranking -------------------------------------------------------


def test_hard_negatives_are_never_positives_and_follow_the_similarity() -> None:
    groups = torch.tensor([0, 0, 1, 2, 3])
    pos = positives(groups, groups)
    sim = torch.zeros(5, 5)
    sim[:, 3] = 50.0  # column 3 is far the most similar to everything
    picked = sample_hard_negatives(sim, pos, 2, torch.Generator().manual_seed(0))
    assert picked.shape == (5, 2)
    assert not pos.gather(1, picked).any()
    rows_without_3 = [r for r in range(5) if r != 3]
    assert all(3 in picked[r].tolist() for r in rows_without_3)
    with pytest.raises(ValueError, match="has only 3"):
        sample_hard_negatives(sim, pos, 4)


def test_the_scorer_ignores_padded_tokens() -> None:
    torch.manual_seed(0)
    scorer = CrossAttentionScorer(8, heads=2, layers=2).eval()
    text, image = torch.randn(2, 5, 8), torch.randn(2, 4, 8)
    text_mask = torch.tensor([[True] * 3 + [False] * 2, [True] * 5])
    image_mask = torch.tensor([[True] * 4, [True] * 2 + [False] * 2])
    before = scorer(text, text_mask, image, image_mask)
    text[0, 3:] = 1e4  # padding changes
    image[1, 2:] = -1e4
    after = scorer(text, text_mask, image, image_mask)
    assert before.shape == (2,)
    torch.testing.assert_close(before, after)


def test_re_ranking_only_reorders_the_top_k() -> None:
    torch.manual_seed(1)
    dual = torch.randn(6, 15)
    k = 5
    new = torch.randn(6, k)
    order, top = rerank_top_k(dual, k, lambda cand: new, mix=1.0)
    before = dual.argsort(dim=1, descending=True, stable=True)
    assert torch.equal(order[:, k:], before[:, k:])  # the rest keeps the dual order
    for q in range(6):
        assert set(order[q, :k].tolist()) == set(before[q, :k].tolist())
        assert torch.equal(top[q], new[q].sort(descending=True).values)
    same, _ = rerank_top_k(dual, k, lambda cand: new, mix=0.0)
    assert torch.equal(same, before)  # mix 0: the dual order


def test_re_ranking_can_lift_the_right_item_within_the_top_k_only() -> None:
    dual = torch.tensor([[5.0, 4.0, 3.0, 2.0, 1.0]])
    # the scorer loves column 2 (inside the top 3) and column 4 (outside)
    liked = torch.tensor([0.0, 0.0, 100.0, 0.0, 100.0])
    order, _ = rerank_top_k(dual, 3, lambda cand: liked[cand], mix=0.5)
    assert order.tolist() == [[2, 0, 1, 3, 4]]


# --- the network ------------------------------------------------------------------------------


class _TinyLM(nn.Module):
    """A stand-in Hugging Face encoder: embeddings and one linear layer."""

    def __init__(self, vocab: int = 20, hidden: int = 6) -> None:
        super().__init__()
        self.config = SimpleNamespace(hidden_size=hidden)
        self.embed, self.mix = nn.Embedding(vocab, hidden), nn.Linear(hidden, hidden)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> SimpleNamespace:
        return SimpleNamespace(last_hidden_state=torch.tanh(self.mix(self.embed(input_ids))))


def _tiny_net(negatives: int = 2) -> RetrievalNet:
    torch.manual_seed(0)
    trunk, width = small_trunk(3, width=4)
    text = TextEncoder(_TinyLM(), 8, freeze=True)
    return RetrievalNet(
        text, ImageEncoder(trunk, width, 8), CrossAttentionScorer(8, heads=2),
        dim=8, embed_dim=6, negatives=negatives,
    )  # fmt: skip


def _batch(b: int = 6) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "tokens": torch.randint(1, 20, (b, 7), generator=g),
        "token_lengths": torch.tensor([7, 5, 3, 7, 2, 6][:b]),
        "images": torch.randint(0, 256, (b, 3, 16, 16), generator=g, dtype=torch.uint8),
        "groups": torch.tensor([0, 0, 1, 2, 3, 4][:b]),
    }


def test_the_network_scores_each_row_with_its_partner_and_hard_negatives() -> None:
    net = _tiny_net(negatives=2)
    out = net(_batch())
    assert out.text.shape == out.image.shape == (6, 6)
    torch.testing.assert_close(out.text.norm(dim=1), torch.ones(6))
    assert out.text_scores.shape == out.image_scores.shape == (6, 3)
    assert float(out.scale.detach()) == pytest.approx(1 / 0.07, rel=1e-5)
    loss = retrieval_loss(out, 1.0)
    loss.backward()
    assert torch.isfinite(loss) and net.scorer.head[1].weight.grad is not None
    assert net.logit_scale.grad is not None
    assert all(p.grad is None for p in net.encoders["text"].model.parameters())  # frozen


def test_cached_hidden_states_give_the_same_embeddings_as_the_token_ids() -> None:
    net = _tiny_net().eval()
    batch = _batch()
    with torch.no_grad():
        direct = net.encode_text(batch)
        hidden = net.encoders["text"].model(batch["tokens"], None).last_hidden_state
        cached = net.encode_text({"text_hidden": hidden, "token_lengths": batch["token_lengths"]})
    torch.testing.assert_close(direct.embedding, cached.embedding)
    assert torch.equal(direct.mask, cached.mask)
    assert direct.mask.sum(1).tolist() == [7, 5, 3, 7, 2, 6]


# --- the split by image -----------------------------------------------------------------------


def _cfg(**kw: object) -> MultimodalDataConfig:
    return MultimodalDataConfig(**{"path": "pairs.csv", "val_frac": 0.1, "test_frac": 0.2, **kw})


def test_rows_of_one_image_share_a_group() -> None:
    groups, files = image_groups([Path("b.jpg"), Path("a.jpg"), Path("b.jpg"), Path("c.jpg")])
    assert groups.tolist() == [0, 1, 0, 2] and files == ["b.jpg", "a.jpg", "c.jpg"]
    assert first_rows(groups, np.arange(4)).tolist() == [0, 1, 3]


def test_the_split_is_by_image_fixed_by_its_seed_and_a_fifth_is_test() -> None:
    groups = np.repeat(np.arange(50), 5)  # 50 images, 5 captions each
    in_test = np.zeros(len(groups), dtype=bool)
    splits = split_by_image(groups, in_test, _cfg(split_seed=3))
    images = {s: set(groups[r].tolist()) for s, r in splits.items()}
    assert not images["train"] & images["test"] and not images["val"] & images["test"]
    assert not images["train"] & images["val"]
    assert [len(images[s]) for s in ("train", "val", "test")] == [35, 5, 10]
    assert sum(len(r) for r in splits.values()) == 250  # every caption once
    again = split_by_image(groups, in_test, _cfg(split_seed=3))
    assert all(np.array_equal(splits[s], again[s]) for s in splits)
    other = split_by_image(groups, in_test, _cfg(split_seed=4))
    assert not np.array_equal(splits["test"], other["test"])


def test_a_test_manifest_sharing_an_image_is_refused() -> None:
    groups = np.array([0, 0, 1, 2, 2, 3])
    in_test = np.array([False, False, False, False, True, True])  # image 2 in both
    with pytest.raises(DataError, match=r"in both data\.path and data\.test_path"):
        split_by_image(groups, in_test, _cfg(test_path="test.csv"))
    in_test = np.array([False, False, False, False, False, True])
    splits = split_by_image(groups, in_test, _cfg(test_path="test.csv", val_frac=0.34))
    assert splits["test"].tolist() == [5]
