"""The defect network, its backbones and weights, heads, metrics, augmentation and SimCLR loss,
on tiny tensors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from abyssal.core.errors import ConfigError
from abyssal.nn.backbones import make_backbone
from abyssal.nn.metrics import classification_metrics, knn_accuracy
from abyssal.solutions.defect.augment import DRAWS, augment, augment_draws
from abyssal.solutions.defect.model import (
    DefectNet,
    class_means,
    load_backbone_weights,
    prototype_logits,
    read_weights_file,
)
from abyssal.solutions.defect.task import balanced_draw, nt_xent


def _net(channels: int = 1, classes: int = 3) -> DefectNet:
    backbone, features = make_backbone("resnet18", channels)
    return DefectNet(backbone, features, classes, channels=channels, dropout=0.1)


@pytest.mark.parametrize("channels", [1, 3])
def test_defect_net_maps_images_to_logits_and_embeddings(channels: int) -> None:
    net = _net(channels).eval()
    x = torch.rand(2, channels, 32, 32)
    assert net(x).shape == (2, 3) and net.embed(x).shape == (2, 512)
    assert net.backbone.conv1.in_channels == channels
    assert {n.split(".")[0] for n, _ in net.named_parameters()} == {"backbone", "head"}


def test_normalisation_is_inside_the_model() -> None:
    net = _net(3)
    x = torch.full((1, 3, 4, 4), 0.485)
    assert net.normalize(x)[0, 0].abs().max() < 1e-6  # the red channel's mean maps to 0


def test_unknown_backbone_names_choices() -> None:
    with pytest.raises(ConfigError, match=r"unknown model\.backbone 'resnet51'; torchvision has"):
        make_backbone("resnet51", 3)


def test_colour_weights_load_into_a_grey_backbone_summed(tmp_path) -> None:
    colour, grey = _net(3), _net(1)
    own = colour.state_dict().items()
    state = {k.removeprefix("backbone."): v for k, v in own if k.startswith("backbone.")}
    path = tmp_path / "rgb.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    loaded = load_backbone_weights(grey, read_weights_file(path), source=str(path))
    assert loaded == len(state)
    expected = colour.backbone.conv1.weight.sum(dim=1, keepdim=True)
    assert torch.equal(grey.backbone.conv1.weight, expected)
    assert torch.equal(grey.backbone.layer4[1].conv2.weight, colour.backbone.layer4[1].conv2.weight)


def test_weights_of_another_architecture_are_refused(tmp_path) -> None:
    backbone, features = make_backbone("resnet50", 1)
    other = DefectNet(backbone, features, 3, channels=1)
    with pytest.raises(ConfigError, match=r"has shape .* \(another architecture\?"):
        load_backbone_weights(_net(1), other.state_dict(), source="x")
    with pytest.raises(ConfigError, match=r"no tensor matches model\.backbone"):
        load_backbone_weights(_net(1), {"decoder.w": torch.zeros(1)}, source="x")
    bad = tmp_path / "bad.pth"
    bad.write_text("nope")
    with pytest.raises(ConfigError, match="is not a torch weights file"):
        read_weights_file(bad)


def test_prototype_head_picks_the_nearest_class_mean() -> None:
    z = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.8]])
    means = class_means(z, torch.tensor([0, 0, 1, 1]), 2)
    scores = prototype_logits(torch.tensor([[0.8, 0.3], [0.2, 0.9]]), means)
    assert scores.argmax(dim=1).tolist() == [0, 1]
    with pytest.raises(ValueError, match="class 2 has no embedding"):
        class_means(z, torch.tensor([0, 0, 1, 1]), 3)


def test_classification_metrics_by_hand() -> None:
    labels = np.array([0, 0, 1, 1, 2])
    predicted = np.array([0, 1, 1, 1, 0])
    m = classification_metrics(labels, np.eye(3)[predicted], ["a", "b", "c"])
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["recall_a"] == 0.5 and m["recall_b"] == 1.0 and m["recall_c"] == 0.0
    f1_a, f1_b, f1_c = 2 * 0.5 * 0.5 / 1.0, 2 * (2 / 3) * 1 / (2 / 3 + 1), 0.0
    assert m["macro_f1"] == pytest.approx((f1_a + f1_b + f1_c) / 3)


def test_knn_accuracy_leaves_each_item_out() -> None:
    z = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9], [1.0, 0.05]])
    # by cosine: items 0, 1 and 4 each find one of the others of the three (0 -> 4, 1 -> 4,
    # 4 -> 0), of which only 4's label differs: 0 and 1 miss, 4 misses; 2 and 3 find each other
    assert knn_accuracy(z, np.array([0, 0, 1, 1, 1])) == pytest.approx(2 / 5)
    assert knn_accuracy(z, np.array([0, 0, 1, 1, 0])) == pytest.approx(1.0)
    assert math.isnan(knn_accuracy(z[:1], np.array([0])))


def test_augment_keeps_shape_and_range_and_identity_draws_change_nothing() -> None:
    x = torch.rand(3, 1, 16, 16)
    draws = augment_draws(3, torch.Generator().manual_seed(0))
    out = augment(x, draws)
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    # full-size crop, centred, no flip (draw >= 0.5), no turn, no brightness/contrast change
    same = torch.tensor([[1.0 - 1e-9, 0.5, 0.5, 0.5, 0.75, 0.0, 0.5, 0.5]]).repeat(3, 1)
    assert same.shape[1] == DRAWS
    assert torch.allclose(augment(x, same, min_scale=1.0), x, atol=1e-5)


def test_nt_xent_is_low_for_matching_views_and_high_for_swapped_ones() -> None:
    a = torch.eye(4)
    good = nt_xent(torch.cat([a, a]), temperature=0.1)
    bad = nt_xent(torch.cat([a, a.roll(1, dims=0)]), temperature=0.1)
    assert good < 0.01 and bad > 5.0
    # by hand: each row's positive has similarity 1/t, its 6 negatives 0
    expected = -math.log(math.exp(10) / (math.exp(10) + 6))
    assert good.item() == pytest.approx(expected, abs=1e-6)


def test_balanced_draw_gives_every_class_about_the_same_share() -> None:
    labels = np.array([0] * 90 + [1] * 10)
    drawn = balanced_draw(labels, np.arange(100), seed=0)
    share = (labels[drawn] == 1).mean()
    assert len(drawn) == 100 and 0.35 < share < 0.65


def test_model_is_a_module_the_optimizers_see_by_group() -> None:
    net = _net(1)
    assert isinstance(net.head, nn.Linear) and net.head.out_features == 3
