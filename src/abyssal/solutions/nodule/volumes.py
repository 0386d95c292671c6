"""Read CT volumes, map world millimetres to voxels, and crop nodule-centred cubes.

:func:`read_volume` reads ``.npy``, ``.npz``, NIfTI (``.nii``, ``.nii.gz``, with nibabel) and
MetaImage (``.mhd``, ``.mha``, LUNA16's format, with SimpleITK) into a :class:`Volume`;
:func:`read_dicom_series` reads a folder of DICOM slices. :func:`read_candidates` reads a
LUNA16-style CSV of world points, and :func:`crop_cube` resamples a cube around one of them.

Coordinate conventions (those of ITK, SimpleITK, DICOM and LUNA16):

- ``Volume.array`` is indexed ``[z, y, x]`` (slice, row, column), as SimpleITK's
  ``GetArrayFromImage`` gives it; ``Volume.spacing`` is in the same (z, y, x) order.
- World points are (x, y, z) millimetres in the patient's LPS frame (+x to the patient's left,
  +y posterior, +z superior), the frame of DICOM and of LUNA16's ``coordX, coordY, coordZ``.
  ``Volume.origin`` is the world (x, y, z) of the centre of voxel ``[0, 0, 0]``.
- ``Volume.direction`` is ITK's 3x3 direction matrix: column ``c`` is the world (x, y, z) unit
  vector of index axis ``c`` counted in (x, y, z) index order (column 0 is the array's last
  axis), so ``world_xyz = origin + direction @ (spacing_xyz * index_xyz)``.
- NIfTI affines map to RAS+ (+x right, +y anterior); :func:`read_volume` negates their first two
  rows to reach LPS, as ITK does when it reads NIfTI, so a NIfTI and a DICOM copy of one scan
  give the same world points.

Example:
    >>> vol = read_volume("scan.nii.gz")  # doctest: +SKIP
    >>> vol.array.shape, vol.spacing  # doctest: +SKIP
    ((121, 512, 512), (2.5, 0.7, 0.7))
    >>> cand = read_candidates("candidates.csv")[0]  # doctest: +SKIP
    >>> crop_cube(vol, cand.xyz_mm, size_mm=32, voxel_mm=1, fill=-1000).shape  # doctest: +SKIP
    (32, 32, 32)
"""

from __future__ import annotations

import contextlib
import csv
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from abyssal.core.errors import AbyssalError, DataError
from abyssal.core.optional import require

Triple = tuple[float, float, float]
SUFFIXES = (".npy", ".npz", ".nii", ".nii.gz", ".mhd", ".mha")
"""File endings :func:`read_volume` reads (compared in lower case)."""
LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0])
CANDIDATE_COLUMNS = ("seriesuid", "coordX", "coordY", "coordZ")


@dataclass
class Volume:
    """A 3-D scan and its place in the world (see the module docstring for the conventions).

    Attributes:
        array: float32 voxels, indexed (z, y, x).
        spacing: voxel size in mm, (z, y, x) order like ``array``.
        origin: world (x, y, z) mm, LPS, of the centre of voxel ``[0, 0, 0]`` (ITK order).
        direction: 3x3 ITK direction matrix; column c is index axis c, (x, y, z) index order.
        source: where the scan came from, for messages.
        mask: the nodule's mask on the same voxels (a ``.npz``'s ``mask``), float32 in [0, 1]
            (reader counts become agreement: value / the largest value), or ``None``.

    Example:
        >>> v = Volume(np.zeros((2, 3, 4)), spacing=(2.5, 0.7, 0.7))
        >>> v.array.dtype, v.origin, v.direction[0].tolist()
        (dtype('float32'), (0.0, 0.0, 0.0), [1.0, 0.0, 0.0])
    """

    array: np.ndarray
    spacing: Triple
    origin: Triple = (0.0, 0.0, 0.0)
    direction: np.ndarray = field(default_factory=lambda: np.eye(3))
    source: str = "<array>"
    mask: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.array = np.asarray(self.array, dtype=np.float32)  # (D, H, W)
        self.spacing = _triple(self.spacing, "spacing", positive=True)
        self.origin = _triple(self.origin, "origin")
        self.direction = np.asarray(self.direction, dtype=np.float64)
        if self.array.ndim != 3:
            raise ValueError(f"array must be (z, y, x), got shape {self.array.shape}")
        if self.direction.shape != (3, 3) or abs(np.linalg.det(self.direction)) < 1e-6:
            raise ValueError(f"direction must be an invertible 3x3 matrix, got {self.direction}")


@dataclass(frozen=True)
class Candidate:
    """One row of a LUNA16-style CSV: a world point (x, y, z mm, LPS) in one scan."""

    series_uid: str
    xyz_mm: Triple
    label: int | None = None  # LUNA16's 'class': 1 nodule, 0 not
    diameter_mm: float | None = None
    row: int = 0  # 1-based data row in the CSV


def read_volume(path: str | Path, *, spacing: float | Sequence[float] | None = None) -> Volume:
    """Read a scan; the array becomes float32 (z, y, x).

    ``.npy`` holds the array only; ``.npz`` holds it under ``image`` (or as its only array),
    optionally with ``spacing`` (z, y, x mm). Both have origin (0, 0, 0) and identity direction.
    NIfTI (nibabel) and MetaImage (SimpleITK) carry their own geometry.

    Args:
        path: the file.
        spacing: (z, y, x) mm, or one number for all three; overrides the file's spacing (arrays
            without one default to 1 mm).

    Raises:
        DataError: names the file: missing, unknown suffix, unreadable or corrupt, not 3-D (or
            4-D with one channel), empty, non-finite voxels (counted), or a bad geometry.

    Example:
        >>> read_volume("volumes/n1.npz", spacing=(2.5, 0.7, 0.7)).spacing  # doctest: +SKIP
        (2.5, 0.7, 0.7)
    """
    path = Path(path)
    override = None if spacing is None else _triple(spacing, "spacing", positive=True)
    suffix = ".nii.gz" if path.name.lower().endswith(".nii.gz") else path.suffix.lower()
    if suffix not in SUFFIXES:
        ending = f"'{suffix}'" if suffix else "no suffix"
        raise DataError(
            f"unknown volume format ({ending}); supported: {', '.join(SUFFIXES)}", path=path
        )
    if not path.is_file():
        raise DataError(
            "a folder, not a volume file" if path.is_dir() else "no such file", path=path
        )
    readers = {".npy": _read_npy, ".npz": _read_npz, ".nii": _read_nifti, ".nii.gz": _read_nifti}
    volume = readers.get(suffix, _read_metaimage)(path)
    if override is not None:
        volume.spacing = override
    return volume


def read_dicom_series(folder: str | Path, *, series_uid: str | None = None) -> Volume:
    """Read one DICOM series from a folder with SimpleITK (slices sorted by position, rescale
    slope and intercept applied, so CT values are in HU).

    Args:
        folder: the folder of ``.dcm`` files.
        series_uid: which series, when the folder holds several.

    Raises:
        DataError: names the folder: not a folder, no series, several series and no
            ``series_uid``, an unknown ``series_uid``, or unreadable slices.

    Example:
        >>> read_dicom_series("LIDC-IDRI-0001/01-01-2000/3000566").array.shape  # doctest: +SKIP
        (133, 512, 512)
    """
    sitk = require("SimpleITK", extra="dicom", purpose="DICOM series")
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError("not a folder; expected a folder of DICOM slices", path=folder)
    with _decoding(folder, "DICOM"):
        uids = list(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)))
    if not uids or (series_uid is not None and series_uid not in uids):
        wanted = f"series {series_uid!r}" if series_uid else "DICOM series"
        raise DataError(f"no {wanted} in the folder (found {uids})", path=folder)
    if series_uid is None and len(uids) > 1:
        raise DataError(f"{len(uids)} series in the folder {uids}; pass series_uid", path=folder)
    with _decoding(folder, "DICOM"):
        files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series_uid or uids[0])
        return _itk_volume(sitk, sitk.ReadImage(list(files)), folder)


def volume_stem(path: str | Path) -> str:
    """A volume file's name without its suffix (``.nii.gz`` counts as one).

    Example:
        >>> volume_stem("scans/1.2.3.nii.gz"), volume_stem("n1.npz")
        ('1.2.3', 'n1')
    """
    path = Path(path)
    name = path.name
    for suffix in SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def dicom_series(folder: str | Path) -> list[str]:
    """The DICOM series uids in a folder (SimpleITK/GDCM), in the order GDCM lists them.

    Raises:
        DataError: names the folder: not a folder, or unreadable.
    """
    sitk = require("SimpleITK", extra="dicom", purpose="DICOM series")
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError("not a folder; expected a folder of DICOM slices", path=folder)
    with _decoding(folder, "DICOM"):
        return list(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)))


def world_to_voxel(volume: Volume, xyz_mm: Sequence[float] | np.ndarray) -> np.ndarray:
    """Continuous (z, y, x) array index of world (x, y, z) mm points.

    Shapes:
        (..., 3) in, (..., 3) out.

    Example:
        >>> v = Volume(np.zeros((4, 4, 4)), spacing=(2.0, 1.0, 0.5), origin=(10.0, 20.0, 30.0))
        >>> world_to_voxel(v, (11.0, 21.0, 34.0)).tolist()
        [2.0, 1.0, 2.0]
    """
    rel = np.asarray(xyz_mm, dtype=np.float64) - np.asarray(volume.origin)  # (..., 3) xyz
    index_xyz = rel @ np.linalg.inv(volume.direction).T / np.asarray(volume.spacing[::-1])
    return index_xyz[..., ::-1]


def voxel_to_world(volume: Volume, zyx_index: Sequence[float] | np.ndarray) -> np.ndarray:
    """World (x, y, z) mm of continuous (z, y, x) array indices; the inverse of
    :func:`world_to_voxel`.

    Shapes:
        (..., 3) in, (..., 3) out.

    Example:
        >>> v = Volume(np.zeros((4, 4, 4)), spacing=(2.0, 1.0, 0.5), origin=(10.0, 20.0, 30.0))
        >>> voxel_to_world(v, (2, 1, 2)).tolist()
        [11.0, 21.0, 34.0]
    """
    index_xyz = np.asarray(zyx_index, dtype=np.float64)[..., ::-1]
    return np.asarray(volume.origin) + (index_xyz * volume.spacing[::-1]) @ volume.direction.T


def crop_cube(
    volume: Volume,
    center_xyz_mm: Sequence[float],
    *,
    size_mm: float | Sequence[float] | None = None,
    voxel_mm: float | Sequence[float] | None = None,
    out_shape: int | Sequence[int] | None = None,
    fill: float,
    name: str | None = None,
) -> np.ndarray:
    """Resample a box centred on a world point, with trilinear interpolation
    (``scipy.ndimage.map_coordinates``, order 1).

    Give two of ``size_mm``, ``voxel_mm`` and ``out_shape`` (each one number or (z, y, x)); the
    third follows (size_mm must hold a whole number of voxel_mm), and all three must agree.
    The box's axes follow the world axes (output z, y, x = world +z, +y, +x, LPS) whatever the
    scan's direction, so crops of scans stored in different orientations line up. The centre
    falls at index (n - 1) / 2 of each axis (between two voxels when n is even). Points outside
    the scan get ``fill`` (-1000 for air in HU).

    Args:
        volume: the scan.
        center_xyz_mm: the box centre, world (x, y, z) mm.
        size_mm: the box's edge lengths in mm.
        voxel_mm: the output voxel size in mm.
        out_shape: the output shape in voxels.
        fill: the value outside the scan.
        name: what messages call the point (e.g. a candidate's series and row).

    Returns:
        The box, float32.

    Shapes:
        (out_z, out_y, out_x).

    Raises:
        DataError: the centre lies outside the scan (names the point and the scan's world extent).
        ValueError: not two of size_mm, voxel_mm and out_shape, or they disagree.

    Example:
        >>> v = Volume(np.ones((10, 20, 20)), spacing=(2.5, 0.7, 0.7))
        >>> crop_cube(v, (7.0, 7.0, 12.5), size_mm=8, voxel_mm=1, fill=0).shape
        (8, 8, 8)
    """
    ndimage = require("scipy.ndimage", extra="nodule", purpose="resampling crops")
    center = np.asarray(_triple(center_xyz_mm, "center_xyz_mm"))
    _check_inside(volume, center, name)
    shape, voxel = _grid(size_mm, voxel_mm, out_shape)
    offsets = [(np.arange(n) - (n - 1) / 2) * v for n, v in zip(shape, voxel, strict=True)]
    dz, dy, dx = np.meshgrid(*offsets, indexing="ij")  # each (out_z, out_y, out_x)
    points = center + np.stack([dx, dy, dz], axis=-1)  # (out_z, out_y, out_x, 3) world xyz
    index = world_to_voxel(volume, points).reshape(-1, 3).T  # (3, N) zyx
    values = ndimage.map_coordinates(volume.array, index, order=1, mode="constant", cval=fill)
    return values.reshape(shape).astype(np.float32)


def world_extent(volume: Volume) -> tuple[np.ndarray, np.ndarray]:
    """Lowest and highest world (x, y, z) mm covered by the scan's voxels (outer edges).

    Example:
        >>> v = Volume(np.zeros((2, 2, 2)), spacing=(1.0, 1.0, 1.0))
        >>> [a.tolist() for a in world_extent(v)]
        [[-0.5, -0.5, -0.5], [1.5, 1.5, 1.5]]
    """
    edges = [(-0.5, n - 0.5) for n in volume.array.shape]
    corners = np.array(np.meshgrid(*edges, indexing="ij")).reshape(3, -1).T  # (8, 3) zyx
    world = voxel_to_world(volume, corners)
    return world.min(axis=0), world.max(axis=0)


def read_candidates(path: str | Path) -> list[Candidate]:
    """Read a LUNA16-style CSV: ``seriesuid, coordX, coordY, coordZ`` (world mm, LPS), with
    optional ``class`` (0 or 1) and ``diameter_mm`` columns. Column names ignore case.

    Raises:
        DataError: names the file (and the 1-based data row and column): unreadable, empty,
            missing columns, empty series uid, non-numeric or non-finite numbers.

    Example:
        >>> read_candidates("annotations.csv")[0].diameter_mm  # doctest: +SKIP
        5.65
    """
    path = Path(path)
    header, rows = _read_csv(path)
    columns = {h: j for j, h in enumerate(header)}
    missing = [c for c in CANDIDATE_COLUMNS if c.lower() not in columns]
    if missing:
        raise DataError(
            f"missing column(s) {missing}; expected seriesuid, coordX, coordY, coordZ and "
            f"optionally class and diameter_mm (found {header})",
            path=path,
        )
    return [_candidate(cells, columns, path, n) for n, cells in rows]


# --- readers -----------------------------------------------------------------------------------


@contextlib.contextmanager
def _decoding(path: Path, what: str) -> Iterator[None]:
    """Turn whatever a decoder raises into a DataError naming the file."""
    try:
        yield
    except (AbyssalError, MemoryError):
        raise
    except Exception as e:  # numpy, zipfile, gzip, zlib, nibabel, ITK: no common base class
        reason = f"cannot be read as {what} ({type(e).__name__}: {e}); a corrupt or misnamed file?"
        raise DataError(reason, path=path) from None


def _read_npy(path: Path) -> Volume:
    with _decoding(path, "a .npy array"):
        array = np.load(path, allow_pickle=False)
    if not isinstance(array, np.ndarray):
        raise DataError("holds a .npz archive, not a .npy array; rename it to .npz", path=path)
    return Volume(_checked_array(array, path), spacing=(1.0, 1.0, 1.0), source=str(path))


def _read_npz(path: Path) -> Volume:
    with _decoding(path, "a .npz archive"), np.load(path, allow_pickle=False) as archive:
        arrays = {k: archive[k] for k in archive.files}
    images = [k for k in arrays if k not in ("spacing", "mask")]
    key = "image" if "image" in arrays else images[0] if len(images) == 1 else None
    if key is None:
        raise DataError(f"expected an 'image' array or a single array, got {images}", path=path)
    spacing = (1.0, 1.0, 1.0)
    if "spacing" in arrays:
        try:
            spacing = _triple(arrays["spacing"].tolist(), "spacing", positive=True)
        except (ValueError, TypeError) as e:
            raise DataError(f"bad 'spacing' array ({e})", path=path) from None
    image = _checked_array(arrays[key], path)
    mask = _checked_mask(arrays["mask"], image.shape, path) if "mask" in arrays else None
    return Volume(image, spacing=spacing, source=str(path), mask=mask)


def _checked_mask(array: np.ndarray, shape: tuple[int, ...], path: Path) -> np.ndarray:
    """A ``mask`` array as agreement in [0, 1] (value / its maximum), or a DataError."""
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
        raise DataError(f"'mask': expected numbers, got dtype {array.dtype}", path=path)
    if array.shape != shape:
        raise DataError(
            f"'mask' has shape {array.shape}, the image {shape}; they must match", path=path
        )
    mask = np.asarray(array, dtype=np.float32)
    if not np.isfinite(mask).all() or (mask < 0).any():
        raise DataError("'mask' holds negative, NaN or infinite values", path=path)
    top = float(mask.max())
    return mask / top if top > 0 else mask


def _read_nifti(path: Path) -> Volume:
    nib = require("nibabel", extra="nodule", purpose="NIfTI volumes")
    with _decoding(path, "NIfTI"):
        image = nib.load(path)
        data = image.get_fdata(dtype=np.float32)  # (i, j, k), scl_slope/scl_inter applied
        affine = np.asarray(image.affine, dtype=np.float64)  # voxel (i, j, k) -> RAS mm
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise DataError(f"expected a 3-D NIfTI volume, got shape {data.shape}", path=path)
    lps = LPS_FROM_RAS @ affine[:3]  # (3, 4): ITK's reading of the same file
    spacing_ijk = np.linalg.norm(lps[:, :3], axis=0)
    if not (np.isfinite(lps).all() and (spacing_ijk > 0).all()):
        raise DataError(f"the affine is degenerate (zero or non-finite):\n{affine}", path=path)
    return _geometry_volume(
        data.transpose(2, 1, 0), spacing_ijk, lps[:, 3], lps[:, :3] / spacing_ijk, path
    )


def _read_metaimage(path: Path) -> Volume:
    sitk = require("SimpleITK", extra="dicom", purpose="MetaImage volumes")
    with _decoding(path, "MetaImage"):
        return _itk_volume(sitk, sitk.ReadImage(str(path)), path)


def _itk_volume(sitk: object, image: object, source: Path) -> Volume:
    """A SimpleITK image as a Volume: its array is already (z, y, x), its geometry (x, y, z)."""
    array = sitk.GetArrayFromImage(image)  # type: ignore[attr-defined]
    spacing, origin = image.GetSpacing(), image.GetOrigin()  # type: ignore[attr-defined]
    direction = np.asarray(image.GetDirection(), dtype=np.float64)  # type: ignore[attr-defined]
    if direction.size != 9:
        raise DataError(f"expected a 3-D image, got {direction.size**0.5:.0f}-D", path=source)
    return _geometry_volume(array, spacing, origin, direction.reshape(3, 3), source)


def _geometry_volume(
    array_zyx: np.ndarray,
    spacing_xyz: Sequence[float],
    origin_xyz: Sequence[float],
    direction: np.ndarray,
    source: Path,
) -> Volume:
    """A Volume from ITK-ordered geometry: spacing and origin (x, y, z), array (z, y, x)."""
    array = _checked_array(array_zyx, source)
    try:
        return Volume(array, tuple(spacing_xyz)[::-1], tuple(origin_xyz), direction, str(source))
    except ValueError as e:
        raise DataError(f"bad geometry ({e})", path=source) from None


def _checked_array(array: np.ndarray, path: Path) -> np.ndarray:
    """The voxels as contiguous float32 (z, y, x), or a DataError saying what is wrong."""
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
        raise DataError(f"expected numeric voxels, got dtype {array.dtype}", path=path)
    if array.ndim == 4 and 1 in (array.shape[0], array.shape[-1]):
        array = array[..., 0] if array.shape[-1] == 1 else array[0]
    if array.ndim != 3:
        raise DataError(
            f"expected a 3-D volume (z, y, x) or 4-D with one channel, got shape {array.shape}",
            path=path,
        )
    if array.size == 0:
        raise DataError(f"the volume is empty (shape {array.shape})", path=path)
    array = np.ascontiguousarray(array, dtype=np.float32)
    bad = array.size - int(np.count_nonzero(np.isfinite(array)))
    if bad:
        raise DataError(f"{bad} of {array.size} voxels are NaN or infinite", path=path)
    return array


# --- crops -------------------------------------------------------------------------------------


def _check_inside(volume: Volume, center: np.ndarray, name: str | None) -> None:
    index = world_to_voxel(volume, center)
    if ((index >= -0.5) & (index <= np.asarray(volume.array.shape) - 0.5)).all():
        return
    lo, hi = world_extent(volume)
    spans = ", ".join(f"{a} {lo[i]:.1f}..{hi[i]:.1f}" for i, a in enumerate("xyz"))
    raise DataError(
        f"candidate {name + ' ' if name else ''}at (x, y, z) = "
        f"({', '.join(f'{c:.1f}' for c in center)}) mm "
        f"lies outside the scan, which spans {spans} mm (world, LPS)",
        path=volume.source,
    )


def _grid(
    size_mm: float | Sequence[float] | None,
    voxel_mm: float | Sequence[float] | None,
    out_shape: int | Sequence[int] | None,
) -> tuple[tuple[int, int, int], np.ndarray]:
    """The output shape and voxel size (z, y, x) from two or three of the crop arguments."""
    if sum(a is not None for a in (size_mm, voxel_mm, out_shape)) < 2:
        raise ValueError("give two of size_mm, voxel_mm and out_shape")
    size = None if size_mm is None else np.asarray(_triple(size_mm, "size_mm", positive=True))
    voxel = None if voxel_mm is None else np.asarray(_triple(voxel_mm, "voxel_mm", positive=True))
    if out_shape is None:
        shape = tuple(max(1, round(s)) for s in size / voxel)  # type: ignore[operator]
    else:
        shape = tuple(int(n) for n in _triple(out_shape, "out_shape", positive=True))
        if not np.allclose(shape, _triple(out_shape, "out_shape")):
            raise ValueError(f"out_shape must be whole numbers, got {out_shape!r}")
    voxel = size / np.asarray(shape) if voxel is None else voxel
    if size is not None and not np.allclose(voxel * shape, size, rtol=1e-3):
        raise ValueError(f"voxel_mm {voxel.tolist()} x out_shape {shape} != size_mm {size}")
    return shape, voxel  # type: ignore[return-value]


def _triple(value: float | Sequence[float], what: str, *, positive: bool = False) -> Triple:
    """Three finite floats (one number is repeated); ValueError naming ``what`` otherwise."""
    values = [value] * 3 if np.ndim(value) == 0 else list(value)  # type: ignore[arg-type]
    if len(values) != 3:
        raise ValueError(f"{what} must be one number or three, got {value!r}")
    out = tuple(float(v) for v in values)
    if not all(math.isfinite(v) and (v > 0 or not positive) for v in out):
        raise ValueError(f"{what} must be finite{' and > 0' if positive else ''}, got {value!r}")
    return out  # type: ignore[return-value]


# --- candidates --------------------------------------------------------------------------------


def _read_csv(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """The header (stripped, lower case) and the data rows with their 1-based numbers."""
    try:
        with path.open(encoding="utf-8-sig", newline="") as fh:
            lines = [row for row in csv.reader(fh) if any(c.strip() for c in row)]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"cannot be read as a CSV file ({e})", path=path) from e
    if len(lines) < 2:
        raise DataError("expected a header (seriesuid, coordX, ...) and rows", path=path)
    return [h.strip().lower() for h in lines[0]], list(enumerate(lines[1:], start=1))


def _candidate(cells: list[str], columns: dict[str, int], path: Path, row: int) -> Candidate:
    def cell(name: str) -> str:
        j = columns[name.lower()]
        return cells[j].strip() if j < len(cells) else ""

    def number(name: str) -> float:
        text = cell(name)
        try:
            value = float(text)
        except ValueError:
            raise DataError(
                f"expected a number, got {text!r}", path=path, row=row, column=name
            ) from None
        if not math.isfinite(value):
            raise DataError(
                f"expected a finite number, got {text!r}", path=path, row=row, column=name
            )
        return value

    uid = cell("seriesuid")
    if not uid:
        raise DataError("empty series uid", path=path, row=row, column="seriesuid")
    label = None if "class" not in columns else number("class")
    if label is not None and not label.is_integer():
        raise DataError(
            f"expected an integer class (LUNA16: 0 or 1), got {cell('class')!r}",
            path=path,
            row=row,
            column="class",
        )
    diameter = number("diameter_mm") if "diameter_mm" in columns else None
    xyz = (number("coordX"), number("coordY"), number("coordZ"))
    return Candidate(uid, xyz, None if label is None else int(label), diameter, row)
