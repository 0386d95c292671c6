"""The nodule networks, their losses and their metrics on tiny 16^3 cubes: output shapes with
and without knowledge, fusion and restoration; attribute standardisation; encoder transfer; the
knowledge-guided malignancy head; the loss's masking; augmentation; AUROC and operating points
against hand-computed values."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from abyssal.contracts.task import Shard
from abyssal.core.errors import ConfigError
from abyssal.solutions.nodule.config import NoduleConfig, NoduleDataConfig, NoduleModelConfig
from abyssal.solutions.nodule.data import NoduleData
from abyssal.solutions.nodule.evaluation import (
    auroc,
    operating_metrics,
    rates,
    sensitivity_threshold,
    youden_threshold,
)
from abyssal.solutions.nodule.model import (
    AttributeScale,
    NoduleNet,
    attribute_scale,
    encoder_state,
    load_encoder,
)
from abyssal.solutions.nodule.solution import NoduleSolution
from abyssal.solutions.nodule.task import (
    ClassifyTask,
    CubeBatch,
    GenesisTask,
    augment,
    augment_draws,
    nodule_loss,
)


def cubes(b: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.rand(b, 1, 16, 16, 16, generator=torch.Generator().manual_seed(seed))


# -- the networks -------------------------------------------------------------------------------


def test_outputs_are_logit_plus_attributes_with_knowledge_and_logit_alone_without() -> None:
    torch.manual_seed(0)
    net = NoduleNet(4, 3).eval()
    assert net(cubes()).shape == (2, 4)
    assert net.malignancy_head[0].in_features == net.encoder.pooled_size + 3
    plain = NoduleNet(4, 3, knowledge=False).eval()
    assert plain(cubes()).shape == (2, 1) and plain.attribute_head is None
    assert NoduleNet(4, 0).eval()(cubes()).shape == (2, 1)


def test_fusion_pools_three_levels_and_without_it_one() -> None:
    fused, last = NoduleNet(4, 2, fusion=True).eval(), NoduleNet(4, 2, fusion=False).eval()
    assert fused.encoder.pooled_size == 2 * 64 * 3  # mean and max of 3 levels of 64 channels
    assert last.encoder.pooled_size == 2 * 64
    assert fused.embed(cubes())[0].shape == (2, 384) and last.embed(cubes())[0].shape == (2, 128)
    assert fused(cubes()).shape == last(cubes()).shape == (2, 3)
    levels, stem = fused.encoder(cubes())
    assert [tuple(v.shape[2:]) for v in levels] == [(8, 8, 8), (4, 4, 4), (2, 2, 2)]
    assert stem.shape == (2, 4, 16, 16, 16)


def test_the_resnet18_baseline_takes_one_channel_cubes() -> None:
    pytest.importorskip("torchvision")
    net = NoduleNet(4, 2, arch="resnet18").eval()
    out = net(cubes())
    assert out.shape == (2, 3) and torch.isfinite(out).all()
    assert net.cam_layer() is net.encoder.layer4


def test_restoration_mode_returns_a_cube_in_zero_one() -> None:
    net = NoduleNet(4, restore=True).eval()
    out = net(cubes())
    assert out.shape == (2, 1, 16, 16, 16)
    assert out.min() >= 0 and out.max() <= 1
    assert not hasattr(net, "malignancy_head")


def scale_two() -> AttributeScale:
    # spiculation: centre 3, spread 1.5, kept within [1, 5]; diameter: log scale, [2, 40] mm
    return AttributeScale([3.0, math.log(8.0)], [1.5, 0.5], [False, True], [1.0, 2.0], [5.0, 40.0])


def test_attribute_scale_standardises_and_restores() -> None:
    scale = scale_two().train()
    values = torch.tensor([[2.0, 10.0], [4.5, 6.0]])
    z = scale.standardise(values)
    expected = [[-2 / 3, math.log(10 / 8) / 0.5], [1.0, math.log(6 / 8) / 0.5]]
    torch.testing.assert_close(z, torch.tensor(expected))
    torch.testing.assert_close(scale.restore(z), values)


def test_restored_attributes_are_clipped_only_in_eval_mode() -> None:
    scale = scale_two()
    z = torch.tensor([[4.0, 10.0], [-4.0, -10.0]])  # far outside both ranges
    raw = scale.train().restore(z)
    torch.testing.assert_close(raw[:, 0], torch.tensor([9.0, -3.0]))  # 3 +- 4 * 1.5
    assert raw[0, 1] > 40 and raw[1, 1] < 2
    torch.testing.assert_close(scale.eval().restore(z), torch.tensor([[5.0, 40.0], [1.0, 2.0]]))
    inside = torch.tensor([[0.5, 0.2]])
    torch.testing.assert_close(scale.eval().restore(inside), scale.train().restore(inside))


def test_attribute_scale_ignores_missing_values() -> None:
    nan = np.nan
    values = np.array(
        [[1.0, 4.0, 2.0, nan], [nan, 16.0, 2.0, nan], [5.0, nan, 2.0, nan], [3.0, 8.0, 2.0, nan]]
    )
    center, scale, log, low, high = attribute_scale(
        values, ["spiculation", "diameter_mm", "margin", "texture"]
    )
    assert center[0] == pytest.approx(3.0) and scale[0] == pytest.approx(np.std([1, 5, 3]))
    assert center[1] == pytest.approx(math.log(8.0))  # mean log of 4, 8, 16
    assert scale[1] == pytest.approx(np.std(np.log([4, 8, 16])))
    assert scale[2] == 1.0  # constant: no division by zero
    assert (center[3], scale[3]) == (0.0, 1.0)  # never seen
    assert log == [False, True, False, False]
    assert low[:3] == pytest.approx([1.0, 4.0 / 1.5, 2.0]) and high[:3] == pytest.approx([5, 24, 2])
    assert all(math.isfinite(v) for v in [*center, *scale, *low, *high])


def randomise(net: torch.nn.Module, seed: int) -> None:
    """Every parameter and batch-norm statistic of ``net`` set to fresh random values."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in net.state_dict().items():
            if tensor.is_floating_point():
                tensor.copy_(torch.rand(tensor.shape, generator=g) + 0.5 * ("var" in name))


def test_load_encoder_copies_a_restoration_encoder_into_a_classifier() -> None:
    genesis, classifier = NoduleNet(4, restore=True), NoduleNet(4, 2)
    randomise(genesis, 1)
    source = genesis.state_dict()
    copied = load_encoder(classifier, source, "nodule-genesis:1")
    mine = encoder_state(classifier.state_dict())
    encoder = [k for k in encoder_state(source) if k.startswith("encoder.")]
    assert copied == len(mine) and copied == len(encoder)  # no decoder without segment
    for key, value in mine.items():
        torch.testing.assert_close(value, source[key], msg=key)
    assert not any(k.startswith("decoder.") for k in classifier.state_dict())


def test_load_encoder_keeps_its_own_fusion_layers_when_they_do_not_fit() -> None:
    genesis, classifier = NoduleNet(4, restore=True), NoduleNet(4, 2, fusion=False)
    randomise(genesis, 2)
    before = classifier.state_dict()["encoder.lateral.0.weight"].clone()
    load_encoder(classifier, genesis.state_dict(), "g:1")
    after = classifier.state_dict()
    torch.testing.assert_close(after["encoder.stem.0.weight"], genesis.encoder.stem[0].weight)
    torch.testing.assert_close(after["encoder.lateral.0.weight"], before)


def test_load_encoder_refuses_an_encoder_of_another_width() -> None:
    wide = NoduleNet(8, restore=True).state_dict()
    classifier = NoduleNet(4, 2)
    kept = {k: v.clone() for k, v in classifier.state_dict().items()}
    with pytest.raises(ConfigError, match=r"model.pretrained=nodule-genesis:3: .*does not fit"):
        load_encoder(classifier, wide, "nodule-genesis:3")
    with pytest.raises(ConfigError, match=r"missing \['encoder\.stages"):
        load_encoder(classifier, {"decoder.0.weight": torch.zeros(1)}, "empty.pt")
    for key, value in classifier.state_dict().items():
        assert torch.equal(value, kept[key]), key  # nothing copied before refusing


def test_the_malignancy_logit_reads_the_predicted_attributes() -> None:
    torch.manual_seed(0)
    net = NoduleNet(4, 3, knowledge=True).eval()
    x = cubes()
    feats, no_mask = net.embed(x)
    assert no_mask is None
    z = net.attribute_head(feats)
    logit, z_out, _ = net.heads(x)
    torch.testing.assert_close(z_out, z)
    torch.testing.assert_close(logit, net.malignancy_head(torch.cat([feats, z], 1)).squeeze(1))
    with torch.no_grad():
        net.attribute_head[-1].weight.add_(0.5)
    moved = net(x)[:, 0]
    assert not torch.allclose(moved, logit, atol=1e-4)  # same image, other attributes: other logit
    torch.testing.assert_close(net.embed(x)[0], feats)


# -- losses and augmentation --------------------------------------------------------------------


def batch_of(labels: list[int], attributes: list[list[float]], draws: int = 0) -> CubeBatch:
    n = len(labels)
    return CubeBatch(
        torch.zeros(n, 2, 2, 2, dtype=torch.uint8),
        torch.tensor(labels),
        torch.tensor(attributes, dtype=torch.float32),
        torch.zeros(n, draws, dtype=torch.int64),
    )


def test_reader_scores_are_the_soft_target_where_known_rated_3_nodules_included() -> None:
    model = SimpleNamespace(scale=AttributeScale([], [], []))
    batch = batch_of([1, 0, -1, -1], [[], [], [], []])
    batch.shares = torch.tensor([0.75, math.nan, 0.5, math.nan])
    out = torch.tensor([[0.0], [0.0], [2.0], [9.0]], requires_grad=True)
    loss = nodule_loss(model, out, batch, positive_weight=2.0, attribute_weight=0.0)

    def bce(logit: float, target: float, pos: float = 2.0) -> float:
        p = 1 / (1 + math.exp(-logit))
        return -(pos * target * math.log(p) + (1 - target) * math.log(1 - p))

    # rows 0 (share), 1 (label: no share) and 2 (rated 3, share); row 3 has neither
    expected = (bce(0.0, 0.75) + bce(0.0, 0.0) + bce(2.0, 0.5)) / 3
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()
    assert out.grad[3, 0] == 0 and out.grad[2, 0] != 0
    batch.shares = None  # hard labels: as before
    hard = nodule_loss(model, out.detach(), batch, 2.0, 0.0).item()
    assert hard == pytest.approx((bce(0.0, 1.0) + bce(0.0, 0.0)) / 2, rel=1e-6)


def test_nodule_loss_skips_unlabelled_rows_and_missing_attributes() -> None:
    model = SimpleNamespace(scale=AttributeScale([0.0], [1.0], [False]))
    batch = batch_of([1, 0, -1], [[3.0], [math.nan], [7.0]])
    out = torch.tensor([[0.0, 1.0], [0.0, 5.0], [5.0, 7.0]], requires_grad=True)
    loss = nodule_loss(model, out, batch, positive_weight=2.0, attribute_weight=0.5)
    # BCE at logit 0 is ln 2, the malignant row weighted 2, over 2 labelled rows; MSE (4 + 0) / 2
    assert loss.item() == pytest.approx(1.5 * math.log(2) + 0.5 * 2.0, rel=1e-6)
    loss.backward()
    assert torch.isfinite(out.grad).all()
    assert out.grad[2, 0] == 0 and out.grad[1, 1] == 0  # unlabelled logit, missing attribute
    other = out.detach().clone()
    other[2, 0], other[1, 1] = -40.0, 1e4
    assert nodule_loss(model, other, batch, 2.0, 0.5).item() == pytest.approx(loss.item())
    assert nodule_loss(model, other[:, :1], batch, 2.0, 0.5).item() == pytest.approx(
        1.5 * math.log(2)
    )


def test_nodule_loss_is_finite_without_labels_or_known_attributes() -> None:
    model = SimpleNamespace(scale=AttributeScale([2.0], [0.5], [True]))
    batch = batch_of([-1, -1], [[math.nan], [math.nan]])
    out = torch.tensor([[3.0, 0.0], [-2.0, -5.0]])  # even a negative "diameter"
    assert nodule_loss(model, out, batch, 1.0, 1.0).item() == 0.0


def test_augment_is_the_identity_without_draws_and_flips_where_drawn() -> None:
    x = torch.rand(4, 1, 3, 5, 5)
    assert torch.equal(augment(x, torch.zeros(4, 4, dtype=torch.int64)), x)
    draws = torch.tensor([[1, 0, 0, 0], [0, 1, 0, 0], [1, 0, 1, 0], [0, 0, 0, 1]])
    out = augment(x, draws)
    assert torch.equal(out[0], torch.flip(x[0], dims=(1,)))  # z
    assert torch.equal(out[1], torch.flip(x[1], dims=(2,)))  # y
    assert torch.equal(out[2], torch.flip(x[2], dims=(1, 3)))  # z and x
    assert torch.equal(out[3], x[3].transpose(2, 3))  # y <-> x


def test_a_quarter_turn_and_a_shift_move_the_voxels_where_they_should() -> None:
    x = torch.zeros(1, 2, 3, 8, 8)
    x[0, :, :, 1, 5] = 1.0  # a line along z at y=1, x=5 (both channels)
    flips = torch.zeros(1, 4)
    same = augment(x, torch.cat([flips, torch.zeros(1, 3)], dim=1))
    torch.testing.assert_close(same, x)  # angle 0, no shift: the identity
    quarter = augment(x, torch.cat([flips, torch.tensor([[math.pi / 2, 0.0, 0.0]])], dim=1))
    expected = torch.rot90(x, k=1, dims=(3, 4))  # a turn in the (y, x) plane
    expected_other = torch.rot90(x, k=-1, dims=(3, 4))
    assert torch.allclose(quarter, expected, atol=1e-5) or torch.allclose(
        quarter, expected_other, atol=1e-5
    )
    shifted = augment(x, torch.cat([flips, torch.tensor([[0.0, 0.0, 0.25]])], dim=1))
    # +0.25 normalised = one voxel of eight: the sample comes from x + 1, so the line moves to 4
    assert shifted[0, 0, 0, 1, 4] == pytest.approx(1.0) and shifted[0, 0, 0, 1, 5] == 0.0
    torch.testing.assert_close(shifted[0, 0], shifted[0, 1])  # masks move with the image


def test_augment_draws_follow_the_data_settings() -> None:
    g = torch.Generator().manual_seed(0)
    assert augment_draws(5, NoduleDataConfig(augment=False), g).shape == (5, 0)
    flips_only = augment_draws(5, NoduleDataConfig(rotate=False, shift_mm=0.0), g)
    assert flips_only.shape == (5, 4) and set(flips_only.unique().tolist()) <= {0.0, 1.0}
    draws = augment_draws(
        2000, NoduleDataConfig(cube=32, voxel_mm=1.25, rotate=True, shift_mm=2.0), g
    )
    assert augment_draws(5, NoduleDataConfig(), g).shape == (5, 4)  # default: flips only
    assert draws.shape == (2000, 7)
    assert draws[:, 4].min() >= 0 and draws[:, 4].max() < 2 * math.pi
    assert draws[:, 5:].abs().max() <= 2.0 / 20.0  # 2 mm of a 20 mm half-cube
    with pytest.raises(ConfigError, match=r"data\.shift_mm"):
        NoduleDataConfig(cube=16, voxel_mm=1.0, shift_mm=8.0)


def test_batch_voxels_scale_to_zero_one() -> None:
    batch = batch_of([0], [[1.0]])
    batch.cubes[0, 1, 1, 1] = 255
    x = batch.voxels()
    assert x.shape == (1, 1, 2, 2, 2) and x.dtype == torch.float32
    assert x.max() == 1.0 and x.sum() == 1.0


def tiny_data(seed: int = 0) -> NoduleData:
    """24 random 16^3 cubes: train 12 (3 malignant, 6 benign, 3 unlabelled), val 6, test 6."""
    rng = np.random.default_rng(seed)
    labels = np.array([0, 0, 1, 0, 1, -1, 0, 0, 1, 0, -1, -1] + [0, 1, 0, 1, 0, 1] * 2)
    attributes = rng.uniform(1, 5, (24, 2)).astype(np.float32)
    attributes[::5, 0] = np.nan
    splits = {"train": np.arange(12), "val": np.arange(12, 18), "test": np.arange(18, 24)}
    return NoduleData(
        rng.integers(0, 256, (24, 16, 16, 16), dtype=np.uint8),
        labels,
        attributes,
        ["spiculation", "diameter_mm"],
        [],
        splits,
    )


def tiny_config(**model: object) -> NoduleConfig:
    return NoduleConfig(
        data=NoduleDataConfig(path="unused", cube=16, batch_size=5),
        model=NoduleModelConfig(width=4, **model),
    )


def test_the_classify_task_balances_classes_and_trains_attributes_on_unlabelled_rows() -> None:
    cfg, data = tiny_config(), tiny_data()
    spec = NoduleSolution().model_spec(cfg, data)
    assert spec["attributes"] == ["spiculation", "diameter_mm"] and spec["cube"] == 16
    task = ClassifyTask(cfg, data, spec)
    assert task.positive_weight == 2.0  # 6 benign / 3 malignant in training
    batches = task.train_batches(0, Shard())
    rows = torch.cat([b.labels for b in batches])
    assert len(batches) == 3 and len(rows) == 12 and (rows == -1).sum() == 3
    model = task.build_model()
    assert torch.isfinite(task.training_loss(model, next(iter(batches))))
    blind = ClassifyTask(tiny_config(knowledge=False), data, spec | {"attributes": []})
    assert len(torch.cat([b.labels for b in blind.train_batches(0, Shard())])) == 9
    out = task.validation_step(model.eval(), next(iter(task.val_batches(Shard()))))
    assert out["probability"].shape == (6,) and out["probability"].min() >= 0


def test_with_reader_scores_batches_carry_shares_and_rated_3_nodules_train() -> None:
    cfg, data = tiny_config(knowledge=False), tiny_data()
    data.shares = np.linspace(0, 1, len(data.labels)).astype(np.float32)
    spec = NoduleSolution().model_spec(cfg, data)
    plain = ClassifyTask(cfg, data, spec)
    assert all(b.shares is None for b in plain.train_batches(0, Shard()))
    cfg.loss.reader_scores = True
    task = ClassifyTask(cfg, data, spec)
    batches = list(task.train_batches(0, Shard()))
    labels = torch.cat([b.labels for b in batches])
    assert len(labels) == 12 and (labels == -1).sum() == 3  # rated-3 rows join the malignancy loss
    rows = np.sort(data.rows("train"))
    shares = torch.cat([b.shares for b in batches]).sort().values.numpy()
    np.testing.assert_allclose(shares, np.sort(data.shares[rows]))
    model = task.build_model()
    assert torch.isfinite(task.training_loss(model, batches[0]))


def test_the_genesis_task_restores_every_training_cube() -> None:
    cfg, data = tiny_config(), tiny_data()
    cfg.objective = "genesis"
    task = GenesisTask(cfg, data, NoduleSolution().model_spec(cfg, data))
    model = task.build_model()
    assert model.restore
    batch = next(iter(task.train_batches(0, Shard())))
    assert torch.isfinite(task.training_loss(model, batch))
    error = task.validation_step(model.eval(), next(iter(task.val_batches(Shard()))))["error"]
    assert error.shape == (6,) and (error >= 0).all()


def test_genesis_batches_carry_their_corruptions_drawn_from_the_batch_seed() -> None:
    from abyssal.solutions.nodule.genesis import GenesisOptions, corrupt

    cfg, data = tiny_config(), tiny_data()
    cfg.objective = "genesis"
    task = GenesisTask(cfg, data, NoduleSolution().model_spec(cfg, data))
    batch = next(iter(task.train_batches(0, Shard())))
    assert batch.plans is not None and len(batch.plans) == len(batch)
    moved = batch.to("cpu")
    assert moved.plans is batch.plans  # the plans travel with the batch
    noisy, clean = task._corrupted(batch)
    g = cfg.genesis
    options = GenesisOptions(
        nonlinear_rate=g.nonlinear, local_rate=g.local_shuffle, paint_rate=g.painting
    )
    assert torch.equal(noisy, corrupt(clean, batch.seed, options))  # as if drawn in the loss
    batch.plans = None  # a batch made elsewhere gets the same corruptions from its seed
    assert torch.equal(task._corrupted(batch)[0], noisy)


# -- metrics ------------------------------------------------------------------------------------


def pairwise_auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    pos, neg = scores[labels == 1], scores[labels == 0]
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(wins / (len(pos) * len(neg)))


def test_auroc_counts_ties_half_and_ignores_unlabelled_rows() -> None:
    assert auroc([0, 0, 1, 1], [0.1, 0.6, 0.4, 0.9]) == 0.75
    # positives 0.5, 0.8 against negatives 0.5, 0.2: 1 tie (half) and 3 wins of 4 pairs
    assert auroc([0, 1, 0, 1], [0.5, 0.5, 0.2, 0.8]) == 0.875
    assert auroc([0, 1, -1, 0, 1, -1], [0.5, 0.5, 0.0, 0.2, 0.8, 1.0]) == 0.875
    assert auroc([1, 1, 0], [0.9, 0.9, 0.9]) == 0.5
    rng = np.random.default_rng(0)
    labels, scores = rng.integers(0, 2, 200), rng.integers(0, 10, 200) / 10  # many ties
    assert auroc(labels, scores) == pytest.approx(pairwise_auroc(labels, scores))


def test_auroc_is_nan_with_one_class() -> None:
    assert math.isnan(auroc([1, 1, -1], [0.2, 0.9, 0.1]))
    assert math.isnan(auroc([], []))


LABELS = np.array([0, 0, 1, 0, 1, 1, 1])
SCORES = np.array([0.1, 0.2, 0.4, 0.45, 0.6, 0.7, 0.9])


def test_youden_threshold_maximises_sensitivity_plus_specificity() -> None:
    # J at 0.4: 1 + 2/3 - 1; at 0.45: 3/4 + 2/3 - 1; at 0.6: 3/4 + 1 - 1 (the best); at 0.7: 1/2
    assert youden_threshold(LABELS, SCORES) == 0.6
    assert rates(LABELS, SCORES, 0.6) == (0.75, 1.0)


def test_sensitivity_threshold_is_the_highest_that_keeps_95_percent() -> None:
    assert sensitivity_threshold(LABELS, SCORES) == 0.4  # 4 positives: none may be missed
    positives = np.linspace(0.3, 0.99, 20)  # 20 positives: one may be missed
    labels = np.r_[np.ones(20, int), np.zeros(5, int)]
    scores = np.r_[positives, [0.1, 0.2, 0.32, 0.5, 0.6]]
    t = sensitivity_threshold(labels, scores)
    assert t == pytest.approx(positives[1]) and rates(labels, scores, t)[0] == 0.95
    above = np.nextafter(t, 1.0)
    assert rates(labels, scores, above)[0] < 0.95
    assert sensitivity_threshold(np.zeros(3, int), np.ones(3)) == 0.5  # no positives: default


def test_operating_metrics_apply_validation_thresholds_to_the_test_split() -> None:
    test = (np.array([0, 1, 1, 0]), np.array([0.65, 0.62, 0.3, 0.1]))
    out = operating_metrics((LABELS, SCORES), test)
    points, splits = ("youden", "sens95"), ("val", "test")
    expected = {f"threshold_{p}" for p in points} | {
        f"{s}_{m}_{p}" for s in splits for m in ("sensitivity", "specificity") for p in points
    }
    assert set(out) == expected
    assert out["threshold_youden"] == 0.6 and out["threshold_sens95"] == 0.4
    assert out["val_sensitivity_youden"] == 0.75 and out["val_specificity_youden"] == 1.0
    assert out["test_sensitivity_youden"] == 0.5 and out["test_specificity_youden"] == 0.5
    assert out["test_sensitivity_sens95"] == 0.5 and out["test_specificity_sens95"] == 0.5
