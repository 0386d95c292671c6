"""Explanation pictures: the layout's exact size, green box pixels, the blend's hand-computed
colour, grey and colour inputs, atomic writes and the errors on bad shapes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from abyssal.solutions.defect.explain import (
    PANEL_GAP,
    TITLE_HEIGHT,
    heatmap_colours,
    render_explanation,
)

H, W, SCALE = 6, 8, 2
GREEN = (0, 255, 0)
BOX = (1, 1, 4, 3)  # upscaled: columns 2..7, rows 2..5; a 2 px outline


def _grey(value: int = 100) -> np.ndarray:
    return np.full((1, H, W), value, dtype=np.uint8)


def test_layout_size_without_and_with_a_title(tmp_path: Path) -> None:
    assert (PANEL_GAP, TITLE_HEIGHT) == (4, 20)
    cam = np.zeros((H, W))
    plain = render_explanation(_grey(), cam, tmp_path / "plain.png", scale=SCALE)
    titled = render_explanation(_grey(), cam, tmp_path / "titled.png", title="item 7: scratch")
    with Image.open(plain) as im:
        assert im.format == "PNG" and im.mode == "RGB"
        assert im.size == (2 * W * SCALE + 4, H * SCALE) == (36, 12)
    with Image.open(titled) as im:
        assert im.size == (36, 12 + 20)
        band = np.asarray(im)[:TITLE_HEIGHT]
        assert (band != 255).any()  # the text was drawn
    assert render_explanation(_grey(), cam, tmp_path / "s3.png", scale=3) == tmp_path / "s3.png"
    with Image.open(tmp_path / "s3.png") as im:
        assert im.size == (2 * W * 3 + 4, H * 3)


def test_boxes_are_green_on_both_panels_and_pixels_are_hand_computed(tmp_path: Path) -> None:
    path = render_explanation(_grey(100), np.zeros((H, W)), tmp_path / "box.png", boxes=[BOX])
    pixels = np.asarray(Image.open(path))  # (rows, cols, 3)
    right = W * SCALE + PANEL_GAP
    for x, y in [(2, 2), (3, 3), (7, 5), (6, 4), (2, 5), (7, 2)]:  # corners and 2nd ring
        assert tuple(pixels[y, x]) == GREEN
        assert tuple(pixels[y, right + x]) == GREEN
    assert tuple(pixels[0, 0]) == (100, 100, 100)  # outside the box: the grey image
    assert tuple(pixels[4, 8]) == (100, 100, 100)  # column 8 is past the box (xmax 4 -> 8)
    # heat 0 is inferno's (0, 0, 4); blend 0.55 * 100 + 0.45 * (0, 0, 4) = (55, 55, 56.8 -> 57)
    assert tuple(pixels[0, right]) == (55, 55, 57)
    assert tuple(pixels[0, W * SCALE]) == (255, 255, 255)  # the gap


def test_a_colour_image_keeps_its_colours_and_hot_pixels_turn_yellow(tmp_path: Path) -> None:
    image = np.zeros((3, H, W), dtype=np.uint8)
    image[0] = 200  # red
    cam = np.zeros((H, W))
    cam[0, 0] = 1.0
    path = render_explanation(image, cam, tmp_path / "a" / "b" / "colour.png", alpha=1.0)
    pixels = np.asarray(Image.open(path))
    assert tuple(pixels[0, 0]) == (200, 0, 0)
    right = W * SCALE + PANEL_GAP
    assert tuple(pixels[1, right + 1]) == (252, 255, 164)  # alpha 1: pure heat colour
    assert tuple(pixels[0, right + 2]) == (0, 0, 4)
    assert sorted(p.name for p in path.parent.iterdir()) == ["colour.png"]  # no temp file left


def test_heatmap_colours_anchor_values() -> None:
    colours = heatmap_colours(np.array([[0.0, 0.5, 1.0], [-1.0, 2.0, np.nan]]))
    assert colours.shape == (2, 3, 3) and colours.dtype == np.uint8
    assert colours[0].tolist() == [[0, 0, 4], [188, 55, 84], [252, 255, 164]]
    assert colours[1].tolist() == [[0, 0, 4], [252, 255, 164], [0, 0, 4]]  # clipped; nan as 0
    with pytest.raises(ValueError, match=r"heat map must be 2-D \(H, W\)"):
        heatmap_colours(np.zeros(3))


@pytest.mark.parametrize(
    ("image", "cam", "kwargs", "message"),
    [
        (np.zeros((2, H, W), np.uint8), None, {}, r"C in \{1, 3\}, got shape \(2, 6, 8\)"),
        (np.zeros((H, W), np.uint8), None, {}, r"C in \{1, 3\}, got shape \(6, 8\)"),
        (np.zeros((1, H, W), np.float32), None, {}, "uint8 numpy array"),
        (None, np.zeros((W, H)), {}, r"cam must have the image's shape \(6, 8\), got \(8, 6\)"),
        (None, np.full((H, W), 1.5), {}, r"cam values must be finite and in \[0, 1\]"),
        (None, None, {"scale": 0}, "scale must be a whole number >= 1, got 0"),
        (None, None, {"alpha": 1.5}, r"alpha must be in \[0, 1\], got 1.5"),
        (None, None, {"boxes": [(4, 1, 1, 3)]}, "box 0 .* needs xmin < xmax"),
    ],
)
def test_bad_arguments_raise(
    tmp_path: Path, image: np.ndarray | None, cam: np.ndarray | None, kwargs: dict, message: str
) -> None:
    image = _grey() if image is None else image
    cam = np.zeros((H, W)) if cam is None else cam
    with pytest.raises(ValueError, match=message):
        render_explanation(image, cam, tmp_path / "bad.png", **kwargs)
    assert not (tmp_path / "bad.png").exists()
