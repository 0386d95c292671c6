"""The nodule mask head, test-time augmentation and calibration on tiny cubes: masks read from
``.npz`` (agreement in [0, 1], bad masks named), cut like their cubes; the mask head's shapes,
mask-guided pooling and mask loss; flips applied to cubes and masks alike; the symmetry views
and their average; Platt scaling fitted, bounded and stored once; old weights without a
calibration still load."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from abyssal.contracts.task import Shard
from abyssal.core.errors import ConfigError, DataError
from abyssal.solutions.nodule.config import NoduleConfig, NoduleDataConfig, NoduleModelConfig
from abyssal.solutions.nodule.data import NoduleData, prepare_nodule_data
from abyssal.solutions.nodule.evaluation import calibrate, fit_logistic, fit_platt, sigmoid
from abyssal.solutions.nodule.model import (
    SYMMETRIES,
    NoduleNet,
    build_nodule_model,
    mask_sizes,
    pool_levels,
    symmetric_views,
)
from abyssal.solutions.nodule.solution import NoduleSolution
from abyssal.solutions.nodule.task import ClassifyTask, CubeBatch, mask_loss
from abyssal.solutions.nodule.volumes import read_volume

pytest.importorskip("scipy.ndimage")


def cubes(n: int = 2, size: int = 16) -> torch.Tensor:
    return torch.rand(n, 1, size, size, size, generator=torch.Generator().manual_seed(3))


# -- masks read and cut -------------------------------------------------------------------------


def test_an_npz_mask_is_read_as_agreement_and_a_bad_one_is_named(tmp_path: Path) -> None:
    image = np.zeros((4, 6, 6), np.uint8)
    mask = np.zeros((4, 6, 6), np.uint8)
    mask[1:3, 2:4, 2:4] = 2
    mask[2, 3, 3] = 4  # four readers agree on one voxel
    np.savez(tmp_path / "n.npz", image=image, mask=mask)
    volume = read_volume(tmp_path / "n.npz")
    assert volume.mask is not None and volume.mask.max() == 1.0
    assert volume.mask[1, 2, 2] == 0.5 and volume.mask[0, 0, 0] == 0.0
    np.savez(tmp_path / "plain.npz", image=image)  # a mask is optional
    assert read_volume(tmp_path / "plain.npz").mask is None
    np.savez(tmp_path / "shape.npz", image=image, mask=mask[:2])
    with pytest.raises(DataError, match=r"'mask' has shape \(2, 6, 6\), the image \(4, 6, 6\)"):
        read_volume(tmp_path / "shape.npz")
    np.savez(tmp_path / "neg.npz", image=image, mask=-mask.astype(np.int16))
    with pytest.raises(DataError, match="'mask' holds negative"):
        read_volume(tmp_path / "neg.npz")


def sphere_set(folder: Path, n: int = 12) -> Path:
    """``n`` volumes with a bright ball off centre and its mask; two folds of patients."""
    volumes = folder / "volumes"
    volumes.mkdir(parents=True)
    rows = ["nodule_id,patient_id,label,fold"]
    z, y, x = np.mgrid[:12, :20, :20]
    for i in range(n):
        ball = (z - 6) ** 2 + (y - 10) ** 2 + (x - 13) ** 2 <= 9
        image = np.where(ball, 200, 20).astype(np.uint8)
        np.savez(volumes / f"n{i}.npz", image=image, mask=ball.astype(np.uint8) * 3)
        rows.append(f"n{i},p{i},{i % 2},{i % 3}")
    (folder / "nodules.csv").write_text("\n".join(rows) + "\n")
    return folder


def test_masks_are_cut_like_their_cubes_only_when_asked(tmp_path: Path) -> None:
    cfg = NoduleDataConfig(path=str(sphere_set(tmp_path)), cube=16, voxel_mm=1.0)
    plain = prepare_nodule_data(cfg, progress=False)
    assert plain.masks is None and not plain.has_mask.any()
    data = prepare_nodule_data(cfg, progress=False, masks=True)
    assert data.masks.shape == data.cubes.shape and data.has_mask.all()
    inside = data.masks[0] > 127
    assert inside.sum() > 0 and data.cubes[0][inside].mean() > 150  # the ball's voxels
    assert data.cubes[0][data.masks[0] == 0].mean() < 60
    assert data.fingerprint != plain.fingerprint and "with nodule masks" in data.description


def test_the_mask_head_needs_our_network_and_tta_a_group_size() -> None:
    with pytest.raises(ConfigError, match=r"model\.tta must be 1, 2, 4, 8 or 16"):
        NoduleModelConfig(tta=3)
    with pytest.raises(ConfigError, match=r"model\.segment needs model\.arch=fusion"):
        NoduleModelConfig(segment=True, arch="resnet18")


# -- the mask head ------------------------------------------------------------------------------


def test_the_mask_head_predicts_at_the_cubes_resolution_and_widens_the_pooled_features() -> None:
    plain, masked = NoduleNet(4, 2), NoduleNet(4, 2, segment=True)
    x = cubes()
    feats, none = plain.embed(x)
    assert none is None and feats.shape == (2, 384)
    feats, logits = masked.embed(x)
    assert feats.shape == (2, 384 + 192) and logits.shape == (2, 1, 16, 16, 16)
    out, mask_logits = masked(x, with_mask=True)
    assert out.shape == (2, 3) and mask_logits.shape == (2, 1, 16, 16, 16)
    assert masked(x).shape == (2, 3)


def test_a_version_with_a_half_resolution_mask_head_loads_and_predicts_as_saved() -> None:
    """Versions whose spec has no mask_grid were trained with the mask at S/2."""
    torch.manual_seed(0)
    old = NoduleNet(4, 2, segment=True, mask_grid="half").eval()
    cfg = NoduleModelConfig(width=4, segment=True)
    spec = {"attributes": ["a", "b"], "attribute_scale": []}
    loaded = build_nodule_model(cfg, spec)
    loaded.load_state_dict(old.state_dict())
    loaded.eval()
    x = cubes()
    _, logits = loaded.embed(x)
    assert logits is not None and logits.shape == (2, 1, 8, 8, 8)
    torch.testing.assert_close(loaded(x), old(x))
    new = build_nodule_model(cfg, {**spec, "mask_grid": "full"})
    assert new.embed(x)[1].shape == (2, 1, 16, 16, 16)


def test_mask_guided_pooling_is_the_mask_weighted_mean_of_each_level() -> None:
    level = torch.arange(2 * 3 * 8, dtype=torch.float32).view(2, 3, 2, 2, 2)
    mask = torch.zeros(2, 1, 4, 4, 4)
    mask[:, :, :2, :2, :2] = 1.0  # all weight on the first coarse voxel
    pooled = pool_levels([level], mask)
    assert pooled.shape == (2, 9)
    torch.testing.assert_close(pooled[:, 6:], level[:, :, 0, 0, 0])
    torch.testing.assert_close(pooled[:, :3], level.mean(dim=(2, 3, 4)))
    torch.testing.assert_close(pool_levels([level], torch.zeros(2, 1, 4, 4, 4))[:, 6:],
                               torch.zeros(2, 3))  # fmt: skip


def test_the_mask_loss_is_low_for_the_right_mask_and_skips_cubes_without_one() -> None:
    target = torch.zeros(2, 1, 8, 8, 8)
    target[:, :, 2:6, 2:6, 2:6] = 1.0
    right = (target * 2 - 1)[:, :, ::2, ::2, ::2] * 20  # half resolution, confident
    wrong = -right
    has = torch.tensor([True, True])
    assert mask_loss(right, target, has).item() < 0.01
    assert mask_loss(wrong, target, has).item() > 1.0
    none = torch.zeros(2, 1, 4, 4, 4, requires_grad=True)
    loss = mask_loss(none, target, torch.tensor([False, False]))
    assert loss.item() == 0.0
    loss.backward()
    assert none.grad is not None  # still in the graph
    one = mask_loss(wrong, target, torch.tensor([True, False]))
    assert one.item() == pytest.approx(mask_loss(wrong[:1], target[:1], has[:1]).item())


def test_flips_move_cubes_and_masks_together() -> None:
    g = torch.Generator().manual_seed(0)
    cube = torch.randint(0, 256, (3, 4, 6, 6), generator=g, dtype=torch.uint8)
    batch = CubeBatch(
        cube,
        torch.zeros(3, dtype=torch.int64),
        torch.zeros(3, 0),
        torch.tensor([[1, 0, 1, 0], [0, 1, 0, 1], [1, 1, 1, 1]]),
        masks=cube.clone(),  # the mask equal to the cube: it must stay equal
        has_mask=torch.ones(3, dtype=torch.bool),
    )
    x, m = batch.voxels_and_masks()
    assert x.shape == m.shape == (3, 1, 4, 6, 6)
    torch.testing.assert_close(x, m)
    torch.testing.assert_close(x, batch.voxels())
    assert not torch.equal(x[0, 0], cube[0].float() / 255)  # flipped


def test_the_classify_task_trains_the_mask_head_on_the_nodules_with_masks() -> None:
    rng = np.random.default_rng(0)
    n = 18
    masks = np.zeros((n, 16, 16, 16), np.uint8)
    masks[:, 5:11, 5:11, 5:11] = 255
    has = np.arange(n) % 3 != 0  # a third without a mask
    masks[~has] = 0
    data = NoduleData(
        rng.integers(0, 256, (n, 16, 16, 16), dtype=np.uint8),
        np.array([0, 1, -1] * 6),
        rng.uniform(1, 5, (n, 1)).astype(np.float32),
        ["diameter_mm"],
        [],
        {"train": np.arange(12), "val": np.arange(12, 15), "test": np.arange(15, 18)},
        masks=masks,
        has_mask=has,
    )
    cfg = NoduleConfig(
        data=NoduleDataConfig(path="unused", cube=16, batch_size=12),
        model=NoduleModelConfig(width=4, segment=True),
    )
    task = ClassifyTask(cfg, data, NoduleSolution().model_spec(cfg, data))
    model = task.build_model()
    batch = next(iter(task.train_batches(0, Shard())))
    assert batch.masks is not None and batch.has_mask.sum() == 8
    loss = task.training_loss(model, batch)
    loss.backward()
    assert torch.isfinite(loss) and model.mask_head[0].weight.grad.abs().sum() > 0
    without = NoduleConfig(data=cfg.data, model=NoduleModelConfig(width=4, segment=True))
    without.loss.segment_weight = 0.0
    plain = ClassifyTask(without, data, NoduleSolution().model_spec(without, data))
    assert torch.isfinite(plain.training_loss(plain.build_model(), batch))


# -- test-time augmentation ---------------------------------------------------------------------


def test_the_first_views_form_groups_and_the_average_is_invariant_under_them() -> None:
    x = cubes(1, 8)
    for count in (2, 4, 8, 16):
        views = [symmetric_views(x, i) for i in range(count)]
        for i in range(count):  # closed: a view of a view is a view
            again = symmetric_views(views[i], 1 if count == 2 else count - 1)
            assert any(torch.equal(again, v) for v in views), (count, i)
    assert len({(d, t) for d, t in SYMMETRIES}) == 16
    torch.manual_seed(0)
    net = NoduleNet(4, 2, tta=8).eval()
    with torch.no_grad():
        out = net(x)
        turned = net(x.transpose(3, 4).flip(4))  # an in-plane rotation by 90 degrees
        torch.testing.assert_close(out, turned, atol=1e-5, rtol=1e-4)
        with net.single_view():
            single = [net(symmetric_views(x, i)) for i in range(8)]
            plain = net(x)
        assert net.tta == 8
        logits = torch.stack([s[:, 0] for s in single]).mean(dim=0)
        torch.testing.assert_close(out[:, 0], logits, atol=1e-5, rtol=1e-4)
        assert not torch.allclose(plain, out)


@pytest.mark.parametrize("attributes", [2, 0])
def test_views_in_one_pass_equal_views_one_at_a_time(
    monkeypatch: pytest.MonkeyPatch, attributes: int
) -> None:
    from abyssal.solutions.nodule import model as nodule_model

    torch.manual_seed(0)
    net = NoduleNet(4, attributes, tta=8).eval()
    x = cubes(3, 8)
    with torch.no_grad():
        together = net(x)  # 3 cubes x 8 views: one pass
        monkeypatch.setattr(nodule_model, "VIEW_CUBES", 1)
        apart = net(x)  # eight passes
        monkeypatch.setattr(nodule_model, "VIEW_CUBES", 6)
        pairs = net(x)  # two views per pass
    assert together.shape == (3, 1 + attributes)
    torch.testing.assert_close(together, apart, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(pairs, apart, atol=1e-5, rtol=1e-4)


# -- calibration --------------------------------------------------------------------------------


def test_platt_scaling_recovers_a_known_map_and_stays_bounded() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(0, 3, 20000)
    y = (rng.random(20000) < sigmoid(0.5 * x - 1.0)).astype(int)
    a, b = fit_platt(x, y)
    assert a == pytest.approx(0.5, abs=0.03) and b == pytest.approx(-1.0, abs=0.06)
    assert fit_platt(x, np.zeros_like(y)) == (1.0, 0.0)  # one class: identity
    separable = np.array([-3.0, -2.0, 2.0, 3.0])
    a, b = fit_platt(separable, np.array([0, 0, 1, 1]))
    assert math.isfinite(a) and 0 < a < 100  # the ridge keeps it finite
    overconfident = rng.normal(0, 25, 300) + 30 * (2 * (y[:300]) - 1)
    a, _ = fit_platt(overconfident, y[:300])
    assert 0 < a < 1  # shrinks logits of +-30 (Newton alone diverged here)
    assert fit_platt(-x, y)[0] == 1.0  # a negative scale would flip the ranking: refused


def tiny_split_data() -> NoduleData:
    rng = np.random.default_rng(1)
    labels = np.array([0, 1] * 12)
    return NoduleData(
        rng.integers(0, 256, (24, 16, 16, 16), dtype=np.uint8),
        labels,
        np.zeros((24, 0), np.float32),
        [],
        [],
        {"train": np.arange(12), "val": np.arange(12, 18), "test": np.arange(18, 24)},
    )


def test_calibration_is_fitted_once_stored_and_old_weights_still_load() -> None:
    torch.manual_seed(0)
    net = NoduleNet(4, 0).eval()
    data = tiny_split_data()
    assert net.calibration.tolist() == [1.0, 0.0, 0.0]
    raw = net(torch.from_numpy(data.cubes[:4]).unsqueeze(1).float() / 255)[:, 0]
    a, b = calibrate(net, data, 8)
    assert net.calibration[2] == 1.0 and net.calibration[0].item() == pytest.approx(a, rel=1e-6)
    now = net(torch.from_numpy(data.cubes[:4]).unsqueeze(1).float() / 255)[:, 0]
    torch.testing.assert_close(now, raw * a + b)
    assert calibrate(net, data, 8) == pytest.approx((a, b))  # not fitted again
    old = {k: v for k, v in net.state_dict().items() if k != "calibration"}
    fresh = NoduleNet(4, 0)
    fresh.load_state_dict(old)  # strict: a version saved before calibration existed
    assert fresh.calibration.tolist() == [1.0, 0.0, 0.0]
    moved = NoduleNet(4, 0)
    moved.load_state_dict(net.state_dict())
    assert moved.calibration.tolist() == net.calibration.tolist()


def ball_logits(size: int, radius: float, centre: float | None = None) -> torch.Tensor:
    """Mask logits (1, 1, s, s, s) of a sharp ball: +20 inside, -20 outside."""
    c = (size - 1) / 2 if centre is None else centre
    z, y, x = torch.meshgrid(*[torch.arange(size, dtype=torch.float32)] * 3, indexing="ij")
    inside = (z - c) ** 2 + (y - c) ** 2 + (x - c) ** 2 <= radius**2
    return torch.where(inside, 20.0, -20.0).view(1, 1, size, size, size)


def test_mask_sizes_measure_a_ball_and_an_empty_mask() -> None:
    sizes = mask_sizes(torch.cat([ball_logits(24, 6.0), ball_logits(24, 3.0)])).exp()
    assert sizes.shape == (2, 2)
    assert sizes[0].tolist() == pytest.approx([12.0, 12.0], rel=0.06)  # diameter 2 r
    assert sizes[1].tolist() == pytest.approx([6.0, 6.0], rel=0.12)
    empty = mask_sizes(torch.full((1, 1, 8, 8, 8), -30.0)).exp()
    assert empty[0].tolist() == pytest.approx([0.5, 0.5])  # floored, finite


def test_logistic_fit_recovers_weights_of_extra_columns() -> None:
    rng = np.random.default_rng(0)
    x, size = rng.normal(0, 2, 20000), rng.normal(0, 1, (20000, 2))
    y = (rng.random(20000) < sigmoid(0.7 * x + 1.5 * size[:, 0] - 0.5)).astype(int)
    a, b, c = fit_logistic(x, size, y)
    assert a == pytest.approx(0.7, abs=0.05) and b == pytest.approx(-0.5, abs=0.08)
    assert c[0] == pytest.approx(1.5, abs=0.1) and abs(c[1]) < 0.1
    assert fit_logistic(-x, size, y)[0] == 1.0  # the logit's ranking must not flip
    a, b, c = fit_logistic(x, size, np.ones_like(y))
    assert (a, b, c.tolist()) == (1.0, 0.0, [0.0, 0.0])


def test_size_calibration_weighs_the_measured_size_only_with_trained_masks() -> None:
    torch.manual_seed(0)
    data = tiny_split_data()
    x = torch.from_numpy(data.cubes[:4]).unsqueeze(1).float() / 255
    net = NoduleNet(4, 0, segment=True).eval()
    logit, _, sizes, _ = net.raw_outputs(x)
    calibrate(net, data, 8)  # no masks: Platt alone
    assert net.size_weights.tolist() == [0.0, 0.0]
    data.masks = np.zeros_like(data.cubes)
    data.has_mask = np.ones(len(data.labels), dtype=bool)
    net = NoduleNet(4, 0, segment=True).eval()
    val = data.rows("val")
    with torch.no_grad():  # the head's threshold at the voxels' median: masks of many sizes
        cube_val = torch.from_numpy(data.cubes[val]).unsqueeze(1).float() / 255
        net.mask_head[-1].bias -= net.embed(cube_val)[1].median()
    with torch.no_grad():  # labels that the raw logit ranks, so its fitted scale is positive
        raw_val, *_ = net.raw_outputs(torch.from_numpy(data.cubes[val]).unsqueeze(1).float() / 255)
    data.labels[val] = (raw_val >= raw_val.median()).long().numpy()
    data.labels[val[0]] = 1 - data.labels[val[0]]  # not separable
    logit, _, sizes, _ = net.raw_outputs(x)
    a, b = calibrate(net, data, 8)
    assert sizes is not None and net.size_weights.abs().sum() > 0
    now = net(x)[:, 0]
    torch.testing.assert_close(now, logit * a + b + sizes @ net.size_weights)
    old = {k: v for k, v in net.state_dict().items() if k != "size_weights"}
    fresh = NoduleNet(4, 0, segment=True)
    fresh.load_state_dict(old)  # a version saved before size weights existed
    assert fresh.size_weights.tolist() == [0.0, 0.0]
    with torch.no_grad():
        viewed = NoduleNet(4, 0, segment=True, tta=4).eval()
        _, _, view_sizes, _ = viewed.raw_outputs(x, 4)
    assert view_sizes is not None and view_sizes.shape == (4, 2)
