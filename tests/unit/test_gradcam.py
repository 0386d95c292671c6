"""Grad-CAM on tiny hand-weighted conv nets (2-D images and 3-D volumes) whose answer is known: the
explained layer fires only where the input is bright, so the map must be hot there and zero
elsewhere."""

from __future__ import annotations

import math
from collections import OrderedDict

import pytest
import torch
from torch import nn

from abyssal.nn.gradcam import GradCAM, find_module, heat_in_boxes

H = W = 8
D = 6


def _net(stride: int = 1) -> nn.Sequential:
    """stem: relu(x - 0.5) on 4 channels; features: identity per channel; head: class 0 sums the
    channels, class 1 subtracts them. So features fire only on bright pixels (> 0.5)."""
    net = nn.Sequential(
        OrderedDict(
            stem=nn.Conv2d(1, 4, 3, padding=1),
            act=nn.ReLU(),
            features=nn.Conv2d(4, 4, 3, padding=1, stride=stride),
            pool=nn.AdaptiveAvgPool2d(1),
            flat=nn.Flatten(),
            head=nn.Linear(4, 2),
        )
    )
    with torch.no_grad():
        for conv in (net.stem, net.features):
            conv.weight.zero_()
            conv.bias.zero_()
        net.stem.weight[:, 0, 1, 1] = 1.0
        net.stem.bias.fill_(-0.5)
        for k in range(4):
            net.features.weight[k, k, 1, 1] = 1.0
        net.head.weight.copy_(torch.tensor([[1.0] * 4, [-1.0] * 4]))
        net.head.bias.zero_()
    return net.eval()


def _images() -> torch.Tensor:
    """Two 8x8 grey images: bright patch rows 2-3 / cols 5-6, and rows 5-7 / cols 0-1."""
    x = torch.zeros(2, 1, H, W)
    x[0, 0, 2:4, 5:7] = 1.0
    x[1, 0, 5:8, 0:2] = 0.9
    return x


def test_the_map_is_hot_only_where_the_layer_fires() -> None:
    cam, classes = GradCAM(_net(), "features")(_images())
    assert cam.shape == (2, H, W) and cam.dtype == torch.float32
    assert classes.tolist() == [0, 0] and classes.dtype == torch.int64
    bright = _images()[:, 0] > 0.5
    assert cam[bright].min() == 1.0  # uniform patch: every bright pixel is the maximum
    assert cam[~bright].abs().max() == 0.0
    assert heat_in_boxes(cam[0], [(5, 2, 7, 4)]) == pytest.approx(1.0)
    assert heat_in_boxes(cam[1], [(5, 2, 7, 4)]) == 0.0


def test_a_class_with_negative_evidence_gives_an_all_zero_map() -> None:
    cam, classes = GradCAM(_net(), "features")(_images(), classes=[1, 0])
    assert classes.tolist() == [1, 0]
    assert cam[0].abs().max() == 0.0  # relu of a negative sum: stays zero, no division by zero
    assert cam[1].max() == 1.0


def test_a_coarse_layer_is_upsampled_to_the_input_size() -> None:
    net = _net(stride=2)
    cam, _ = GradCAM(net, net.features)(_images())
    assert cam.shape == (2, H, W)
    assert cam.min() >= 0.0 and cam.max() == 1.0
    assert cam[0, 2:4, 4:8].sum() > cam[0, 4:8, 0:4].sum()  # heat stays near the bright patch


def test_a_call_leaves_the_model_as_it_found_it() -> None:
    net = _net().train()
    before = {name: p.detach().clone() for name, p in net.named_parameters()}
    GradCAM(net, "features")(_images())
    assert net.training
    assert len(net.features._forward_hooks) == 0
    assert all(len(m._forward_hooks) == 0 for m in net.modules())
    assert all(p.grad is None and p.requires_grad for p in net.parameters())
    assert all(torch.equal(p, before[name]) for name, p in net.named_parameters())


def test_hooks_are_removed_when_the_forward_fails() -> None:
    net = _net()
    with pytest.raises(RuntimeError):
        GradCAM(net, "features")(torch.zeros(1, 3, H, W))  # stem expects one channel
    assert len(net.features._forward_hooks) == 0


def test_works_under_no_grad_and_on_a_frozen_model() -> None:
    want, _ = GradCAM(_net(), "features")(_images())
    net = _net().requires_grad_(False)
    with torch.no_grad():
        cam, _ = GradCAM(net, "features")(_images())
    assert torch.equal(cam, want)
    assert not any(p.requires_grad for p in net.parameters())
    assert all(p.grad is None for p in net.parameters())


def test_bad_calls_raise_value_errors() -> None:
    cam = GradCAM(_net(), "features")
    with pytest.raises(ValueError, match="got 1 classes for a batch of 2"):
        cam(_images(), classes=[0])
    with pytest.raises(ValueError, match=r"out of range \[0, 2\)"):
        cam(_images(), classes=[0, 2])
    with pytest.raises(ValueError, match=r"inputs must be float \(B, C, H, W\)"):
        cam(torch.zeros(1, H, W))
    with pytest.raises(ValueError, match="not part of the model"):
        GradCAM(_net(), nn.Conv2d(1, 1, 1))
    with pytest.raises(ValueError, match="output must be a"):
        GradCAM(_net(), "flat")(_images())


def test_find_module_by_dotted_name() -> None:
    model = nn.Sequential(OrderedDict(backbone=_net()))
    assert find_module(model, "backbone.features") is model.backbone.features
    assert find_module(model, "") is model
    with pytest.raises(ValueError, match=r"no module 'backbone.layer4'.*'backbone' has: "):
        find_module(model, "backbone.layer4")
    with pytest.raises(ValueError, match=r"'backbone.stem', 'backbone.act', 'backbone.features'"):
        find_module(model, "backbone.layer4")
    with pytest.raises(ValueError, match=r"'backbone\.head' has no children"):
        find_module(model, "backbone.head.weight")


def test_heat_in_boxes_by_hand() -> None:
    cam = torch.arange(16.0).reshape(4, 4)  # total heat 0 + 1 + ... + 15 = 120
    assert heat_in_boxes(cam, [(0, 0, 2, 2)]) == pytest.approx((0 + 1 + 4 + 5) / 120)
    # two overlapping boxes: their union, cols 0-2 of rows 0-1, counted once
    union = heat_in_boxes(cam, [(0, 0, 2, 2), (1, 0, 3, 2)])
    assert union == pytest.approx((0 + 1 + 2 + 4 + 5 + 6) / 120)
    assert heat_in_boxes(cam, [(2, 2, 10, 10)]) == pytest.approx((10 + 11 + 14 + 15) / 120)
    assert heat_in_boxes(cam, [(0.7, 0, 2, 1)]) == pytest.approx(1 / 120)  # centre rule: col 1
    assert heat_in_boxes(cam, [(0, 0, 4, 4)]) == pytest.approx(1.0)
    assert heat_in_boxes(cam, [(-math.inf, 0, math.inf, 1)]) == pytest.approx(6 / 120)
    assert math.isnan(heat_in_boxes(cam, []))
    assert math.isnan(heat_in_boxes(torch.zeros(4, 4), [(0, 0, 2, 2)]))


def test_heat_in_boxes_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match=r"cam must be 2-D \(H, W\)"):
        heat_in_boxes(torch.ones(1, 4, 4), [(0, 0, 1, 1)])
    with pytest.raises(ValueError, match="non-negative"):
        heat_in_boxes(-torch.ones(4, 4), [(0, 0, 1, 1)])
    with pytest.raises(ValueError, match=r"box 1 .* has xmax < xmin"):
        heat_in_boxes(torch.ones(4, 4), [(0, 0, 1, 1), (3, 0, 1, 1)])
    with pytest.raises(ValueError, match=r"box 0 must be \(xmin, ymin, xmax, ymax\)"):
        heat_in_boxes(torch.ones(4, 4), [(0, 0, 1)])  # type: ignore[list-item]


def _net3d(stride: int = 1, num_classes: int = 2) -> nn.Sequential:
    """The 3-D twin of :func:`_net`: features fire only on bright voxels (> 0.5); logit 0 sums the
    channels, logit 1 (when there is one) subtracts them."""
    net = nn.Sequential(
        OrderedDict(
            stem=nn.Conv3d(1, 4, 3, padding=1),
            act=nn.ReLU(),
            features=nn.Conv3d(4, 4, 3, padding=1, stride=stride),
            pool=nn.AdaptiveAvgPool3d(1),
            flat=nn.Flatten(),
            head=nn.Linear(4, num_classes),
        )
    )
    with torch.no_grad():
        for conv in (net.stem, net.features):
            conv.weight.zero_()
            conv.bias.zero_()
        net.stem.weight[:, 0, 1, 1, 1] = 1.0
        net.stem.bias.fill_(-0.5)
        for k in range(4):
            net.features.weight[k, k, 1, 1, 1] = 1.0
        net.head.weight.copy_(torch.tensor([[1.0] * 4, [-1.0] * 4][:num_classes]))
        net.head.bias.zero_()
    return net.eval()


def _volumes() -> torch.Tensor:
    """Two 6x8x8 volumes, each with a planted bright blob: slices 1-2 / rows 2-3 / cols 5-6, and
    slices 3-5 / rows 5-7 / cols 0-1."""
    x = torch.zeros(2, 1, D, H, W)
    x[0, 0, 1:3, 2:4, 5:7] = 1.0
    x[1, 0, 3:6, 5:8, 0:2] = 0.9
    return x


def test_a_volume_map_is_hot_only_on_the_planted_blob() -> None:
    cam, classes = GradCAM(_net3d(), "features")(_volumes())
    assert cam.shape == (2, D, H, W) and cam.dtype == torch.float32
    assert classes.tolist() == [0, 0]
    assert cam.min() >= 0.0 and cam.max() <= 1.0
    bright = _volumes()[:, 0] > 0.5
    assert cam[bright].min() == 1.0
    assert cam[~bright].abs().max() == 0.0


def test_a_coarse_3d_layer_is_upsampled_trilinearly_and_stays_near_the_blob() -> None:
    net = _net3d(stride=2)
    cam, _ = GradCAM(net, "features")(_volumes())
    assert cam.shape == (2, D, H, W)
    assert cam.min() >= 0.0 and cam.max() == 1.0
    near = torch.zeros(D, H, W, dtype=torch.bool)
    near[0:4, 1:5, 4:8] = True  # the first blob grown by a voxel
    assert float(cam[0][near].sum()) > 0.6 * float(cam[0].sum())
    assert cam[0][near].max() == 1.0 and cam[0, 4:, :, :4].max() < 0.1
    smooth = torch.unique(cam[0]).numel()
    assert smooth > 3  # trilinear: a ramp of values, not nearest-neighbour blocks


def test_classes_pick_column_0_of_a_volume_classifier() -> None:
    single = _net3d(num_classes=1)  # (B, 1) logits: one nodule score
    cam, classes = GradCAM(single, "features")(_volumes(), classes=[0, 0])
    assert classes.tolist() == [0, 0] and cam.shape == (2, D, H, W)
    assert cam[_volumes()[:, 0] > 0.5].min() == 1.0
    # two columns: column 0 explained for both items, column 1 is negative evidence (all zero)
    cam, classes = GradCAM(_net3d(), "features")(_volumes(), classes=torch.tensor([0, 1]))
    assert classes.tolist() == [0, 1]
    assert cam[0].max() == 1.0 and cam[1].abs().max() == 0.0
    with pytest.raises(ValueError, match=r"out of range \[0, 1\)"):
        GradCAM(single, "features")(_volumes(), classes=[0, 1])


class _Squash(nn.Module):
    """Folds the depth of a (B, K, d, h, w) tensor into its rows: (B, K, d * h, w)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(2, 3)


class _Lift(nn.Module):
    """Adds a depth of one: (B, K, h, w) -> (B, K, 1, h, w)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.unsqueeze(2)


def test_mismatched_spatial_dims_raise_value_errors() -> None:
    squashed = nn.Sequential(_net3d()[:3], _Squash(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    with pytest.raises(
        ValueError, match=r"must be a \(B, K, d, h, w\) tensor for \(B, C, D, H, W\)"
    ):
        GradCAM(squashed, "1")(_volumes())
    lifted = nn.Sequential(_net()[:3], _Lift(), nn.AdaptiveAvgPool3d(1), nn.Flatten())
    with pytest.raises(ValueError, match=r"must be a \(B, K, h, w\) tensor for \(B, C, H, W\)"):
        GradCAM(lifted, "1")(_images())
    cam = GradCAM(_net3d(), "features")
    with pytest.raises(ValueError, match=r"inputs must be float .* or \(B, C, D, H, W\), got"):
        cam(torch.zeros(1, 1, 1, D, H, W))
    with pytest.raises(ValueError, match=r"got torch.int64 shape \(2, 1, 6, 8, 8\)"):
        cam(_volumes().long())
