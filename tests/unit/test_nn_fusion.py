"""Multimodal fusion: shapes, masked-token invariance, missing modalities, contributions, attention
weights, modality dropout, late-fusion score averaging, gradients, input errors, the registry and
leave-one-modality-out deltas."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from abyssal.core.errors import RegistryError
from abyssal.nn.fusion import (
    FUSIONS,
    ConcatFusion,
    CrossAttentionFusion,
    EarlyFusion,
    LateFusion,
    MultimodalFusion,
    build_fusion,
    leave_one_out,
    modality_dropout,
)

MODALITIES = ("text", "image", "audio")
D, B, C = 8, 3, 4
KINDS = [CrossAttentionFusion, EarlyFusion, ConcatFusion, LateFusion]
# row 0: all three (padded); row 1: text + audio; row 2: image + audio
MASKS = {
    "text": [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]],
    "image": [[1, 1, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1]],
    "audio": [[1, 0, 0], [1, 1, 0], [1, 1, 1]],
}
PRESENT = torch.tensor([[1, 1, 1], [1, 0, 1], [0, 1, 1]], dtype=torch.bool)


def _batch(seed: int = 0) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    masks = {m: torch.tensor(rows, dtype=torch.bool) for m, rows in MASKS.items()}
    tokens = {m: torch.randn(*mask.shape, D, generator=g) for m, mask in masks.items()}
    return tokens, masks


def _build(kind: type[MultimodalFusion], **options: float) -> MultimodalFusion:
    torch.manual_seed(0)
    return kind(MODALITIES, D, C, **options).eval()


@pytest.mark.parametrize("kind", KINDS)
def test_shapes(kind: type[MultimodalFusion]) -> None:
    out = _build(kind, layers=2)(*_batch())
    assert out.logits.shape == (B, C)
    assert out.embedding.shape == (B, D)
    assert out.contributions.shape == (B, len(MODALITIES))
    assert torch.isfinite(out.logits).all() and torch.isfinite(out.embedding).all()


@pytest.mark.parametrize("kind", KINDS)
def test_masked_tokens_do_not_change_the_output(kind: type[MultimodalFusion]) -> None:
    fusion = _build(kind, layers=2)
    tokens, masks = _batch()
    junk = {
        m: torch.where(masks[m].unsqueeze(-1), x, 100.0 * torch.randn_like(x))
        for m, x in tokens.items()
    }
    junk["text"][2] = float("nan")  # row 2 has no text at all
    clean, noisy = fusion(tokens, masks), fusion(junk, masks)
    torch.testing.assert_close(noisy.logits, clean.logits)
    torch.testing.assert_close(noisy.embedding, clean.embedding)
    torch.testing.assert_close(noisy.contributions, clean.contributions)


@pytest.mark.parametrize("kind", KINDS)
def test_a_row_with_one_modality_is_finite_and_credits_it(kind: type[MultimodalFusion]) -> None:
    fusion = _build(kind).train()  # dropout on: still no NaN
    tokens, masks = _batch()
    masks["image"][0] = False
    masks["audio"][0] = False
    out = fusion(tokens, masks)
    assert torch.isfinite(out.logits).all() and torch.isfinite(out.embedding).all()
    assert out.contributions[0].tolist() == [1.0, 0.0, 0.0]
    out.logits.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in fusion.parameters() if p.grad is not None)


@pytest.mark.parametrize("kind", KINDS)
def test_contributions_are_shares_of_the_present_modalities(kind: type[MultimodalFusion]) -> None:
    shares = _build(kind)(*_batch()).contributions
    assert (shares >= 0).all()
    assert (shares[~PRESENT] == 0).all()
    torch.testing.assert_close(shares.sum(1), torch.ones(B))


def test_early_fusion_contributions_are_token_shares() -> None:
    shares = _build(EarlyFusion)(*_batch()).contributions
    # row 0 has 3 text, 2 image and 1 audio tokens; row 1 has 5 text and 2 audio
    torch.testing.assert_close(shares[0], torch.tensor([3 / 6, 2 / 6, 1 / 6]))
    torch.testing.assert_close(shares[1], torch.tensor([5 / 7, 0.0, 2 / 7]))


def test_cross_attention_weights_are_distributions_over_present_keys() -> None:
    fusion = _build(CrossAttentionFusion, layers=2)
    tokens, masks = _batch()
    fusion(tokens, masks)
    assert len(fusion.last_attention) == 2
    for layer in fusion.last_attention:
        for i, name in enumerate(MODALITIES):
            others = [m for m in MODALITIES if m != name]
            key_mask = torch.cat([masks[m] for m in others], 1)  # (B, S)
            weights = layer[name]
            assert weights.shape == (B, masks[name].shape[1], key_mask.shape[1])
            assert (weights.masked_select(~key_mask.unsqueeze(1)) == 0).all()
            has_keys = PRESENT[:, i] & torch.cat([PRESENT[:, :i], PRESENT[:, i + 1 :]], 1).any(1)
            want = (masks[name] & has_keys.unsqueeze(1)).float()  # 1 for real queries, else 0
            torch.testing.assert_close(weights.sum(2), want)


def test_cross_attention_contributions_are_received_attention_mass() -> None:
    fusion = _build(CrossAttentionFusion, layers=2)
    tokens, masks = _batch()
    shares = fusion(tokens, masks).contributions
    # row 1 has text and audio only: each attends only to the other, so each receives all of it
    torch.testing.assert_close(shares[1], torch.tensor([0.5, 0.0, 0.5]))
    # row 0 by hand: mass on each key modality, averaged over real queries, summed over layers
    lengths = {m: masks[m].shape[1] for m in MODALITIES}
    received = dict.fromkeys(MODALITIES, 0.0)
    for layer in fusion.last_attention:
        for name in MODALITIES:
            start, queries = 0, masks[name][0]
            for other in (m for m in MODALITIES if m != name):
                block = layer[name][0, :, start : start + lengths[other]]  # (T_q, T_other)
                received[other] += block.sum(1)[queries].mean().item()
                start += lengths[other]
    total = sum(received.values())
    assert shares[0].tolist() == pytest.approx([received[m] / total for m in MODALITIES])


def test_late_fusion_averages_the_present_modalities_logits() -> None:
    fusion = _build(LateFusion)
    tokens, masks = _batch()
    out = fusion(tokens, masks)
    for row in range(B):
        per_modality = []
        for i, name in enumerate(MODALITIES):
            if not PRESENT[row, i]:
                continue
            real = tokens[name][row][masks[name][row]]  # (T_real, D)
            vector = fusion.encoders[name](real.mean(0, keepdim=True))
            per_modality.append(fusion.heads[name](vector)[0])
        want = torch.stack(per_modality).mean(0)
        torch.testing.assert_close(out.logits[row], want)


@pytest.mark.parametrize("kind", KINDS)
def test_gradients_reach_every_parameter(kind: type[MultimodalFusion]) -> None:
    fusion = _build(kind, layers=2).train()
    tokens, masks = _batch()
    out = fusion(tokens, masks)
    F.cross_entropy(out.logits, torch.tensor([0, 1, 2])).backward()
    for name, param in fusion.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name


def _without_row_1(tokens, masks):
    masks = {m: mask.clone() for m, mask in masks.items()}
    for mask in masks.values():
        mask[1] = False
    return tokens, masks


def _reshape(name: str, shape: tuple[int, ...]):
    def change(tokens, masks):
        return {**tokens, name: torch.randn(*shape)}, masks

    return change


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (_reshape("image", (B, 4)), r"tokens\['image'\] must be 3-D"),
        (_reshape("audio", (B + 1, 3, D)), r"tokens\['audio'\] has batch size 4"),
        (_reshape("text", (B, 5, D + 1)), r"tokens\['text'\] has width 9"),
        (lambda t, m: (t, {**m, "audio": m["audio"][:, :2]}), r"masks\['audio'\] must have shape"),
        (lambda t, m: (t, {**m, "text": m["text"].float()}), r"masks\['text'\] must be bool"),
        (lambda t, m: ({**t, "video": t["text"]}, m), r"unknown modality 'video'"),
        (lambda t, m: (t, {k: v for k, v in m.items() if k != "image"}), r"lacks modality 'image'"),
        (_without_row_1, r"^row 1 has no modality present"),
    ],
)
@pytest.mark.parametrize("kind", KINDS)
def test_bad_inputs_name_the_modality_or_row(kind, change, message: str) -> None:
    tokens, masks = change(*_batch())
    with pytest.raises(ValueError, match=message):
        _build(kind)(tokens, masks)


def test_bad_constructor_arguments() -> None:
    with pytest.raises(ValueError, match=r"dim 8 must be divisible by heads 3"):
        EarlyFusion(MODALITIES, D, C, heads=3)
    with pytest.raises(ValueError, match=r"repeated: \['text'\]"):
        ConcatFusion(["text", "text"], D, C)
    with pytest.raises(ValueError, match=r"needs >= 2 modalities"):
        CrossAttentionFusion(["text"], D, C)
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\)"):
        LateFusion(MODALITIES, D, C, dropout=1.0)
    with pytest.raises(ValueError, match=r"classes must be >= 1"):
        LateFusion(MODALITIES, D, 0)


def _random_masks(rows: int, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {m: torch.rand(rows, 4, generator=g) < 0.5 for m in MODALITIES}


def test_modality_dropout_never_empties_a_row() -> None:
    masks = _random_masks(500, seed=1)
    before = torch.stack([m.any(1) for m in masks.values()], 1)
    for p in (0.5, 0.9, 1.0):
        dropped = modality_dropout(masks, p, torch.Generator().manual_seed(2))
        after = torch.stack([m.any(1) for m in dropped.values()], 1)
        assert (after.any(1) == before.any(1)).all()
        assert not (after & ~before).any()  # nothing is added
        for name in MODALITIES:  # a kept modality keeps its mask; a dropped one is all False
            kept = after[:, MODALITIES.index(name)]
            assert torch.equal(dropped[name][kept], masks[name][kept])
            assert not dropped[name][~kept].any()
    with_p_one = modality_dropout(masks, 1.0, torch.Generator().manual_seed(3))
    kept = torch.stack([m.any(1) for m in with_p_one.values()], 1)
    assert (kept.sum(1) == before.any(1).long()).all()  # exactly one left per non-empty row


def test_modality_dropout_is_reproducible_with_a_generator() -> None:
    masks = _random_masks(64, seed=4)
    first = modality_dropout(masks, 0.5, torch.Generator().manual_seed(7))
    again = modality_dropout(masks, 0.5, torch.Generator().manual_seed(7))
    other = modality_dropout(masks, 0.5, torch.Generator().manual_seed(8))
    assert all(torch.equal(first[m], again[m]) for m in MODALITIES)
    assert not all(torch.equal(first[m], other[m]) for m in MODALITIES)
    assert all(torch.equal(modality_dropout(masks, 0.0)[m], masks[m]) for m in MODALITIES)


def test_modality_dropout_rate() -> None:
    rows, p = 4000, 0.3
    masks = {m: torch.ones(rows, 2, dtype=torch.bool) for m in MODALITIES}
    dropped = modality_dropout(masks, p, torch.Generator().manual_seed(0))
    rate = 1.0 - torch.stack([m.any(1) for m in dropped.values()], 1).float().mean().item()
    # three present per row; the p^3 rows that drew all three keep one back
    assert rate == pytest.approx(p - p**3 / 3, abs=0.015)
    with pytest.raises(ValueError, match=r"p must be in \[0, 1\]"):
        modality_dropout(masks, 1.5)


def test_registry_and_build_fusion() -> None:
    assert FUSIONS.names() == ["concat", "cross_attention", "early", "late"]
    assert all(FUSIONS.summary(name) for name in FUSIONS)
    fusion = build_fusion("early", MODALITIES, D, C, heads=2, layers=2)
    assert isinstance(fusion, EarlyFusion) and len(fusion.encoder.layers) == 2
    with pytest.raises(RegistryError, match=r"unknown fusion 'nope'; choose one of: concat, "):
        build_fusion("nope", MODALITIES, D, C)


@pytest.mark.parametrize("kind", KINDS)
def test_leave_one_out(kind: type[MultimodalFusion]) -> None:
    fusion = _build(kind).train()
    tokens, masks = _batch()
    masks["image"][0] = False
    masks["audio"][0] = False  # row 0: text only
    deltas = leave_one_out(fusion, tokens, masks)
    assert fusion.training  # restored
    assert deltas.shape == (B, len(MODALITIES)) and torch.isfinite(deltas).all()
    assert deltas[0, 1:].tolist() == [0.0, 0.0] and deltas[1, 1] == 0 and deltas[2, 0] == 0
    fusion.eval()
    with torch.no_grad():
        probs = fusion(tokens, masks).logits.softmax(1)
        predicted = probs.argmax(1)
        assert deltas[0, 0].item() == pytest.approx(probs[0].max().item() - 1 / C, abs=1e-6)
        no_audio = {**masks, "audio": masks["audio"].clone()}
        no_audio["audio"][1] = False  # row 1 keeps text
        without = fusion(tokens, no_audio).logits.softmax(1)[1, predicted[1]]
        assert deltas[1, 2].item() == pytest.approx((probs[1].max() - without).item(), abs=1e-6)


@pytest.mark.parametrize("name", ["cross_attention", "late"])
def test_a_fusion_exports_to_one_graph_that_gives_the_eager_logits(name: str) -> None:
    torch.manual_seed(0)
    fusion = build_fusion(name, ["text", "image"], dim=8, classes=3).eval()

    class Flat(torch.nn.Module):  # export takes tensors, not dicts of modalities
        def __init__(self) -> None:
            super().__init__()
            self.fusion = fusion

        def forward(self, a, b, mask_a, mask_b):
            return self.fusion({"text": a, "image": b}, {"text": mask_a, "image": mask_b}).logits

    args = (
        torch.randn(2, 5, 8),
        torch.randn(2, 4, 8),
        torch.ones(2, 5, dtype=torch.bool),
        torch.tensor([[True] * 4, [False] * 4]),
    )
    graph = torch.export.export(Flat(), args).module()
    torch.testing.assert_close(graph(*args), Flat()(*args))
