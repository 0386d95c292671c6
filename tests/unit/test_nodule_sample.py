"""The synthetic nodule sample: files, CSV columns and ranges, folds, determinism, what the
crops look like, and the whole scan's candidates read back through ``volumes``."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pytest

from abyssal.core.errors import ConfigError
from abyssal.solutions.nodule.sample import (
    NoduleSampleConfig,
    SyntheticNodule,
    generate_sample,
    render_nodule,
)
from abyssal.solutions.nodule.volumes import read_candidates, read_volume, world_to_voxel

ndimage = pytest.importorskip("scipy.ndimage")
pytest.importorskip("nibabel")

TINY = {
    "nodules": 30,
    "patients": 10,
    "size": 24,
    "new_volumes": 3,
    "scan_nodules": 2,
    "scan_slices": 20,
    "scan_size": 64,
    "context_mm": 0,  # as the LIDC crops: the nodule's slices and 1-2 more
}
COLUMNS = [
    "nodule_id",
    "patient_id",
    "n_slices",
    "n_readers",
    "slice_thickness_mm",
    "pixel_spacing_mm",
    "diameter_mm",
    "subtlety",
    "internalStructure",
    "calcification",
    "sphericity",
    "margin",
    "lobulation",
    "spiculation",
    "texture",
    "malignancy",
    "fold",
]
SCALES = {
    "subtlety": 5,
    "internalStructure": 4,
    "calcification": 6,
    "sphericity": 5,
    "margin": 5,
    "lobulation": 5,
    "spiculation": 5,
    "texture": 5,
    "malignancy": 5,
}


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    out = tmp_path_factory.mktemp("nodule-sample")
    return out, generate_sample(NoduleSampleConfig(**TINY), out)  # type: ignore[arg-type]


def test_generate_sample_writes_the_stated_files(sample: tuple[Path, list[str]]) -> None:
    out, lines = sample
    volumes = sorted(p.name for p in (out / "volumes").iterdir())
    assert len(volumes) == 30 and all(re.fullmatch(r"P\d{4}_n\d+\.npz", v) for v in volumes)
    assert sorted(p.name for p in (out / "new").iterdir()) == [f"new_0{i}.npz" for i in (1, 2, 3)]
    assert sorted(p.name for p in (out / "scan").iterdir()) == [
        "candidates.csv",
        "scan.nii.gz",
        "truth.csv",
    ]
    assert len(lines) == 7 and "30 nodule crops of 10 patients" in lines[0]
    assert not [p for p in out.rglob("*") if p.name.startswith(".")]  # no temporary files


def test_nodules_csv_has_the_lidc_columns_and_ranges(sample: tuple[Path, list[str]]) -> None:
    out, _ = sample
    with (out / "nodules.csv").open() as fh:
        assert fh.readline().strip().split(",") == COLUMNS
    table = rows(out / "nodules.csv")
    assert len(table) == 30
    for row in table:
        assert row["nodule_id"].startswith(row["patient_id"] + "_n")
        assert 1 <= int(row["n_readers"]) <= 4 and 0 <= int(row["fold"]) <= 4
        assert float(row["slice_thickness_mm"]) in (1.25, 2.0, 2.5)
        assert 0.6 <= float(row["pixel_spacing_mm"]) <= 0.8
        assert 3.0 <= float(row["diameter_mm"]) <= 0.75 * 24 * 0.8
        for name, top in SCALES.items():
            value = float(row[name])
            assert 1 <= value <= top and (2 * value).is_integer(), (name, value)
    malignancy = [float(r["malignancy"]) for r in table]
    assert {m < 3 for m in malignancy} == {True, False} and 3.0 in malignancy
    assert any(float(r["calcification"]) < 6 for r in table)  # some benign ones are calcified


def test_context_widens_each_crop_to_the_span_around_its_nodule() -> None:
    rng = [np.random.default_rng(5), np.random.default_rng(5)]
    tight = render_nodule(24, 2.5, 0.7, rng[0])
    wide = render_nodule(24, 2.5, 0.7, rng[1], context_mm=40)
    assert wide.image.shape[0] >= 40 / 2.5 >= tight.image.shape[0]
    assert wide.diameter_mm == tight.diameter_mm and wide.ratings == tight.ratings
    rows_with_nodule = np.flatnonzero(wide.mask.any(axis=(1, 2)))
    middle = (rows_with_nodule[0] + rows_with_nodule[-1]) / 2
    assert abs(middle - (wide.image.shape[0] - 1) / 2) <= 1.5  # the nodule stays in the middle


def test_each_crop_matches_its_row(sample: tuple[Path, list[str]]) -> None:
    out, _ = sample
    for row in rows(out / "nodules.csv"):
        with np.load(out / "volumes" / f"{row['nodule_id']}.npz") as archive:
            image, mask, spacing = archive["image"], archive["mask"], archive["spacing"]
        assert image.dtype == mask.dtype == np.uint8 and image.shape == mask.shape
        assert image.shape == (int(row["n_slices"]), 24, 24)
        pixel = float(row["pixel_spacing_mm"])
        assert spacing.tolist() == [float(row["slice_thickness_mm"]), pixel, pixel]
        assert mask.max() == int(row["n_readers"])  # the core is outlined by every reader
        slices = np.flatnonzero(mask.any(axis=(1, 2)))
        assert 1 <= slices[0] <= 2 and 1 <= image.shape[0] - 1 - slices[-1] <= 2  # margins
        inside, outside = image[mask > 0].mean(), image[mask == 0]
        assert np.median(outside) < 60 and inside > np.median(outside) + 30  # on dark lung


def test_folds_are_by_patient_and_balanced(sample: tuple[Path, list[str]]) -> None:
    out, _ = sample
    table = rows(out / "nodules.csv")
    fold_of: dict[str, set[str]] = {}
    for row in table:
        fold_of.setdefault(row["patient_id"], set()).add(row["fold"])
    assert len(fold_of) == 10 and all(len(f) == 1 for f in fold_of.values())
    sizes = np.bincount([int(r["fold"]) for r in table], minlength=5)
    per_patient = max(sum(r["patient_id"] == p for r in table) for p in fold_of)
    assert sizes.min() >= 1 and sizes.max() - sizes.min() <= per_patient


def test_malignant_nodules_are_larger_in_the_sample(sample: tuple[Path, list[str]]) -> None:
    out, _ = sample
    table = rows(out / "nodules.csv")
    malignant = [float(r["diameter_mm"]) for r in table if float(r["malignancy"]) > 3]
    benign = [float(r["diameter_mm"]) for r in table if float(r["malignancy"]) < 3]
    assert np.mean(malignant) > np.mean(benign) + 2


def test_ratings_follow_the_drawn_shape_and_overlap_in_size() -> None:
    nodules = [render_nodule(32, 2.5, 0.7, np.random.default_rng([9, i])) for i in range(80)]
    malignant = [n for n in nodules if n.ratings["malignancy"] > 3]
    benign = [n for n in nodules if n.ratings["malignancy"] < 3]

    def mean(group: list[SyntheticNodule], rating: str) -> float:
        return float(np.mean([n.ratings[rating] for n in group]))

    assert mean(malignant, "spiculation") > mean(benign, "spiculation") + 1
    assert mean(malignant, "lobulation") > mean(benign, "lobulation") + 1
    assert mean(malignant, "sphericity") < mean(benign, "sphericity") - 0.5
    assert mean(malignant, "margin") < mean(benign, "margin") - 1
    assert all(n.ratings["calcification"] == 6 for n in malignant)
    assert any(n.ratings["calcification"] < 6 for n in benign)
    sizes = [n.diameter_mm for n in malignant]
    assert np.mean(sizes) > np.mean([n.diameter_mm for n in benign]) + 3
    assert sum(s < max(n.diameter_mm for n in benign) for s in sizes) >= 3  # sizes overlap
    rated_three = sum(n.ratings["malignancy"] == 3 for n in nodules) / len(nodules)
    assert 0.1 < rated_three < 0.45


def test_the_nodule_is_drawn_in_millimetres_whatever_the_slices() -> None:
    for seed in range(6):
        thin = render_nodule(24, 1.25, 0.7, np.random.default_rng(seed))
        thick = render_nodule(24, 2.5, 0.7, np.random.default_rng(seed))
        assert thin.diameter_mm == thick.diameter_mm and thin.ratings == thick.ratings
        thin_mm3 = np.count_nonzero(thin.mask) * 1.25 * 0.49
        thick_mm3 = np.count_nonzero(thick.mask) * 2.5 * 0.49
        assert 0.7 < thin_mm3 / thick_mm3 < 1.4
        core = np.count_nonzero(thin.mask >= (thin.readers + 1) // 2) * 1.25 * 0.49
        assert (6 * core / np.pi) ** (1 / 3) == pytest.approx(thin.diameter_mm, rel=0.25)


def test_new_truth_labels_follow_malignancy(sample: tuple[Path, list[str]]) -> None:
    out, _ = sample
    truth = rows(out / "new_truth.csv")
    assert list(truth[0]) == ["nodule_id", "path", "malignancy", "label"]
    assert [r["nodule_id"] for r in truth] == ["new_01", "new_02", "new_03"]
    for row in truth:
        assert (out / row["path"]).is_file()
        m = float(row["malignancy"])
        expected = "benign" if m < 3 else "malignant" if m > 3 else "indeterminate"
        assert row["label"] == expected


def test_scan_candidates_land_on_the_planted_nodules(sample: tuple[Path, list[str]]) -> None:
    out, _ = sample
    scan = read_volume(out / "scan" / "scan.nii.gz")
    assert scan.array.shape == (20, 64, 64)
    assert scan.spacing == pytest.approx((2.5, 0.7, 0.7))
    assert np.abs(scan.origin).min() > 0 and np.allclose(scan.direction, np.eye(3))
    assert scan.array.min() == -1000 and scan.array[0, 0, 0] == -1000  # air outside the body
    truth = rows(out / "scan" / "truth.csv")
    candidates = read_candidates(out / "scan" / "candidates.csv")
    assert len(candidates) == len(truth) == 4 and {c.series_uid for c in candidates} == {"scan"}
    assert sorted(r["is_nodule"] for r in truth) == ["0", "0", "1", "1"]
    blobs, _ = ndimage.label(scan.array > -400)  # lung is about -850, nodules about 0-60
    for candidate, row in zip(candidates, truth, strict=True):
        assert candidate.xyz_mm == pytest.approx(
            tuple(float(row[c]) for c in ["coordX", "coordY", "coordZ"])
        )
        zyx = world_to_voxel(scan, candidate.xyz_mm)
        voxel = tuple(int(i) for i in np.rint(zyx))
        hu = scan.array[voxel]
        if row["is_nodule"] == "0":
            assert hu < -600 and float(row["diameter_mm"]) == 0
            continue
        assert -100 < hu < 160  # soft tissue, not lung
        blob = blobs == blobs[voxel]
        centre = np.array(ndimage.center_of_mass(blob))  # (z, y, x) voxels
        assert np.abs(centre - zyx).max() < 0.5
        diameter = (6 * blob.sum() * 2.5 * 0.7 * 0.7 / np.pi) ** (1 / 3)
        assert diameter == pytest.approx(float(row["diameter_mm"]), rel=0.25)


def test_the_sample_is_deterministic_given_the_seed(tmp_path: Path) -> None:
    small = {**TINY, "nodules": 5, "patients": 5, "new_volumes": 1, "scan_slices": 16}
    generate_sample(NoduleSampleConfig(**small), tmp_path / "a")  # type: ignore[arg-type]
    generate_sample(NoduleSampleConfig(**small), tmp_path / "b")  # type: ignore[arg-type]
    generate_sample(NoduleSampleConfig(**small, seed=1), tmp_path / "c")  # type: ignore[arg-type]
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.*"))
    assert len(files) == 5 + 1 + 1 + 1 + 3
    for f in files:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
    for f in ("volumes/P0001_n1.npz", "scan/scan.nii.gz"):
        assert (tmp_path / "a" / f).read_bytes() != (tmp_path / "c" / f).read_bytes()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"patients": 4}, "patients must be >= 5"),
        ({"nodules": 8, "patients": 10}, "nodules must be >= patients"),
        ({"size": 12}, "size must be >= 16"),
        ({"new_volumes": -1}, "new_volumes must be >= 0"),
        ({"scan_nodules": 13}, "scan_nodules must be in 0..12"),
        ({"scan_size": 32}, "scan_size >= 64"),
    ],
)
def test_bad_options_are_config_errors(overrides: dict[str, int], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        NoduleSampleConfig(**{**TINY, **overrides})  # type: ignore[arg-type]
