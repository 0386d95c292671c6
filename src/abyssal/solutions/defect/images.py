"""Find, label and decode the images of the defect solution.

:func:`list_images` reads one of three layouts into an :class:`ImageListing`:

- ``folder``: one sub-folder per class, as torchvision's ``ImageFolder``
  (``root/<class>/<image>``, images found recursively under each class folder);
- ``csv``: a CSV file with ``path`` and ``label`` columns (and optional box columns);
- ``neu_det``: the NEU-DET data set (``IMAGES/`` and ``ANNOTATIONS/``, optionally
  ``Validation_Images/`` and ``Validation_Annotations/``), class taken from ``<class>_<n>.jpg``.

Defect boxes come from Pascal VOC XML files (:func:`read_voc_boxes`) or the CSV's box columns.
:func:`load_images` decodes a whole listing with :func:`abyssal.data.images.load_image`,
reporting every bad file at once.

Example:
    >>> listing = list_images("demo-defect/images")  # doctest: +SKIP
    >>> listing.layout, listing.classes  # doctest: +SKIP
    ('folder', ['crack', 'patch', 'scratch', 'spot'])
    >>> x, kept, bad = load_images(listing.records, size=64, channels=None)  # doctest: +SKIP
    >>> x.shape  # doctest: +SKIP
    (160, 1, 64, 64)
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Literal
from xml.etree import ElementTree

import numpy as np

from abyssal.core.errors import DataError
from abyssal.data.images import IMAGE_EXTENSIONS, check_size_channels, image_size, load_image

BOX_COLUMNS = ("xmin", "ymin", "xmax", "ymax")
"""A box's coordinates, in pixels of the image as stored: CSV column and VOC ``bndbox`` tags."""
NEU_DET_FOLDERS = (("IMAGES", "ANNOTATIONS"), ("Validation_Images", "Validation_Annotations"))
"""NEU-DET's image folders, each with the folder of its VOC annotations."""
LAYOUTS = (
    "expected one of three layouts: one sub-folder of images per class "
    "(<folder>/<class>/<image>.jpg), a CSV file with 'path' and 'label' columns, or a NEU-DET "
    "folder (IMAGES/ with ANNOTATIONS/)"
)
_EXTENSIONS = ", ".join(sorted(IMAGE_EXTENSIONS))
MAX_LISTED = 10
"""Most bad files named in one error message."""

Layout = Literal["auto", "folder", "csv", "neu_det"]


@dataclass(frozen=True)
class Box:
    """A defect's bounding box, in pixels of the image as stored (as the annotation gives it).

    Example:
        >>> Box(10, 20, 30, 40, "spot").scaled(0.5, 0.25)
        Box(xmin=5.0, ymin=5.0, xmax=15.0, ymax=10.0, label='spot')
    """

    xmin: float
    ymin: float
    xmax: float
    ymax: float
    label: str = ""

    def scaled(self, sx: float, sy: float) -> Box:
        """This box with x coordinates multiplied by ``sx`` and y coordinates by ``sy``."""
        return Box(self.xmin * sx, self.ymin * sy, self.xmax * sx, self.ymax * sy, self.label)


@dataclass(frozen=True)
class ImageRecord:
    """One image: its file, its class (``None`` when unlabelled) and its defect boxes."""

    path: Path
    label: str | None
    boxes: tuple[Box, ...] = ()


@dataclass
class ImageListing:
    """The images found under a path.

    Attributes:
        records: the images, in a stable order (sorted paths, or the CSV's order).
        layout: ``folder``, ``csv``, ``neu_det`` or ``unlabelled``.
        skipped: files seen that are not images, with the reason they were left out.
    """

    records: list[ImageRecord]
    layout: str
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def classes(self) -> list[str]:
        """The distinct labels, sorted."""
        return sorted({r.label for r in self.records if r.label is not None})


def list_images(path: str | Path, layout: Layout = "auto") -> ImageListing:
    """The labelled images under ``path``, in the given or the detected layout.

    ``auto`` picks ``csv`` for a file, ``neu_det`` for a folder holding ``IMAGES/``, and
    ``folder`` otherwise. In the ``folder`` and ``csv`` layouts (a CSV without box columns), an
    image's boxes come from a VOC XML beside it with the same stem (``x.jpg`` + ``x.xml``).

    Args:
        path: the folder (``folder``, ``neu_det``) or the CSV file (``csv``).
        layout: ``auto``, ``folder``, ``csv`` or ``neu_det``.

    Returns:
        The images with their labels and boxes, and the non-image files left out.

    Raises:
        DataError: the path is missing or holds no images (the message describes the layouts),
            an image lies outside a class folder, a class folder is empty, a CSV row is wrong
            (its 1-based row and column), or an annotation is malformed.
        ValueError: ``layout`` is not one of the four.

    Example:
        >>> list_images("neu_det").classes[:2]  # doctest: +SKIP
        ['crazing', 'inclusion']
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"no such file or folder; {LAYOUTS}", path=path)
    if layout == "auto":
        layout = "csv" if path.is_file() else "neu_det" if (path / "IMAGES").is_dir() else "folder"
    readers = {"folder": _list_folder, "csv": _list_csv, "neu_det": _list_neu_det}
    if layout not in readers:
        raise ValueError(f"unknown layout {layout!r}; choose auto, folder, csv or neu_det")
    if (layout == "csv") != path.is_file():
        wanted = "a CSV file" if layout == "csv" else "a folder"
        raise DataError(f"the {layout} layout needs {wanted}; {LAYOUTS}", path=path)
    return readers[layout](path)


def list_unlabelled(path: str | Path) -> ImageListing:
    """Every image file under a folder (recursively, sorted), or a single image file; no labels.

    For pretraining and prediction. Hidden files and folders (``.name``) are ignored; other
    non-image files are recorded in ``skipped``.

    Raises:
        DataError: the path is missing, a single file is not an image, or the folder holds none.

    Example:
        >>> [r.label for r in list_unlabelled("demo-defect/new").records][:2]  # doctest: +SKIP
        [None, None]
    """
    path = Path(path)
    if not path.exists():
        raise DataError("no such file or folder; expected images", path=path)
    if path.is_file():
        if not _is_image(path):
            raise DataError(_not_image_reason(path), path=path)
        return ImageListing([ImageRecord(path, None)], "unlabelled")
    images, skipped = _walk(path)
    if not images:
        raise DataError(f"no image files in the folder ({_EXTENSIONS})", path=path)
    return ImageListing([ImageRecord(p, None) for p in images], "unlabelled", skipped)


def read_voc_boxes(xml_path: Path) -> tuple[Box, ...]:
    """The boxes of a Pascal VOC annotation: each ``object``'s ``name`` and ``bndbox``.

    Raises:
        DataError: names the file: not readable, not XML, not an ``<annotation>``, or an object
            whose ``bndbox`` lacks a coordinate or holds a non-number.

    Example:
        >>> read_voc_boxes(Path("neu_det/ANNOTATIONS/crazing_1.xml"))  # doctest: +SKIP
        (Box(xmin=2.0, ymin=2.0, xmax=193.0, ymax=194.0, label='crazing'),)
    """
    try:
        root = ElementTree.parse(xml_path).getroot()
    except ElementTree.ParseError as e:
        reason = f"not valid XML ({e}); expected a Pascal VOC annotation"
        raise DataError(reason, path=xml_path) from None
    except OSError as e:
        raise DataError(f"cannot be read ({e.strerror or e})", path=xml_path) from e
    if root.tag != "annotation":
        raise DataError(
            f"expected a Pascal VOC <annotation> element at the top, got <{root.tag}>",
            path=xml_path,
        )
    return tuple(_voc_box(obj, k, xml_path) for k, obj in enumerate(root.findall("object"), 1))


def load_images(
    records: Sequence[ImageRecord],
    *,
    size: int,
    channels: int | None,
    skip_bad: bool = False,
    progress: bool = False,
    workers: int = 0,
) -> tuple[np.ndarray, list[int], list[tuple[Path, str]]]:
    """Decode many images into one array, resized to (size, size).

    With ``channels=None`` the set decides: 3 channels if any image is colour, else 1. Grey
    images in a colour set (decided, or ``channels=3``) are repeated into 3 identical channels:
    this happens only here, in loading training data (:func:`load_image` refuses a grey image
    where colour is expected). Colour is never turned into grey unless ``channels=1`` asks.

    Args:
        records: the images.
        size: the side of the square every image is resized to.
        channels: ``None`` (decided by the set), 1 or 3.
        skip_bad: leave out files that cannot be used (returned with their reasons) instead of
            raising.
        progress: show a progress bar.
        workers: decode in this many threads (Pillow releases the GIL while decoding); 0 decodes
            in the calling thread. The order of ``records`` is kept either way.

    Returns:
        ``(pixels, kept, bad)``: the decoded images, the indices into ``records`` of those
        images, and each bad file with the reason.

    Shapes:
        pixels: (N_ok, C, size, size) uint8.

    Raises:
        DataError: with ``skip_bad=False``, after trying every file: lists up to 10 bad files
            with their reasons, and how many there are.

    Example:
        >>> x, kept, bad = load_images(listing.records, size=64, channels=None)  # doctest: +SKIP
        >>> x.shape, len(bad)  # doctest: +SKIP
        ((160, 1, 64, 64), 0)
    """
    check_size_channels(size, channels)
    decode = partial(_decode_or_reason, size=size, channels=channels)
    outcomes = _map_in_order(decode, [r.path for r in records], progress, workers)
    bad = [(r.path, o) for r, o in zip(records, outcomes, strict=True) if isinstance(o, str)]
    if bad and not skip_bad:
        raise _bad_images_error(bad, len(records))
    kept = [i for i, o in enumerate(outcomes) if not isinstance(o, str)]
    return _stack([outcomes[i] for i in kept], size, channels), kept, bad  # type: ignore[misc]


def scaled_boxes(record: ImageRecord, size: int) -> tuple[Box, ...]:
    """The record's boxes in the coordinates of its image resized to (size, size).

    Example:
        >>> record = ImageRecord(Path("a_1.jpg"), "a", (Box(0, 0, 100, 50),))  # 200x200 pixels
        >>> scaled_boxes(record, 100)  # doctest: +SKIP
        (Box(xmin=0.0, ymin=0.0, xmax=50.0, ymax=25.0, label=''),)
    """
    if not record.boxes:
        return ()
    width, height = image_size(record.path)
    return tuple(b.scaled(size / width, size / height) for b in record.boxes)


# --- layouts -----------------------------------------------------------------------------------


def _list_folder(root: Path) -> ImageListing:
    entries = _visible(root)
    loose = [p.name for p in entries if p.is_file() and _is_image(p)]
    if loose:
        names = ", ".join(loose[:MAX_LISTED]) + (", ..." if len(loose) > MAX_LISTED else "")
        raise DataError(
            f"{len(loose)} image(s) directly in the folder ({names}); the folder layout expects "
            "one sub-folder per class (<folder>/<class>/<image>), so move them into one",
            path=root,
        )
    skipped = [(p, _not_image_reason(p)) for p in entries if p.is_file()]
    class_folders = [p for p in entries if p.is_dir()]
    if not class_folders:
        raise DataError(f"no images found for the folder layout; {LAYOUTS}", path=root)
    records: list[ImageRecord] = []
    for folder in class_folders:
        images, other = _walk(folder)
        if not images:
            raise DataError(
                f"class folder '{folder.name}' holds no images ({_EXTENSIONS}); add images "
                "or remove the folder",
                path=folder,
            )
        records += [ImageRecord(p, folder.name, _boxes_beside(p)) for p in images]
        skipped += other
    return ImageListing(records, "folder", skipped)


def _list_neu_det(root: Path) -> ImageListing:
    if not (root / "IMAGES").is_dir():
        raise DataError(f"no IMAGES/ folder for the neu_det layout; {LAYOUTS}", path=root)
    records: list[ImageRecord] = []
    skipped: list[tuple[Path, str]] = []
    for image_folder, note_folder in NEU_DET_FOLDERS:
        if not (root / image_folder).is_dir():
            continue
        for p in _visible(root / image_folder):
            if not (p.is_file() and _is_image(p)):
                skipped.append((p, _not_image_reason(p)))
                continue
            xml = root / note_folder / f"{p.stem}.xml"
            boxes = read_voc_boxes(xml) if xml.is_file() else ()
            records.append(ImageRecord(p, _neu_det_class(p), boxes))
    if not records:
        raise DataError(f"no images found for the neu_det layout; {LAYOUTS}", path=root)
    return ImageListing(records, "neu_det", skipped)


def _neu_det_class(path: Path) -> str:
    match = re.fullmatch(r"(.+)_\d+", path.stem)
    if match is None:
        raise DataError(
            "the name is not <class>_<number>.<ext>, so the image's class is unknown", path=path
        )
    return match.group(1)


def _list_csv(csv_path: Path) -> ImageListing:
    header, rows = _read_csv(csv_path)
    columns = {name: j for j, name in reversed(list(enumerate(header)))}  # first one wins
    wanted = ["path", "label"]
    has_boxes = any(c in columns for c in BOX_COLUMNS)
    for name in wanted + (list(BOX_COLUMNS) if has_boxes else []):
        if name not in columns:
            raise DataError(
                f"missing column '{name}'; the CSV needs at least 'path' and 'label' (and all of "
                f"{', '.join(BOX_COLUMNS)} for boxes); its columns are: {', '.join(header)}",
                path=csv_path,
                column=name,
            )
    seen: dict[Path, tuple[str, int, list[Box]]] = {}
    for row_number, row in rows:
        cell = partial(_cell, row, columns)
        image = _csv_image(cell("path"), csv_path, row_number)
        label = cell("label")
        if not label:
            raise DataError("empty label", path=csv_path, row=row_number, column="label")
        first = seen.setdefault(image, (label, row_number, []))
        if first[0] != label:
            raise DataError(
                f"image {cell('path')!r} is labelled {label!r} here but {first[0]!r} on row "
                f"{first[1]}; an image has one label",
                path=csv_path,
                row=row_number,
                column="label",
            )
        if has_boxes:
            first[2].extend(_csv_box(cell, label, csv_path, row_number))
    records = [
        ImageRecord(p, label, tuple(boxes) if has_boxes else _boxes_beside(p))
        for p, (label, _, boxes) in seen.items()
    ]
    return ImageListing(records, "csv", [])


def _read_csv(csv_path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """The header (stripped, lower case) and the data rows with their 1-based numbers."""
    try:
        with csv_path.open(encoding="utf-8-sig", newline="") as fh:
            lines = [row for row in csv.reader(fh) if any(c.strip() for c in row)]
    except UnicodeDecodeError as e:
        raise DataError(f"not UTF-8 text ({e.reason}); expected a CSV file", path=csv_path) from e
    except (OSError, csv.Error) as e:
        raise DataError(f"cannot be read as CSV ({e})", path=csv_path) from e
    if not lines:
        raise DataError(
            "the CSV is empty; expected a header with 'path' and 'label'", path=csv_path
        )
    if len(lines) == 1:
        raise DataError("the CSV has a header but no rows", path=csv_path)
    header = [h.strip().lower() for h in lines[0]]
    return header, list(enumerate(lines[1:], start=1))


def _cell(row: list[str], columns: dict[str, int], name: str) -> str:
    j = columns[name]
    return row[j].strip() if j < len(row) else ""


def _csv_image(text: str, csv_path: Path, row: int) -> Path:
    if not text:
        raise DataError("empty path", path=csv_path, row=row, column="path")
    image = Path(os.path.normpath(csv_path.parent / Path(text).expanduser()))
    if not image.is_file():
        what = "is a folder, not an image file" if image.is_dir() else "no such image file"
        raise DataError(f"{what}: {image}", path=csv_path, row=row, column="path")
    return image


def _csv_box(cell: partial[str], label: str, csv_path: Path, row: int) -> list[Box]:
    """The row's box, or none when all four box cells are empty."""
    texts = [cell(name) for name in BOX_COLUMNS]
    if not any(texts):
        return []
    values = []
    for name, text in zip(BOX_COLUMNS, texts, strict=True):
        try:
            values.append(float(text))
        except ValueError:
            raise DataError(
                f"expected a number (pixels), got {text!r}", path=csv_path, row=row, column=name
            ) from None
    if values[0] > values[2] or values[1] > values[3]:
        raise DataError(
            f"the box is reversed: xmin {values[0]:g} > xmax {values[2]:g} or ymin "
            f"{values[1]:g} > ymax {values[3]:g}",
            path=csv_path,
            row=row,
        )
    return [Box(*values, label=label)]


def _voc_box(obj: ElementTree.Element, k: int, where: Path) -> Box:
    name = (obj.findtext("name") or "").strip()
    values = []
    for tag in BOX_COLUMNS:
        text = obj.findtext(f"bndbox/{tag}")
        try:
            values.append(float(text))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise DataError(
                f"object {k} ({name or 'unnamed'}): expected a number in bndbox/{tag}, got "
                f"{text!r}",
                path=where,
            ) from None
    return Box(*values, label=name)


# --- files -------------------------------------------------------------------------------------


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def _not_image_reason(path: Path) -> str:
    if path.is_dir():
        return "a folder where image files were expected"
    ending = f"'{path.suffix}'" if path.suffix else "no extension"
    return f"not an image file ({ending}; images end in {_EXTENSIONS})"


def _visible(folder: Path) -> list[Path]:
    """The folder's entries, sorted, without hidden ones (``.name``)."""
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def _walk(folder: Path) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Image files under ``folder`` (recursively, sorted) and the other files left out.

    Hidden files and folders are ignored; a VOC XML with the stem of an image beside it is that
    image's annotation, not a skipped file.
    """
    images: list[Path] = []
    skipped: list[tuple[Path, str]] = []
    for top, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        here = [Path(top) / f for f in sorted(files) if not f.startswith(".")]
        stems = {p.stem for p in here if _is_image(p)}
        for p in here:
            if _is_image(p):
                images.append(p)
            elif not (p.suffix.lower() == ".xml" and p.stem in stems):
                skipped.append((p, _not_image_reason(p)))
    return sorted(images), skipped


def _boxes_beside(image: Path) -> tuple[Box, ...]:
    xml = image.with_suffix(".xml")
    return read_voc_boxes(xml) if xml.is_file() else ()


def _decode_or_reason(path: Path, *, size: int, channels: int | None) -> np.ndarray | str:
    try:  # channels=3: a grey image is kept grey here and repeated into 3 channels by _stack
        return load_image(path, size=size, channels=1 if channels == 1 else None)
    except DataError as e:
        return e.reason


def _map_in_order(
    decode: partial[np.ndarray | str], paths: list[Path], progress: bool, workers: int
) -> list[np.ndarray | str]:
    from tqdm.auto import tqdm

    bar = partial(tqdm, total=len(paths), disable=not progress, desc="images", unit="img")
    if workers <= 0:
        return list(bar(map(decode, paths)))
    with ThreadPoolExecutor(workers) as pool:
        return list(bar(pool.map(decode, paths)))  # map keeps the order of paths


def _stack(arrays: list[np.ndarray], size: int, channels: int | None) -> np.ndarray:
    """(N, C, size, size): C from ``channels``, else 3 if any image is colour, else 1."""
    c = channels or max((a.shape[0] for a in arrays), default=1)
    out = np.empty((len(arrays), c, size, size), dtype=np.uint8)
    for i, a in enumerate(arrays):
        out[i] = a  # a grey (1, H, W) image broadcasts to 3 identical channels
    return out


def _bad_images_error(bad: list[tuple[Path, str]], total: int) -> DataError:
    lines = [f"  {p}: {reason}" for p, reason in bad[:MAX_LISTED]]
    if len(bad) > MAX_LISTED:
        lines.append(f"  ... and {len(bad) - MAX_LISTED} more")
    return DataError(
        f"{len(bad)} of {total} images cannot be used:\n" + "\n".join(lines) + "\nfix or remove "
        "them, or set data.skip_bad_images=true to leave them out"
    )
