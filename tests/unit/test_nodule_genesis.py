"""Models Genesis corruptions: shapes and ranges, seeds, each transform alone, and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from abyssal.core.errors import ConfigError
from abyssal.solutions.nodule.genesis import (
    Corruption,
    GenesisOptions,
    apply_corruptions,
    corrupt,
    plan_corruptions,
)

NONE = {"nonlinear_rate": 0.0, "local_rate": 0.0, "paint_rate": 0.0}


def only(**rates: float) -> GenesisOptions:
    return GenesisOptions(**{**NONE, **rates})  # type: ignore[arg-type]


def volumes(b: int = 3, side: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.rand(b, 1, side, side, side, generator=torch.Generator().manual_seed(seed))


def test_corrupt_keeps_shape_dtype_and_range() -> None:
    for dtype in (torch.float32, torch.float64):
        x = volumes().to(dtype)
        y = corrupt(x, seed=0, options=GenesisOptions(1.0, 1.0, 1.0))
        assert y.shape == x.shape and y.dtype == dtype and y.device == x.device
        assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0
        assert not torch.equal(y, x)


def test_the_seed_decides_the_corruption() -> None:
    x = volumes(4)
    assert torch.equal(corrupt(x, seed=3), corrupt(x, seed=3))
    assert not torch.equal(corrupt(x, seed=3), corrupt(x, seed=4))
    assert torch.equal(corrupt(x, seed=3)[:2], corrupt(x[:2], seed=3))  # item i: (seed, i)


def test_nothing_changes_when_every_rate_is_zero() -> None:
    x = volumes()
    y = corrupt(x, seed=0, options=only())
    assert torch.equal(y, x) and y.data_ptr() != x.data_ptr()  # a copy, not x itself


@pytest.mark.parametrize(
    "options",
    [only(nonlinear_rate=1.0), only(local_rate=1.0), only(paint_rate=1.0, inpaint_rate=1.0)],
    ids=["nonlinear", "local-shuffle", "in-painting"],
)
def test_each_transform_alone_changes_the_input(options: GenesisOptions) -> None:
    x = volumes()
    y = corrupt(x, seed=1, options=options)
    for i in range(x.shape[0]):  # every volume, since the rate is 1
        assert not torch.equal(y[i], x[i])


def test_local_shuffle_permutes_values_within_small_sub_cubes() -> None:
    x = volumes(2, side=24)
    options = only(local_rate=1.0)
    y = corrupt(x, seed=2, options=options)
    for i in range(2):  # the same multiset of values in each volume
        assert torch.equal(y[i].flatten().sort().values, x[i].flatten().sort().values)
    plan = plan_corruptions(tuple(x.shape), seed=2, options=options)[0]
    assert plan.shuffle is not None
    source = np.stack(np.unravel_index(plan.shuffle, (24, 24, 24)))  # (3, N) where from
    target = np.stack(np.unravel_index(np.arange(24**3), (24, 24, 24)))
    assert np.abs(source - target).max() <= 24 // 8 - 1  # moved only inside a sub-cube
    assert (plan.shuffle != np.arange(24**3)).mean() > 0.1


def test_nonlinear_curve_is_monotonic_and_keeps_the_ends() -> None:
    ramp = torch.linspace(0, 1, 16**3).reshape(1, 1, 16, 16, 16)
    directions = set()
    for seed in range(8):
        y = corrupt(ramp, seed=seed, options=only(nonlinear_rate=1.0)).flatten()
        steps = y[1:] - y[:-1]
        rising = bool((steps >= -1e-6).all())
        assert rising or bool((steps <= 1e-6).all())
        ends = (0.0, 1.0) if rising else (1.0, 0.0)
        assert (float(y[0]), float(y[-1])) == pytest.approx(ends, abs=1e-5)
        directions.add(rising)
    assert directions == {True, False}  # the reversed curve occurs too


def test_out_painting_keeps_an_inner_box_and_fills_the_rest_with_noise() -> None:
    x = volumes(2, side=21)
    options = only(paint_rate=1.0, inpaint_rate=0.0)
    y = corrupt(x, seed=5, options=options)
    for i, plan in enumerate(plan_corruptions(tuple(x.shape), seed=5, options=options)):
        assert plan.paint == "out" and plan.noise is not None
        (z, r, c), (d, h, w) = plan.boxes[0]
        assert min(z, r, c) >= 3 and max(z + d, r + h, c + w) <= 21 - 3  # inner
        assert all(21 - 12 <= side <= 21 - 9 for side in (d, h, w))  # 3/7 to 4/7 of 21
        kept = (slice(None), slice(z, z + d), slice(r, r + h), slice(c, c + w))
        assert torch.equal(y[i][kept], x[i][kept])
        outside = torch.as_tensor(plan.paint_mask((21, 21, 21)))
        assert outside.any() and not outside[z : z + d, r : r + h, c : c + w].any()
        assert torch.equal(y[i, 0][outside], torch.as_tensor(plan.noise)[outside])


def test_in_painting_fills_inner_boxes_with_noise() -> None:
    x = volumes(2, side=18)
    options = only(paint_rate=1.0, inpaint_rate=1.0)
    y = corrupt(x, seed=0, options=options)
    for i, plan in enumerate(plan_corruptions(tuple(x.shape), seed=0, options=options)):
        assert plan.paint == "in" and 1 <= len(plan.boxes) <= 5
        painted = torch.as_tensor(plan.paint_mask((18, 18, 18)))
        assert torch.equal(y[i, 0][~painted], x[i, 0][~painted])
        assert torch.equal(y[i, 0][painted], torch.as_tensor(plan.noise)[painted])


def test_apply_corruptions_takes_hand_made_plans() -> None:
    x = volumes(1)
    assert torch.equal(apply_corruptions(x, [Corruption()]), x)
    curve = np.linspace(1.0, 0.0, 1025)  # the plain inverse
    assert torch.allclose(apply_corruptions(x, [Corruption(curve=curve)]), 1 - x, atol=1e-6)
    with pytest.raises(ValueError, match="2 corruption plans for a batch of 1"):
        apply_corruptions(x, [Corruption(), Corruption()])


@pytest.mark.parametrize(
    ("x", "message"),
    [
        (torch.rand(2, 16, 16, 16), r"\(B, C, D, H, W\), got 4-D"),
        (torch.ones(1, 1, 8, 8, 8, dtype=torch.uint8), "floating point"),
        (torch.full((1, 1, 8, 8, 8), 2.0), r"\[0, 1\], got values from 2 to 2"),
        (torch.full((1, 1, 8, 8, 8), -1000.0), "window and scale"),
        (torch.full((1, 1, 8, 8, 8), float("nan")), r"\[0, 1\]"),
        (torch.empty(0, 1, 8, 8, 8), "empty"),
    ],
)
def test_bad_input_is_a_clear_value_error(x: torch.Tensor, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        corrupt(x, seed=0)


@pytest.mark.parametrize("field", ["nonlinear_rate", "local_rate", "paint_rate", "inpaint_rate"])
def test_rates_are_probabilities(field: str) -> None:
    with pytest.raises(ConfigError, match=f"{field} is a probability"):
        GenesisOptions(**{field: 1.5})  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="shuffle_blocks must be >= 1"):
        GenesisOptions(shuffle_blocks=0)


@pytest.mark.gpu
def test_the_same_seed_gives_the_same_corruption_on_the_gpu() -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    x = volumes(4, side=32)
    on_cpu = corrupt(x, seed=11)
    on_gpu = corrupt(x.cuda(), seed=11)
    assert on_gpu.device.type == "cuda"
    torch.testing.assert_close(on_gpu.cpu(), on_cpu, atol=1e-5, rtol=0)
