"""CT volume input: readers, world <-> voxel maps, nodule-centred crops, candidate CSVs."""

from __future__ import annotations

import csv
import re
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from abyssal.core.errors import DataError
from abyssal.solutions.nodule.volumes import (
    Candidate,
    Volume,
    crop_cube,
    read_candidates,
    read_dicom_series,
    read_volume,
    voxel_to_world,
    world_extent,
    world_to_voxel,
)
from tests.conftest import dataset

SPACING = (2.5, 0.7, 0.7)  # (z, y, x) mm: thick slices, fine in-plane
SHAPE = (24, 40, 40)  # (z, y, x)
CENTRE = np.array([-88.0, 65.2, -274.3])  # world (x, y, z) mm of the sphere
CENTRE_INDEX_XYZ = np.array([17.2, 21.7, 10.3])  # where it falls, off the voxel grid
RADIUS = 5.0
IDENTITY = np.eye(3)
FLIP_X = np.diag([-1.0, 1.0, 1.0])
RAS = np.diag([-1.0, -1.0, 1.0])  # an LPS direction for a volume stored RAS-wise


def voxel_world(shape: tuple[int, ...], spacing, origin, direction) -> np.ndarray:
    """World (x, y, z) of every voxel centre by ITK's definition, (D, H, W, 3)."""
    k, j, i = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    index_mm = np.stack([i, j, k], axis=-1) * np.asarray(spacing[::-1])  # (D, H, W, 3) xyz
    return np.asarray(origin) + index_mm @ np.asarray(direction).T


def sphere_volume(direction: np.ndarray = IDENTITY, ball: np.ndarray = CENTRE) -> Volume:
    """A smooth bright ball of RADIUS mm around ``ball`` in an anisotropic scan whose voxel
    CENTRE_INDEX_XYZ lies at the world point CENTRE."""
    origin = CENTRE - direction @ (np.asarray(SPACING[::-1]) * CENTRE_INDEX_XYZ)
    world = voxel_world(SHAPE, SPACING, origin, direction)
    distance = np.linalg.norm(world - ball, axis=-1)
    array = 1.0 / (1.0 + np.exp((distance - RADIUS) / 0.5))
    return Volume(array, SPACING, tuple(origin), direction, "sphere")


def centre_of_mass(cube: np.ndarray) -> np.ndarray:
    grids = np.meshgrid(*[np.arange(n) for n in cube.shape], indexing="ij")
    return np.array([(g * cube).sum() / cube.sum() for g in grids])  # (z, y, x)


def axis_spread(cube: np.ndarray) -> np.ndarray:
    """Standard deviation of the intensity along z, y and x, in voxels."""
    mean = centre_of_mass(cube)
    grids = np.meshgrid(*[np.arange(n) for n in cube.shape], indexing="ij")
    return np.array(
        [
            np.sqrt(((g - m) ** 2 * cube).sum() / cube.sum())
            for g, m in zip(grids, mean, strict=True)
        ]
    )


# --- crops -------------------------------------------------------------------------------------


@pytest.mark.parametrize("direction", [IDENTITY, FLIP_X, RAS], ids=["identity", "flip-x", "ras"])
def test_crop_finds_the_sphere_centred_and_round(direction: np.ndarray) -> None:
    volume = sphere_volume(direction)
    cube = crop_cube(volume, CENTRE, size_mm=25, voxel_mm=1.0, fill=0.0)
    assert cube.shape == (25, 25, 25) and cube.dtype == np.float32
    np.testing.assert_allclose(centre_of_mass(cube), [12, 12, 12], atol=0.5)
    assert cube[12, 12, 12] > 0.95 and cube[0, 0, 0] < 0.01
    spread = axis_spread(cube)  # 1 mm voxels: a ball spreads alike along every axis
    assert spread.max() / spread.min() < 1.25, spread
    raw_spread = axis_spread(volume.array)  # the stored voxels do not: 2.5 mm vs 0.7 mm
    assert raw_spread[2] / raw_spread[0] > 2.5


def test_crop_is_exact_on_a_linear_ramp_with_flipped_axes() -> None:
    """Trilinear interpolation reproduces a linear function: every crop voxel is predictable."""
    direction = RAS
    origin = (30.0, -20.0, 100.0)
    coef = np.array([1.0, -2.0, 0.5])  # value = x - 2y + 0.5z
    world = voxel_world(SHAPE, SPACING, origin, direction)
    volume = Volume(world @ coef, SPACING, origin, direction, "ramp")
    centre = voxel_to_world(volume, (12.0, 20.0, 20.0))
    cube = crop_cube(volume, centre, voxel_mm=(2.0, 1.0, 0.5), out_shape=(5, 7, 9), fill=0.0)
    dz, dy, dx = np.meshgrid(*[(np.arange(n) - (n - 1) / 2) * v for n, v in
                              [(5, 2.0), (7, 1.0), (9, 0.5)]], indexing="ij")  # fmt: skip
    expected = (centre + np.stack([dx, dy, dz], axis=-1)) @ coef
    np.testing.assert_allclose(cube, expected, atol=1e-3)


def test_crop_axes_follow_world_axes() -> None:
    """A marker 6 mm to +x of the centre lands at a higher x index, whatever the storage."""
    for direction in (IDENTITY, FLIP_X, RAS):
        volume = sphere_volume(direction, ball=CENTRE + np.array([6.0, 0.0, 0.0]))
        cube = crop_cube(volume, CENTRE, size_mm=(11, 11, 31), voxel_mm=1.0, fill=0.0)
        np.testing.assert_allclose(centre_of_mass(cube), [5, 5, 15 + 6], atol=0.5)


def test_crop_pads_outside_the_scan_with_fill() -> None:
    volume = Volume(np.ones((6, 8, 8)), spacing=(2.0, 1.0, 1.0), origin=(5.0, 5.0, 5.0))
    cube = crop_cube(volume, (5.0, 5.0, 5.0), size_mm=8, out_shape=8, fill=-1000.0)
    assert cube[0, 0, 0] == -1000.0  # 3.5 mm below the first voxel on every axis
    assert cube[-1, -1, -1] == 1.0
    assert np.isin(cube, [-1000.0, 1.0]).all()


def test_crop_outside_the_scan_names_candidate_and_extent() -> None:
    volume = Volume(np.zeros((4, 4, 4)), spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0))
    volume.source = "scan-7.mhd"
    with pytest.raises(DataError, match=r"scan-7\.mhd: candidate 1\.3\.6 row 3 at .*\(50\.0, 1\.0"):
        crop_cube(volume, (50.0, 1.0, 1.0), size_mm=4, voxel_mm=1, fill=0, name="1.3.6 row 3")
    with pytest.raises(DataError, match=r"spans x -0\.5\.\.3\.5, y -0\.5\.\.3\.5, z -0\.5\.\.3\.5"):
        crop_cube(volume, (1.0, 1.0, -2.0), size_mm=4, voxel_mm=1, fill=0)


def test_crop_needs_two_consistent_grid_arguments() -> None:
    volume = Volume(np.zeros((4, 4, 4)), spacing=(1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="two of size_mm, voxel_mm and out_shape"):
        crop_cube(volume, (1, 1, 1), size_mm=4, fill=0)
    with pytest.raises(ValueError, match="!= size_mm"):
        crop_cube(volume, (1, 1, 1), size_mm=4, voxel_mm=1, out_shape=3, fill=0)
    with pytest.raises(ValueError, match="voxel_mm must be finite and > 0"):
        crop_cube(volume, (1, 1, 1), voxel_mm=(1, 0, 1), out_shape=3, fill=0)
    assert (
        crop_cube(volume, (1, 1, 1), size_mm=4, voxel_mm=1, out_shape=4, fill=0).shape == (4,) * 3
    )


# --- world <-> voxel ---------------------------------------------------------------------------


def test_world_voxel_round_trip_with_rotated_flipped_axes() -> None:
    c, s = np.cos(np.pi / 6), np.sin(np.pi / 6)
    direction = np.array([[c, -s, 0], [s, c, 0], [0, 0, -1]])  # tilted in-plane, feet first
    volume = Volume(np.zeros((5, 6, 7)), (2.5, 0.7, 0.6), (-10.0, 4.0, 300.0), direction)
    index = np.random.default_rng(0).uniform(-2, 8, size=(20, 3))  # (20, 3) zyx
    world = voxel_to_world(volume, index)
    assert world.shape == (20, 3)
    np.testing.assert_allclose(world_to_voxel(volume, world), index, atol=1e-9)
    np.testing.assert_allclose(voxel_to_world(volume, (1, 0, 0)), [-10.0, 4.0, 297.5])  # down
    column = voxel_to_world(volume, (0, 0, 1))  # one column: 0.6 mm along the tilted x axis
    np.testing.assert_allclose(column, [-10.0 + 0.6 * c, 4.0 + 0.6 * s, 300.0])
    np.testing.assert_allclose(world_to_voxel(volume, column), [0, 0, 1], atol=1e-12)


def test_world_voxel_by_hand_with_a_flipped_x() -> None:
    volume = Volume(np.zeros((4, 4, 4)), (2.0, 1.0, 0.5), (10.0, 20.0, 30.0), FLIP_X)
    np.testing.assert_allclose(voxel_to_world(volume, (1, 2, 3)), [8.5, 22.0, 32.0])
    np.testing.assert_allclose(world_to_voxel(volume, (8.5, 22.0, 32.0)), [1, 2, 3])
    low, high = world_extent(volume)
    np.testing.assert_allclose(low, [10.0 - 3.5 * 0.5, 19.5, 29.0])
    np.testing.assert_allclose(high, [10.25, 23.5, 37.0])


# --- NIfTI -------------------------------------------------------------------------------------


def write_nifti(
    path: Path, array_zyx: np.ndarray, affine: np.ndarray, channel: bool = False
) -> Path:
    """NIfTI stores (i, j, k) = (x, y, z) index order; ``channel`` adds a 4th axis of size 1."""
    nib = pytest.importorskip("nibabel")
    data = array_zyx.transpose(2, 1, 0).astype(np.float32)  # (x, y, z)
    nib.save(nib.Nifti1Image(data[..., None] if channel else data, affine), path)
    return path


def test_nifti_round_trip_finds_the_sphere(tmp_path: Path) -> None:
    scan = sphere_volume()  # LPS identity direction
    ras = np.eye(4)
    ras[:3, :3] = RAS @ np.diag(SPACING[::-1])  # NIfTI's affine maps to RAS
    ras[:3, 3] = RAS @ np.asarray(scan.origin)
    path = write_nifti(tmp_path / "sphere.nii.gz", scan.array, ras)
    volume = read_volume(path)
    np.testing.assert_allclose(volume.spacing, SPACING)
    np.testing.assert_allclose(volume.origin, scan.origin, atol=1e-4)
    np.testing.assert_allclose(volume.direction, np.eye(3), atol=1e-6)
    np.testing.assert_allclose(volume.array, scan.array, atol=1e-6)
    assert volume.source == str(path)
    cube = crop_cube(volume, CENTRE, size_mm=25, voxel_mm=1.0, fill=0.0)
    np.testing.assert_allclose(centre_of_mass(cube), [12, 12, 12], atol=0.5)


def test_nifti_affine_becomes_itk_lps(tmp_path: Path) -> None:
    nib = pytest.importorskip("nibabel")
    affine = np.array([[0.8, 0, 0, -50], [0, 0.6, 0, 20], [0, 0, 3.0, -100], [0, 0, 0, 1]])
    path = write_nifti(tmp_path / "ras.nii", np.zeros((4, 5, 6)), affine, channel=True)
    volume = read_volume(path)
    assert volume.array.shape == (4, 5, 6)
    assert volume.spacing == pytest.approx((3.0, 0.6, 0.8))
    assert volume.origin == pytest.approx((50.0, -20.0, -100.0))
    np.testing.assert_allclose(volume.direction, RAS)
    ras = nib.affines.apply_affine(affine, [5, 4, 3])  # voxel (i, j, k) = (x, y, z) index
    np.testing.assert_allclose(voxel_to_world(volume, (3, 4, 5)), RAS @ ras)


def test_nifti_corrupt_or_degenerate(tmp_path: Path) -> None:
    nib = pytest.importorskip("nibabel")
    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(DataError, match=r"broken\.nii\.gz: cannot be read as NIfTI"):
        read_volume(bad)
    image = nib.Nifti1Image(np.zeros((2, 3, 4), np.float32), np.eye(4))
    image.set_sform(np.diag([1.0, 0.0, 1.0, 1.0]), code=2)  # y voxels of zero size
    image.set_qform(None, code=0)
    nib.save(image, flat := tmp_path / "flat.nii")
    with pytest.raises(DataError, match=r"flat\.nii: the affine is degenerate"):
        read_volume(flat)


# --- arrays and errors -------------------------------------------------------------------------


def test_npy_and_npz(tmp_path: Path) -> None:
    image = np.arange(60, dtype=np.uint8).reshape(3, 4, 5)
    np.save(tmp_path / "a.npy", image)
    volume = read_volume(tmp_path / "a.npy")
    assert volume.array.dtype == np.float32 and volume.array[2, 3, 4] == 59.0
    assert volume.spacing == (1.0, 1.0, 1.0) and volume.origin == (0.0, 0.0, 0.0)
    assert read_volume(tmp_path / "a.npy", spacing=2).spacing == (2.0, 2.0, 2.0)
    np.savez(tmp_path / "b.npz", image=image, mask=image * 0, spacing=np.array([2.5, 0.7, 0.7]))
    volume = read_volume(tmp_path / "b.npz")
    assert volume.spacing == (2.5, 0.7, 0.7) and volume.array.max() == 59.0
    assert read_volume(tmp_path / "b.npz", spacing=(1, 2, 3)).spacing == (1.0, 2.0, 3.0)
    np.savez(tmp_path / "c.npz", image[None])  # one array (arr_0), channel first
    assert read_volume(tmp_path / "c.npz").array.shape == (3, 4, 5)
    np.save(tmp_path / "d.npy", image[..., None])  # channel last
    assert read_volume(tmp_path / "d.npy").array.shape == (3, 4, 5)


@pytest.mark.parametrize(
    ("name", "array", "message"),
    [
        ("flat.npy", np.zeros((4, 5)), r"expected a 3-D volume .* got shape \(4, 5\)"),
        (
            "multi.npy",
            np.zeros((2, 3, 4, 5)),
            r"expected a 3-D .* one channel, got shape \(2, 3, 4, 5\)",
        ),
        ("empty.npy", np.zeros((0, 4, 4)), r"the volume is empty \(shape \(0, 4, 4\)\)"),
        ("text.npy", np.full((2, 2, 2), "a"), "expected numeric voxels"),
    ],
)
def test_bad_arrays(tmp_path: Path, name: str, array: np.ndarray, message: str) -> None:
    np.save(tmp_path / name, array)
    with pytest.raises(DataError, match=re.escape(name) + ": " + message):
        read_volume(tmp_path / name)


def test_non_finite_voxels_are_counted(tmp_path: Path) -> None:
    array = np.zeros((3, 4, 5))
    array[0, 0, :2] = np.nan
    array[2, 3, 4] = -np.inf
    np.savez(tmp_path / "nan.npz", image=array)
    with pytest.raises(DataError, match=r"nan\.npz: 3 of 60 voxels are NaN or infinite"):
        read_volume(tmp_path / "nan.npz")


def test_file_errors(tmp_path: Path) -> None:
    (tmp_path / "scan.txt").write_text("1 2 3")
    with pytest.raises(DataError, match=r"scan\.txt: unknown volume format \('\.txt'\); .*\.npy"):
        read_volume(tmp_path / "scan.txt")
    with pytest.raises(DataError, match=r"missing\.npy: no such file"):
        read_volume(tmp_path / "missing.npy")
    (tmp_path / "junk.npz").write_bytes(b"not a zip archive")
    with pytest.raises(DataError, match=r"junk\.npz: cannot be read as a \.npz archive"):
        read_volume(tmp_path / "junk.npz")
    (tmp_path / "junk.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(DataError, match=r"junk\.npy: cannot be read as a \.npy array"):
        read_volume(tmp_path / "junk.npy")
    with (tmp_path / "npz.npy").open("wb") as fh:  # a file object keeps the misleading name
        np.savez(fh, image=np.zeros((2, 2, 2)))
    with pytest.raises(DataError, match=r"npz\.npy: holds a \.npz archive"):
        read_volume(tmp_path / "npz.npy")
    np.savez(tmp_path / "two.npz", a=np.zeros((2, 2, 2)), b=np.zeros((2, 2, 2)))
    with pytest.raises(DataError, match=r"two\.npz: expected an 'image' array .* \['a', 'b'\]"):
        read_volume(tmp_path / "two.npz")
    np.savez(tmp_path / "sp.npz", image=np.zeros((2, 2, 2)), spacing=np.array([1.0, -1.0, 1.0]))
    with pytest.raises(DataError, match=r"sp\.npz: bad 'spacing' array"):
        read_volume(tmp_path / "sp.npz")


# --- SimpleITK glue (a stand-in module: the real one is an optional, large dependency) ------------


class FakeImage:
    def __init__(self, array: np.ndarray, direction: tuple[float, ...]) -> None:
        self.array, self.direction = array, direction

    def GetSpacing(self) -> tuple[float, ...]:  # SimpleITK's names
        return (0.6, 0.7, 2.5)  # (x, y, z)

    def GetOrigin(self) -> tuple[float, ...]:
        return (1.0, 2.0, 3.0)

    def GetDirection(self) -> tuple[float, ...]:
        return self.direction


def fake_sitk(monkeypatch: pytest.MonkeyPatch, series: list[str]) -> FakeImage:
    direction = (0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0)  # row-major, a permutation
    image = FakeImage(np.ones((3, 4, 5), dtype=np.int16), direction)
    reader = SimpleNamespace(
        GetGDCMSeriesIDs=lambda folder: tuple(series),
        GetGDCMSeriesFileNames=lambda folder, uid: (f"{folder}/{uid}-1.dcm",),
    )
    module = SimpleNamespace(
        ReadImage=lambda files: image,
        GetArrayFromImage=lambda img: img.array,
        ImageSeriesReader=reader,
    )
    monkeypatch.setitem(sys.modules, "SimpleITK", module)
    return image


def test_metaimage_and_dicom_geometry_via_simpleitk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_sitk(monkeypatch, ["1.2.3"])
    (tmp_path / "scan.mhd").write_text("NDims = 3")
    for volume in (read_volume(tmp_path / "scan.mhd"), read_dicom_series(tmp_path)):
        assert volume.array.shape == (3, 4, 5) and volume.array.dtype == np.float32
        assert volume.spacing == (2.5, 0.7, 0.6) and volume.origin == (1.0, 2.0, 3.0)
        np.testing.assert_allclose(voxel_to_world(volume, (0, 1, 0)), [1.7, 2.0, 3.0])


def test_dicom_series_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_sitk(monkeypatch, ["1.2.3", "4.5.6"])
    with pytest.raises(DataError, match=r"2 series in the folder .*pass series_uid"):
        read_dicom_series(tmp_path)
    with pytest.raises(DataError, match=r"no series '7' in the folder"):
        read_dicom_series(tmp_path, series_uid="7")
    assert read_dicom_series(tmp_path, series_uid="4.5.6").spacing == (2.5, 0.7, 0.6)
    with pytest.raises(DataError, match=r"nope: not a folder"):
        read_dicom_series(tmp_path / "nope")


# --- candidates --------------------------------------------------------------------------------


def write_csv(path: Path, rows: list[list[object]]) -> Path:
    with path.open("w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    return path


def test_read_candidates(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "candidates.csv",
        [
            ["seriesuid", "coordX", "coordY", "coordZ", "class", "diameter_mm"],
            ["1.3.6.1", "-56.08", "-67.85", "-311.92", "1", "5.65"],
            [],
            ["1.3.6.2", "10", "20", "30", "0", "0"],
        ],
    )
    first, second = read_candidates(path)
    assert first == Candidate("1.3.6.1", (-56.08, -67.85, -311.92), 1, 5.65, 1)
    assert second.label == 0 and second.row == 2 and second.xyz_mm == (10.0, 20.0, 30.0)
    plain = write_csv(
        tmp_path / "plain.csv", [["SeriesUID", "coordx", "coordy", "coordz"], ["a", 1, 2, 3]]
    )
    assert read_candidates(plain) == [Candidate("a", (1.0, 2.0, 3.0), None, None, 1)]


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([["seriesuid", "coordX", "coordY"], ["a", 1, 2]], r": missing column\(s\) \['coordZ'\]"),
        ([["seriesuid", "coordX", "coordY", "coordZ"], ["a", 1, 2, 3], ["b", 1, "x", 3]],
         r", row 2, column 'coordY': expected a number, got 'x'"),
        ([["seriesuid", "coordX", "coordY", "coordZ"], ["a", 1, 2, "nan"]],
         r", row 1, column 'coordZ': expected a finite number, got 'nan'"),
        ([["seriesuid", "coordX", "coordY", "coordZ"], ["", 1, 2, 3]],
         r", row 1, column 'seriesuid': empty series uid"),
        ([["seriesuid", "coordX", "coordY", "coordZ", "class"], ["a", 1, 2, 3, "0.5"]],
         r", row 1, column 'class': expected an integer class"),
        ([["seriesuid", "coordX", "coordY", "coordZ"]], r": expected a header .* and rows"),
    ],
)  # fmt: skip
def test_candidate_errors(tmp_path: Path, rows: list[list[object]], message: str) -> None:
    path = write_csv(tmp_path / "cands.csv", rows)
    with pytest.raises(DataError, match=r"cands\.csv" + message):
        read_candidates(path)


# --- the real data set -------------------------------------------------------------------------


@pytest.mark.data
def test_lidc_nodule_crop_reads_with_csv_spacing() -> None:
    root = dataset("lidc_nodules")
    with (root / "nodules.csv").open() as fh:
        row = next(csv.DictReader(fh))
    thickness, pixel = float(row["slice_thickness_mm"]), float(row["pixel_spacing_mm"])
    volume = read_volume(
        root / "volumes" / f"{row['nodule_id']}.npz", spacing=(thickness, pixel, pixel)
    )
    assert volume.array.shape == (int(row["n_slices"]), 64, 64)
    assert volume.spacing == (thickness, pixel, pixel) and 0 <= volume.array.min() <= 255
