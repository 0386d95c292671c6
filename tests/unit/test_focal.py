"""Focal loss against cross-entropy and hand-computed values, its reductions, the module's buffer,
and class-balanced weights."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from abyssal.nn.focal import FocalLoss, class_balanced_alpha, focal_loss

LOGITS = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
TARGET = torch.tensor([0, 2])
ALPHA = torch.tensor([0.25, 0.5, 0.25])


def _hand_focal(row: list[float], target: int, gamma: float, alpha_t: float) -> float:
    """-alpha_t * (1 - p_t) ** gamma * log(p_t), with p_t from a softmax written out."""
    z = sum(math.exp(v) for v in row)
    p_t = math.exp(row[target]) / z
    return -alpha_t * (1.0 - p_t) ** gamma * math.log(p_t)


def test_gamma_zero_without_alpha_is_cross_entropy() -> None:
    torch.manual_seed(0)
    logits, target = torch.randn(7, 5), torch.randint(0, 5, (7,))
    for reduction in ("mean", "sum", "none"):
        got = focal_loss(logits, target, gamma=0.0, reduction=reduction)
        want = F.cross_entropy(logits, target, reduction=reduction)
        assert (got - want).abs().max() <= 1e-6


def test_a_hand_computed_value() -> None:
    # logits [2, 0, -1], target 0: Z = e^2 + e^0 + e^-1 = 7.389056 + 1 + 0.367879 = 8.756935
    z = math.exp(2.0) + math.exp(0.0) + math.exp(-1.0)
    p_t = math.exp(2.0) / z  # 0.843795
    # FL = -alpha_0 * (1 - p_t)^2 * log(p_t) = -0.25 * 0.156205^2 * (-0.169846) = 0.001036
    want = -0.25 * (1.0 - p_t) ** 2 * math.log(p_t)
    assert want == pytest.approx(0.0010361, abs=1e-6)
    got = focal_loss(LOGITS[:1], TARGET[:1], gamma=2.0, alpha=ALPHA)
    assert got.item() == pytest.approx(want, abs=1e-6)


def test_reductions_and_mean_is_over_items_not_alpha() -> None:
    per_item = [_hand_focal(LOGITS[i].tolist(), int(TARGET[i]), 2.0, 0.25) for i in range(2)]
    none = focal_loss(LOGITS, TARGET, alpha=ALPHA, reduction="none")
    assert none.shape == (2,)
    assert none.tolist() == pytest.approx(per_item, abs=1e-6)
    total = focal_loss(LOGITS, TARGET, alpha=ALPHA, reduction="sum").item()
    mean = focal_loss(LOGITS, TARGET, alpha=ALPHA, reduction="mean").item()
    assert total == pytest.approx(sum(per_item), abs=1e-6)
    assert mean == pytest.approx(sum(per_item) / 2, abs=1e-6)  # not / (0.25 + 0.25)


def test_half_precision_logits_are_upcast() -> None:
    half = LOGITS.to(torch.bfloat16)
    got = focal_loss(half, TARGET, alpha=ALPHA, reduction="none")
    assert got.dtype == torch.float32
    want = focal_loss(half.float(), TARGET, alpha=ALPHA, reduction="none")
    assert torch.equal(got, want)


def test_gradient_is_finite_when_the_prediction_is_certain() -> None:
    logits = torch.tensor([[200.0, 0.0]], requires_grad=True)  # p_t == 1 in float32
    focal_loss(logits, torch.tensor([0]), gamma=0.5).backward()
    assert torch.isfinite(logits.grad).all()


def test_module_matches_function_and_keeps_alpha_out_of_the_state_dict() -> None:
    module = FocalLoss(gamma=2.0, alpha=[0.25, 0.5, 0.25], reduction="sum")
    want = focal_loss(LOGITS, TARGET, gamma=2.0, alpha=ALPHA, reduction="sum")
    assert torch.equal(module(LOGITS, TARGET), want)
    assert "alpha" not in module.state_dict()
    assert [name for name, _ in module.named_buffers()] == ["alpha"]
    assert module.to("meta").alpha.device.type == "meta"  # moves with the module
    assert repr(FocalLoss(alpha=[0.25, 0.75])) == (
        "FocalLoss(gamma=2.0, alpha=[0.25, 0.75], reduction='mean')"
    )
    assert FocalLoss().alpha is None


def test_class_balanced_alpha_by_inverse_frequency() -> None:
    # counts [10, 30]: 1/n = [0.1, 0.0333]; their mean 0.0667; weights [1.5, 0.5] average 1
    got = class_balanced_alpha([10, 30])
    assert got.dtype == torch.float32
    assert got.tolist() == pytest.approx([1.5, 0.5], abs=1e-6)


def test_class_balanced_alpha_by_effective_number() -> None:
    # beta 0.9: w = (1 - 0.9) / (1 - 0.9^n) = [0.1 / 0.651322, 0.1 / 0.957609]
    #             = [0.153534, 0.104427], mean 0.128981, so [1.190370, 0.809630]
    raw = [0.1 / (1.0 - 0.9**10), 0.1 / (1.0 - 0.9**30)]
    mean = sum(raw) / 2
    got = class_balanced_alpha([10, 30], beta=0.9)
    assert got.tolist() == pytest.approx([raw[0] / mean, raw[1] / mean], abs=1e-6)
    assert got.tolist() == pytest.approx([1.190370, 0.809630], abs=1e-5)
    assert class_balanced_alpha([10, 30], beta=0.0).tolist() == [1.0, 1.0]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"logits": torch.zeros(3)}, r"logits must be 2-D \(N, C\), got shape \(3,\)"),
        ({"target": torch.tensor([0, 1, 2])}, r"target must have shape \(2,\) .* got \(3,\)"),
        ({"target": torch.tensor([0.0, 1.0])}, "integer dtype, got torch.float32"),
        ({"target": torch.tensor([0, 3])}, r"target 3 is out of range \[0, 3\)"),
        ({"target": torch.tensor([-1, 0])}, r"target -1 is out of range \[0, 3\)"),
        ({"alpha": torch.ones(2)}, "alpha has 2 weights but logits have 3 classes"),
        ({"alpha": torch.tensor([0.5, -0.1, 0.5])}, "alpha must be >= 0"),
        ({"gamma": -1.0}, "gamma must be >= 0, got -1.0"),
        ({"reduction": "avg"}, "reduction must be one of .*'mean'.*got 'avg'"),
    ],
)
def test_focal_loss_rejects_bad_arguments(kwargs: dict, message: str) -> None:
    args = {"logits": LOGITS, "target": TARGET} | kwargs
    logits, target = args.pop("logits"), args.pop("target")
    with pytest.raises(ValueError, match=message):
        focal_loss(logits, target, **args)


def test_module_and_weights_reject_bad_arguments() -> None:
    with pytest.raises(ValueError, match=r"gamma must be >= 0, got -0\.5"):
        FocalLoss(gamma=-0.5)
    with pytest.raises(ValueError, match="alpha must be >= 0"):
        FocalLoss(alpha=[1.0, -1.0])
    with pytest.raises(ValueError, match="reduction must be one of"):
        FocalLoss(reduction="batchmean")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="class 1 has count 0; every class needs >= 1 item"):
        class_balanced_alpha([5, 0, 3])
    with pytest.raises(ValueError, match=r"beta must be in \[0, 1\) or None, got 1.0"):
        class_balanced_alpha([5, 3], beta=1.0)
    with pytest.raises(ValueError, match="non-empty 1-D"):
        class_balanced_alpha([])
