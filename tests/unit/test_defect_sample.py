"""The synthetic defect sample: files written, boxes, determinism, and reading it back."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from abyssal.core.errors import ConfigError
from abyssal.data.images import load_image
from abyssal.solutions.defect.images import list_images, list_unlabelled
from abyssal.solutions.defect.sample import DefectSampleConfig, generate_sample, render_defect

TINY = {"images_per_class": 2, "size": 24, "classes": ["scratch", "spot", "patch"]}


def tiny(**overrides: object) -> DefectSampleConfig:
    return DefectSampleConfig(**{**TINY, "new_images": 3, **overrides})  # type: ignore[arg-type]


def rows(path: Path) -> list[list[str]]:
    with path.open(newline="") as fh:
        return list(csv.reader(fh))


def test_generate_sample_writes_the_stated_files(tmp_path: Path) -> None:
    lines = generate_sample(tiny(layout="csv"), tmp_path)
    images = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.png"))
    assert images == [
        "images/patch/patch_1.png",
        "images/patch/patch_2.png",
        "images/scratch/scratch_1.png",
        "images/scratch/scratch_2.png",
        "images/spot/spot_1.png",
        "images/spot/spot_2.png",
        "new/img_1.png",
        "new/img_2.png",
        "new/img_3.png",
    ]
    assert len(list((tmp_path / "images").rglob("*.xml"))) == 6
    assert rows(tmp_path / "labels.csv")[:2] == [
        ["path", "label"],
        ["images/scratch/scratch_1.png", "scratch"],
    ]
    truth = rows(tmp_path / "new_truth.csv")
    assert truth[0] == ["path", "label"] and [r[0] for r in truth[1:]] == [
        f"new/img_{i}.png" for i in (1, 2, 3)
    ]
    assert {r[1] for r in truth[1:]} <= set(TINY["classes"])  # type: ignore[arg-type]
    assert len(lines) == 4 and "6 images in 3 class folders" in lines[0]
    assert not list(tmp_path.rglob(".*"))  # no temporary files left behind
    assert load_image(tmp_path / "new" / "img_1.png").shape == (1, 24, 24)


def test_folder_layout_writes_no_csv(tmp_path: Path) -> None:
    lines = generate_sample(tiny(new_images=0), tmp_path)
    assert not (tmp_path / "labels.csv").exists() and not (tmp_path / "new").exists()
    assert len(lines) == 1


def test_the_sample_is_deterministic_given_the_seed(tmp_path: Path) -> None:
    generate_sample(tiny(), tmp_path / "a")
    generate_sample(tiny(), tmp_path / "b")
    generate_sample(tiny(seed=1), tmp_path / "c")
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.*"))
    assert all(
        (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files
    )
    image = Path("images/spot/spot_1.png")
    assert (tmp_path / "a" / image).read_bytes() != (tmp_path / "c" / image).read_bytes()


@pytest.mark.parametrize("layout", ["folder", "csv"])
def test_list_images_reads_the_sample_back(tmp_path: Path, layout: str) -> None:
    generate_sample(tiny(layout=layout), tmp_path)
    source = tmp_path / "labels.csv" if layout == "csv" else tmp_path / "images"
    listing = list_images(source)
    assert listing.layout == layout and listing.classes == ["patch", "scratch", "spot"]
    assert len(listing.records) == 6 and listing.skipped == []
    for record in listing.records:
        (box,) = record.boxes
        assert box.label == record.label == record.path.parent.name
        assert 0 <= box.xmin < box.xmax <= 24 and 0 <= box.ymin < box.ymax <= 24
    assert len(list_unlabelled(tmp_path / "new").records) == 3


def test_render_defect_boxes_lie_inside_and_kinds_are_checked() -> None:
    rng = np.random.default_rng(0)
    for kind in ("scratch", "spot", "patch", "crack"):
        for _ in range(20):
            pixels, box = render_defect(kind, 16, rng)
            assert pixels.shape == (16, 16) and pixels.dtype == np.uint8
            assert 0 <= box.xmin < box.xmax <= 16 and 0 <= box.ymin < box.ymax <= 16
    with pytest.raises(ValueError, match="unknown defect kind 'dent'; choose from scratch, spot"):
        render_defect("dent", 16, rng)


def test_the_defect_shows_inside_its_box() -> None:
    pixels, box = render_defect("spot", 32, np.random.default_rng(3))  # dark blobs
    inside = pixels[int(box.ymin) : int(box.ymax), int(box.xmin) : int(box.xmax)]
    assert inside.min() < np.median(pixels) - 30


def test_sample_config_checks_its_values() -> None:
    with pytest.raises(ConfigError, match="unknown classes"):
        DefectSampleConfig(classes=["scratch", "dent"])
    with pytest.raises(ConfigError, match="at least two distinct"):
        DefectSampleConfig(classes=["spot", "spot"])
    with pytest.raises(ConfigError, match="size must be >= 16"):
        DefectSampleConfig(size=8)
    with pytest.raises(ConfigError, match="images_per_class must be >= 1"):
        DefectSampleConfig(images_per_class=0)
