"""Nodule saliency pictures on 16x16x16 cubes: the documented layout's exact size, which slice each
panel shows (planted bright voxels), the hottest pixel where the cam peaks, hand-computed blend
colours, atomic writes, the errors on bad input and the heat-in-mask share."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from abyssal.solutions.nodule.explain import (
    LABEL_HEIGHT,
    PANEL_GAP,
    TITLE_HEIGHT,
    heat_in_mask,
    render_saliency,
    saliency_slices,
)

N = 16  # cube side
# bright voxels (z, y, x), each on exactly one axial slice shown and on a centre line (y or x = 8)
AXIAL, CORONAL, SAGITTAL = (8, 3, 4), (2, 8, 13), (14, 1, 8)
PEAK = (8, 5, 11)  # where the test cam is hottest


def _volume() -> np.ndarray:
    vol = np.full((N, N, N), 0.25)
    for voxel in (AXIAL, CORONAL, SAGITTAL):
        vol[voxel] = 1.0
    return vol


def _cam() -> np.ndarray:
    """A Gaussian blob of heat centred on PEAK, 1 there."""
    z, y, x = np.indices((N, N, N))
    dist2 = (z - PEAK[0]) ** 2 + (y - PEAK[1]) ** 2 + (x - PEAK[2]) ** 2
    return np.exp(-dist2 / 8.0)


def _open(path: Path) -> np.ndarray:
    image_mod = pytest.importorskip("PIL.Image")
    with image_mod.open(path) as im:
        assert im.format == "PNG" and im.mode == "RGB"
        return np.asarray(im)  # (rows, cols, 3)


def _panel(pixels: np.ndarray, column: int, row: int, scale: int, top: int = 0) -> np.ndarray:
    """The (N * scale)^2 pixels of an N x N panel; columns 0..6, row 0 grey, row 1 heat."""
    left = column * (N * scale + PANEL_GAP)
    y0 = top + LABEL_HEIGHT + row * (N * scale + PANEL_GAP)
    return pixels[y0 : y0 + N * scale, left : left + N * scale]


def test_slices_are_in_order_and_cut_where_documented() -> None:
    vol, cam = _volume(), _cam()
    cuts = saliency_slices(vol, cam, slices=5)
    labels = [label for label, _, _ in cuts]
    assert labels == ["z=2", "z=5", "z=8", "z=11", "z=14", "coronal", "sagittal"]
    for (_, grey, heat), z in zip(cuts[:5], [2, 5, 8, 11, 14], strict=True):
        assert np.array_equal(grey, vol[z]) and np.array_equal(heat, cam[z])
    assert np.array_equal(cuts[5][1], vol[:, 8, :]) and np.array_equal(cuts[5][2], cam[:, 8, :])
    assert np.array_equal(cuts[6][1], vol[:, :, 8]) and np.array_equal(cuts[6][2], cam[:, :, 8])
    assert [lab for lab, _, _ in saliency_slices(vol, cam, 1)] == ["z=8", "coronal", "sagittal"]
    assert [lab for lab, _, _ in saliency_slices(vol, cam, 2)][:2] == ["z=0", "z=8"]
    every = [lab for lab, _, _ in saliency_slices(vol, cam, N)][:N]
    assert every == [f"z={z}" for z in range(N)]


def test_a_box_that_is_not_a_cube_gives_each_cut_its_own_shape() -> None:
    vol = np.zeros((6, 10, 12))
    cuts = saliency_slices(vol, vol, slices=3)
    assert [lab for lab, _, _ in cuts] == ["z=1", "z=3", "z=5", "coronal", "sagittal"]
    assert [grey.shape for _, grey, _ in cuts] == [(10, 12)] * 3 + [(6, 12), (6, 10)]


def test_layout_size_without_and_with_a_title(tmp_path: Path) -> None:
    assert (PANEL_GAP, TITLE_HEIGHT, LABEL_HEIGHT) == (4, 20, 14)
    vol, cam = _volume(), _cam()
    plain = _open(render_saliency(vol, cam, tmp_path / "plain.png"))
    # width ((5 + 1) * 16 + 16) * 4 + 6 * 4; height 14 + 2 * 64 + 4
    assert plain.shape == (146, 472, 3)
    titled = _open(render_saliency(vol, cam, tmp_path / "t.png", title="nodule 7: 0.93"))
    assert titled.shape == (146 + 20, 472, 3)
    assert (titled[:TITLE_HEIGHT] != 255).any()  # the title was drawn
    small = _open(render_saliency(vol, cam, tmp_path / "s.png", scale=2, slices=3))
    assert small.shape == (14 + 2 * 32 + 4, (4 * 16 + 16) * 2 + 4 * 4, 3)
    box = _open(render_saliency(np.zeros((6, 10, 12)), np.zeros((6, 10, 12)), tmp_path / "b.png"))
    assert box.shape == (14 + 2 * 40 + 4, (6 * 12 + 10) * 4 + 6 * 4, 3)  # R = max(6, 10) * 4


def test_each_panel_shows_its_slice_and_carries_a_label(tmp_path: Path) -> None:
    pixels = _open(render_saliency(_volume(), _cam(), tmp_path / "a" / "b" / "n.png", scale=2))
    s = 2
    for column, (row, col) in [(2, AXIAL[1:]), (0, CORONAL[1:]), (4, SAGITTAL[1:])]:
        grey = _panel(pixels, column, 0, s)
        assert tuple(grey[row * s, col * s]) == (255, 255, 255)  # the bright voxel
        assert int((grey[..., 0] == 255).sum()) == s * s  # and only that one on this slice
    coronal, sagittal = _panel(pixels, 5, 0, s), _panel(pixels, 6, 0, s)
    assert tuple(coronal[CORONAL[0] * s, CORONAL[2] * s]) == (255, 255, 255)  # rows z, cols x
    assert tuple(sagittal[SAGITTAL[0] * s, SAGITTAL[1] * s]) == (255, 255, 255)  # rows z, cols y
    assert tuple(_panel(pixels, 1, 0, s)[0, 0]) == (64, 64, 64)  # 0.25 * 255 = 63.75 -> 64
    for column in range(7):  # every column has a label drawn in the band above it
        left = column * (N * s + PANEL_GAP)
        assert (pixels[:LABEL_HEIGHT, left : left + N * s] != 255).any()
    assert tuple(pixels[LABEL_HEIGHT, N * s]) == (255, 255, 255)  # the gap between columns
    assert tuple(pixels[LABEL_HEIGHT + N * s, 0]) == (255, 255, 255)  # the gap between rows
    assert sorted(p.name for p in (tmp_path / "a" / "b").iterdir()) == ["n.png"]  # no temp file


def test_the_hottest_heat_pixel_is_where_the_cam_peaks(tmp_path: Path) -> None:
    vol = np.full((N, N, N), 0.25)  # uniform grey: the blend's brightness follows the heat
    pixels = _open(render_saliency(vol, _cam(), tmp_path / "hot.png", alpha=1.0))
    s = 4
    heat = [_panel(pixels, column, 1, s).astype(int).sum(axis=2) for column in range(7)]
    best = max(int(panel.max()) for panel in heat)  # inferno brightens monotonically with heat
    hottest = {
        (column, int(r) // s, int(c) // s)
        for column, panel in enumerate(heat)
        for r, c in np.argwhere(panel == best)
    }
    assert hottest == {(2, PEAK[1], PEAK[2])}  # the centre slice z=8 is the third column
    assert tuple(_panel(pixels, 2, 1, s)[PEAK[1] * s, PEAK[2] * s]) == (252, 255, 164)


def test_the_blend_is_hand_computed(tmp_path: Path) -> None:
    vol, cam = np.full((N, N, N), 0.25), np.zeros((N, N, N))
    pixels = _open(render_saliency(vol, cam, tmp_path / "blend.png", scale=1, alpha=0.5))
    # 0.5 * 64 + 0.5 * inferno(0) = 0.5 * (64, 64, 64) + 0.5 * (0, 0, 4)
    assert tuple(_panel(pixels, 0, 1, 1)[3, 3]) == (32, 32, 34)
    assert tuple(_panel(pixels, 6, 1, 1)[0, 0]) == (32, 32, 34)


def test_bad_input_raises_value_errors_naming_it(tmp_path: Path) -> None:
    vol, cam, out = _volume(), _cam(), tmp_path / "x.png"
    with pytest.raises(ValueError, match=r"cam shape \(16, 16, 8\) != volume shape \(16, 16, 16\)"):
        render_saliency(vol, cam[:, :, :8], out)
    with pytest.raises(ValueError, match=r"volume must be a non-empty 3-D \(D, H, W\)"):
        render_saliency(vol[0], cam[0], out)
    with pytest.raises(ValueError, match=r"cam must be a non-empty 3-D"):
        saliency_slices(vol, cam[None])
    nan = cam.copy()
    nan[1, 2, 3] = np.nan
    with pytest.raises(ValueError, match="cam has 1 NaN and 0 infinite values"):
        render_saliency(vol, nan, out)
    with pytest.raises(
        ValueError, match=r"volume values must be in \[0, 1\], got min -1.75, max -1"
    ):
        render_saliency(vol - 2.0, cam, out)
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\], got 1.5"):
        render_saliency(vol, cam, out, alpha=1.5)
    with pytest.raises(ValueError, match="scale must be a whole number >= 1, got 0"):
        render_saliency(vol, cam, out, scale=0)
    with pytest.raises(ValueError, match=r"slices must be a whole number in \[1, D=16\], got 0"):
        render_saliency(vol, cam, out, slices=0)
    with pytest.raises(ValueError, match=r"in \[1, D=16\], got 17"):
        saliency_slices(vol, cam, 17)
    assert not out.exists()


def test_heat_in_mask_by_hand() -> None:
    cam = np.arange(8.0).reshape(2, 2, 2)  # total heat 0 + 1 + ... + 7 = 28
    mask = np.zeros((2, 2, 2), dtype=bool)
    mask[1] = True  # heat 4 + 5 + 6 + 7 = 22
    assert heat_in_mask(cam, mask) == pytest.approx(22 / 28)
    assert heat_in_mask(cam, ~mask) == pytest.approx(6 / 28)
    assert heat_in_mask(cam, np.ones((2, 2, 2), dtype=bool)) == 1.0
    assert heat_in_mask(cam, np.zeros((2, 2, 2), dtype=bool)) == 0.0
    assert heat_in_mask(np.zeros((2, 2, 2)), mask) == 0.0  # no heat at all: 0, not nan
    # the Gaussian factorises, so the share in the 5x5x5 box around PEAK is a product of 1-D shares
    box = np.zeros((N, N, N), dtype=bool)
    box[6:11, 3:8, 9:14] = True
    axis = [np.exp(-((np.arange(N) - c) ** 2) / 8.0) for c in PEAK]
    want = np.prod([g[c - 2 : c + 3].sum() / g.sum() for g, c in zip(axis, PEAK, strict=True)])
    assert heat_in_mask(_cam(), box) == pytest.approx(want)


def test_heat_in_mask_rejects_bad_input() -> None:
    cam, mask = np.ones((2, 2, 2)), np.ones((2, 2, 2), dtype=bool)
    with pytest.raises(ValueError, match=r"mask shape \(2, 2\) != cam shape \(2, 2, 2\)"):
        heat_in_mask(cam, mask[0])
    with pytest.raises(ValueError, match="mask must be boolean, got float64"):
        heat_in_mask(cam, mask.astype(float))
    with pytest.raises(ValueError, match="non-negative"):
        heat_in_mask(-cam, mask)
    with pytest.raises(ValueError, match="NaN or infinite"):
        heat_in_mask(np.full((2, 2, 2), np.nan), mask)
