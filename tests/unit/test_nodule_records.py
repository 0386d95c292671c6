"""The nodule labels table and the cubes cut from its volumes: labels, attributes, spacing and
paths read back; every table error names the file, row and column; fold and patient splits;
bad volumes refused (or left out with ``skip_bad``); intensity mapping; cubes centred in mm."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from abyssal.core.errors import ConfigError, DataError
from abyssal.solutions.nodule.config import NoduleDataConfig
from abyssal.solutions.nodule.data import (
    cube_at,
    prepare_nodule_data,
    resolve_intensity,
    unit_intensity,
)
from abyssal.solutions.nodule.records import read_records
from abyssal.solutions.nodule.volumes import Volume

pytest.importorskip("scipy.ndimage")

GOOD = """\
nodule_id,patient_id,malignancy,spiculation,diameter_mm,fold,slice_thickness_mm,pixel_spacing_mm
a,p1,1,1,4.5,0,2.5,0.7
b,p1,4.5,5,,0,1.25,0.6
c,p2,3,,12,1,,
d,p3,2.5,2,8,2,2.0,0.8
"""


def write(folder: Path, text: str, name: str = "nodules.csv") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text)
    return path


# -- the table ----------------------------------------------------------------------------------


def test_a_good_table_gives_labels_attributes_folds_and_spacing(tmp_path: Path) -> None:
    table = read_records(write(tmp_path, GOOD))
    by_id = {r.nodule_id: r for r in table.records}
    assert [r.label for r in table.records] == [0, 1, -1, 0]  # < 3 benign, > 3 malignant, 3 none
    # ATTRIBUTES order, not CSV order; the malignancy rating is a target too, 3 included
    assert table.attributes == ["spiculation", "malignancy_rating", "diameter_mm"]
    assert by_id["a"].attributes == (1.0, 1.0, 4.5)
    assert by_id["b"].attributes[:2] == (5.0, 4.5) and math.isnan(by_id["b"].attributes[2])
    assert math.isnan(by_id["c"].attributes[0]) and by_id["c"].attributes[1:] == (3.0, 12.0)
    assert [r.fold for r in table.records] == [0, 0, 1, 2] and table.has_folds
    assert [r.patient for r in table.records] == ["p1", "p1", "p2", "p3"]
    assert by_id["a"].spacing == (2.5, 0.7, 0.7)  # (z, y, x) = (thickness, pixel, pixel)
    assert by_id["b"].spacing == (1.25, 0.6, 0.6)
    assert by_id["c"].spacing is None  # empty cells: the file's own spacing
    assert by_id["a"].path == tmp_path / "volumes" / "a.npz"
    assert [r.row for r in table.records] == [1, 2, 3, 4]
    assert "malignancy" in table.label_source


def test_reader_scores_give_the_share_of_malignant_calls(tmp_path: Path) -> None:
    text = (
        'nodule_id,malignancy,malignancy_scores\na,4,4 5 3 2\nb,2,"1,2"\nc,3,3;3;4\nd,5,\ne,1,  \n'
    )
    shares = [r.share for r in read_records(write(tmp_path, text)).records]
    assert shares[:3] == [0.625, 0.0, pytest.approx(2 / 3)]
    assert math.isnan(shares[3]) and math.isnan(shares[4])  # empty cells: unknown
    assert all(math.isnan(r.share) for r in read_records(write(tmp_path, GOOD)).records)


def test_a_rating_column_of_its_own_is_the_rating_target_beside_a_label(tmp_path: Path) -> None:
    text = "nodule_id,label,malignancy_rating\na,benign,2\nb,malignant,4.5\nc,,3\n"
    table = read_records(write(tmp_path, text))
    assert table.attributes == ["malignancy_rating"] and "label" in table.label_source
    assert [r.attributes for r in table.records] == [(2.0,), (4.5,), (3.0,)]
    assert [r.label for r in table.records] == [0, 1, -1]
    with pytest.raises(DataError, match=r"row 2.*malignancy_rating 7 is out of range"):
        read_records(write(tmp_path, "nodule_id,label,malignancy_rating\na,1,2\nb,0,7\n"))


def test_a_label_column_wins_and_reads_words_and_digits(tmp_path: Path) -> None:
    text = "nodule_id,label,malignancy\na,benign,5\nb,Malignant,1\nc,0,\nd,1,\ne,,\nf,1.0,\n"
    table = read_records(write(tmp_path, text))
    assert [r.label for r in table.records] == [0, 1, 0, 1, -1, 1]
    assert [r.patient for r in table.records] == ["a", "b", "c", "d", "e", "f"]  # id stands in
    assert not table.has_folds and table.records[0].fold == -1
    forced = read_records(tmp_path / "nodules.csv", label_column="malignancy")
    assert [r.label for r in forced.records] == [1, 0, -1, -1, -1, -1]


def test_a_path_column_is_relative_to_the_table_and_gives_the_id(tmp_path: Path) -> None:
    text = "path,label\nscans/x1.nii.gz,benign\nscans/deep/x2.npy,malignant\n"
    table = read_records(write(tmp_path / "meta", text, "labels.csv"))
    assert [r.path for r in table.records] == [
        tmp_path / "meta" / "scans" / "x1.nii.gz",
        tmp_path / "meta" / "scans" / "deep" / "x2.npy",
    ]
    assert [r.nodule_id for r in table.records] == ["x1", "x2"]


def test_a_folder_resolves_to_its_nodules_csv_and_finds_existing_volumes(tmp_path: Path) -> None:
    write(tmp_path, "nodule_id,malignancy\nn1,1\nn2,5\n")
    (tmp_path / "volumes").mkdir()
    np.save(tmp_path / "volumes" / "n2.npy", np.zeros((4, 4, 4), np.uint8))
    table = read_records(tmp_path)
    assert table.path == tmp_path / "nodules.csv"
    paths = {r.nodule_id: r.path for r in table.records}
    assert paths["n2"] == tmp_path / "volumes" / "n2.npy"  # the suffix that exists
    assert paths["n1"] == tmp_path / "volumes" / "n1.npz"  # none: the name an error will show
    with pytest.raises(DataError, match=r"without nodules\.csv"):
        read_records(tmp_path / "volumes")


def test_a_table_to_predict_needs_no_labels(tmp_path: Path) -> None:
    table = read_records(write(tmp_path, "nodule_id\na\nb\n"), labels_required=False)
    assert [r.label for r in table.records] == [-1, -1] and table.label_source == "none"


@pytest.mark.parametrize(
    ("text", "row", "column", "message"),
    [
        ("id,malignancy\na,1\n", None, None, "no nodule_id or path column"),
        ("nodule_id,spiculation\na,1\n", None, None, "no 'malignancy' column"),
        ("nodule_id,malignancy\na,1\nb,2\na,5\n", 3, None, "'a' also on row 1"),
        ("nodule_id,malignancy,spiculation\na,1,1\nb,2,7\n", 2, "spiculation", "out of range"),
        ("nodule_id,malignancy\na,2\nb,0\n", 2, "malignancy", r"malignancy 0 is out of range"),
        ("nodule_id,malignancy,diameter_mm\na,2,big\n", 1, "diameter_mm", "'big' is not a number"),
        ("nodule_id,malignancy,fold\na,2,0\nb,4,-1\n", 2, "fold", "not a whole number >= 0"),
        ("nodule_id,malignancy,fold\na,2,1.5\n", 1, "fold", "not a whole number >= 0"),
        ("nodule_id,malignancy,fold\na,2,\n", 1, "fold", "not a whole number >= 0"),
        (
            "nodule_id,malignancy,Slice_Thickness_mm,pixel_spacing_mm\na,2,1,0.7\nb,4,0,0.7\n",
            2,
            "Slice_Thickness_mm",
            "spacing 0 mm is not positive",
        ),
        (
            "nodule_id,malignancy,slice_thickness_mm,pixel_spacing_mm\na,2,1,-0.7\n",
            1,
            "pixel_spacing_mm",
            "not positive",
        ),
        ("nodule_id,label\na,benign\nb,maybe\n", 2, "label", "'maybe' is not benign, malignant"),
        ("nodule_id,malignancy\na,2\n,4\n", 2, None, "empty nodule id"),
        (
            "nodule_id,malignancy,malignancy_scores\na,2,2 1\nb,4,4 five\n",
            2,
            "malignancy_scores",
            "'4 five' is not a list of ratings 1-5",
        ),
        (
            "nodule_id,malignancy,malignancy_scores\na,2,2 0\n",
            1,
            "malignancy_scores",
            r"must be in \[1, 5\]",
        ),
    ],
)
def test_table_errors_name_the_file_row_and_column(
    tmp_path: Path, text: str, row: int | None, column: str | None, message: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(DataError, match=message) as caught:
        read_records(path)
    error = caught.value
    assert error.path == str(path) and str(path) in str(error)
    assert error.row == row and error.column == column
    if row is not None:
        assert f"row {row}" in str(error)
    if column is not None:
        assert f"column '{column}'" in str(error)


# -- cubes and splits ---------------------------------------------------------------------------


def nodule_set(folder: Path, patients: int = 6, *, folds: int | None = 3, extra: str = "") -> Path:
    """A table of ``patients`` patients with one benign, one malignant and one unlabelled nodule
    each (fold = patient % folds), small uint8 volumes under volumes/; ``extra`` rows appended."""
    (folder / "volumes").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    header = "nodule_id,patient_id,malignancy,diameter_mm" + (",fold" if folds else "")
    lines = [header]
    for p in range(patients):
        for n, rating in enumerate((1, 5, 3)):
            name = f"p{p}_n{n}"
            np.save(folder / "volumes" / f"{name}.npy", rng.integers(0, 256, (6, 10, 10), np.uint8))
            fold = f",{p % folds}" if folds else ""
            lines.append(f"{name},p{p},{rating},{4 + n}{fold}")
    return write(folder, "\n".join(lines) + "\n" + extra)


def small(path: Path, **options: object) -> NoduleDataConfig:
    return NoduleDataConfig(path=str(path), cube=8, voxel_mm=1.0, **options)


def patients_of(data, split: str) -> set[str]:
    return {data.records[i].patient for i in data.splits[split]}


def test_splits_follow_the_fold_column(tmp_path: Path) -> None:
    data = prepare_nodule_data(small(nodule_set(tmp_path)), progress=False)
    assert data.cubes.shape == (18, 8, 8, 8) and data.cubes.dtype == np.uint8
    assert data.attribute_names == ["malignancy_rating", "diameter_mm"]
    assert data.attributes.shape == (18, 2)
    assert patients_of(data, "test") == {"p0", "p3"}  # fold 0
    assert patients_of(data, "val") == {"p1", "p4"}  # the next fold by default
    assert patients_of(data, "train") == {"p2", "p5"}
    assert data.counts("test").tolist() == [2, 2]
    assert len(data.rows("test")) == 6 and len(data.rows("test", labelled=True)) == 4
    chosen = prepare_nodule_data(small(nodule_set(tmp_path), test_fold=2), progress=False)
    assert patients_of(chosen, "test") == {"p2", "p5"}
    assert patients_of(chosen, "val") == {"p0", "p3"}  # after the last fold comes the first
    explicit = prepare_nodule_data(small(tmp_path, test_fold=1, val_fold=2), progress=False)
    assert patients_of(explicit, "val") == {"p2", "p5"}
    with pytest.raises(ConfigError, match="test_fold=7"):
        prepare_nodule_data(small(tmp_path, test_fold=7), progress=False)


def test_val_from_patients_draws_validation_from_every_fold_but_the_test_fold(
    tmp_path: Path,
) -> None:
    path = nodule_set(tmp_path, patients=24)  # folds 0-2, eight patients each
    cfg = small(path, val_from="patients", val_frac=0.25, split_seed=3)
    data = prepare_nodule_data(cfg, progress=False)
    test, val, train = (patients_of(data, s) for s in ("test", "val", "train"))
    assert test == {f"p{p}" for p in range(0, 24, 3)}  # the test fold as before
    assert len(val) == 4 and not val & train and not (val | train) & test  # 25 % of 16 patients
    assert val | train == {f"p{p}" for p in range(24)} - test
    assert {data.records[i].fold for i in data.splits["val"]} == {1, 2}  # both other folds
    again = prepare_nodule_data(cfg, progress=False)
    assert patients_of(again, "val") == val  # seeded
    other = prepare_nodule_data(small(path, val_from="patients", split_seed=4), progress=False)
    assert patients_of(other, "val") != val
    with pytest.raises(ConfigError, match=r"val_fold=1 and data\.val_from=patients"):
        small(path, val_from="patients", val_fold=1)
    with pytest.raises(ConfigError, match="test_fold=7"):
        prepare_nodule_data(small(path, val_from="patients", test_fold=7), progress=False)


def test_a_patient_in_two_folds_is_refused(tmp_path: Path) -> None:
    path = nodule_set(tmp_path, extra="stray,p0,5,9,1\n")
    np.save(tmp_path / "volumes" / "stray.npy", np.zeros((6, 10, 10), np.uint8))
    with pytest.raises(
        DataError, match=r"patient 'p0' is in fold 0 \(row 1, test\) and fold 1"
    ) as e:
        prepare_nodule_data(small(path), progress=False)
    assert e.value.path == str(path) and e.value.row == 19 and e.value.column == "fold"
    apart = nodule_set(tmp_path, extra="stray,p0,5,9,0\n")  # same fold: allowed
    assert "stray" in {
        r.nodule_id for r in prepare_nodule_data(small(apart), progress=False).records
    }


def test_without_folds_the_split_is_by_patient_and_seeded(tmp_path: Path) -> None:
    path = nodule_set(tmp_path, patients=20, folds=None)
    data = prepare_nodule_data(small(path), progress=False)
    groups = [patients_of(data, s) for s in ("train", "val", "test")]
    assert [len(g) for g in groups] == [14, 3, 3]  # round(20 * 0.15) patients each
    assert not (groups[0] & groups[1] or groups[0] & groups[2] or groups[1] & groups[2])
    assert sum(len(data.splits[s]) for s in ("train", "val", "test")) == 60
    again = prepare_nodule_data(small(path), progress=False)
    other = prepare_nodule_data(small(path, split_seed=1), progress=False)
    assert all(np.array_equal(data.splits[s], again.splits[s]) for s in data.splits)
    assert any(not np.array_equal(data.splits[s], other.splits[s]) for s in data.splits)
    assert data.fingerprint == again.fingerprint != other.fingerprint


def write_bad(folder: Path, kind: str) -> None:
    target = folder / "volumes" / "bad.npy"
    if kind == "flat":
        np.save(target, np.zeros((10, 10), np.uint8))
    elif kind == "nan":
        volume = np.zeros((6, 10, 10), np.float32)
        volume[2, 3, 4] = np.nan
        np.save(target, volume)
    elif kind == "garbage":
        target.write_bytes(b"\x00\x01 definitely not numpy")


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("flat", "expected a 3-D volume"),
        ("nan", "1 of 600 voxels are NaN"),
        ("garbage", "cannot be read"),
        ("missing", "no such file"),
    ],
)
def test_a_bad_volume_is_named_or_left_out(tmp_path: Path, kind: str, reason: str) -> None:
    path = nodule_set(tmp_path, extra="bad,p9,5,6,2\n")
    write_bad(tmp_path, kind)
    with pytest.raises(DataError, match=reason) as caught:
        prepare_nodule_data(small(path), progress=False)
    assert "nodule bad:" in str(caught.value) and "volumes/bad.np" in str(caught.value)
    data = prepare_nodule_data(small(path, skip_bad=True), progress=False)
    assert [name for name, _ in data.bad] == ["bad"] and reason in data.bad[0][1]
    assert len(data.records) == 18 and "bad" not in {r.nodule_id for r in data.records}
    assert data.cubes.shape[0] == 18 and "1 bad volumes left out" in data.description


def test_no_readable_volume_at_all_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "nodule_id,malignancy\na,1\nb,5\n")
    with pytest.raises(DataError, match="no readable volume"):
        prepare_nodule_data(small(path, skip_bad=True), progress=False)


# -- intensities and cubes ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "kind"),
    [
        ([0.0, 17.0, 255.0], "uint8"),
        ([0.0, 2.0], "uint8"),
        ([-1000.0, -400.0, 60.0], "hu"),
        ([0.0, 0.25, 1.0], "unit"),
    ],
)
def test_auto_intensity_reads_the_value_range(values: list[float], kind: str) -> None:
    assert resolve_intensity(np.array(values), "auto") == kind
    assert resolve_intensity(np.array(values), "hu") == "hu"  # a setting is kept as it is


def test_unit_intensity_maps_each_kind_to_zero_one() -> None:
    hu = unit_intensity(np.array([-2000.0, -1000.0, -300.0, 400.0, 900.0]), "hu", [-1000, 400])
    np.testing.assert_allclose(hu, [0.0, 0.0, 0.5, 1.0, 1.0])
    assert hu.dtype == np.float32
    np.testing.assert_allclose(unit_intensity(np.array([0, 51, 255]), "uint8", [0, 1]), [0, 0.2, 1])
    np.testing.assert_allclose(
        unit_intensity(np.array([-0.5, 0.3, 1.5]), "unit", [0, 1]), [0, 0.3, 1]
    )


def test_a_cube_from_an_anisotropic_scan_is_round_and_centred() -> None:
    spacing = (2.5, 0.7, 0.7)  # (z, y, x) mm
    origin = np.array([10.0, -20.0, 30.0])  # world (x, y, z) of voxel [0, 0, 0]
    ball = origin + np.array([14.0, 14.0, 20.0])  # the blob: voxel (z, y, x) = (8, 20, 20)
    k, j, i = np.meshgrid(*[np.arange(n) for n in (17, 41, 41)], indexing="ij")
    world = origin + np.stack([i * 0.7, j * 0.7, k * 2.5], axis=-1)  # (D, H, W, 3)
    distance = np.linalg.norm(world - ball, axis=-1)
    hu = -1000.0 + 1100.0 * np.exp(-((distance / 4.0) ** 2))  # air, a soft +100 HU ball
    volume = Volume(hu, spacing, tuple(origin))
    options = {"cube": 15, "voxel_mm": 1.0, "intensity": "auto", "hu_window": [-1000.0, 400.0]}
    cube = cube_at(volume, ball, **options)
    assert cube.shape == (15, 15, 15) and cube.dtype == np.float32
    assert np.unravel_index(np.argmax(cube), cube.shape) == (7, 7, 7)
    assert cube.max() == pytest.approx(1100 / 1400, abs=0.02) and cube.min() < 0.01
    # 4 mm from the centre along z (2.5 mm slices) looks like 4 mm along x (0.7 mm pixels)
    expected = 1100 / 1400 * math.exp(-1.0)
    assert cube[7 + 4, 7, 7] == pytest.approx(expected, abs=0.03)
    assert cube[7, 7, 7 + 4] == pytest.approx(expected, abs=0.01)
    assert cube[7, 7 - 4, 7] == pytest.approx(expected, abs=0.01)
    np.testing.assert_array_equal(cube_at(volume, None, **options), cube)  # the volume's centre
    below = cube_at(volume, ball + np.array([0.0, 0.0, 3.0]), **options)  # 3 mm higher in z
    assert np.unravel_index(np.argmax(below), below.shape) == (4, 7, 7)
