"""The manifest of a multimodal data set: one row per sample, each with text, an image, audio or
any mix of them, checked row by row.

Formats (chosen by the suffix):

- CSV (``.csv``): comma-separated with a header row; quoted fields may hold commas and line
  breaks; blank rows are skipped; a short row's missing cells are empty.
- JSON lines (``.jsonl``, ``.ndjson``): one JSON object a line; blank lines are skipped; a
  missing key or ``null`` is an empty cell; labels and ids may be strings or integers.

Columns (names set by the arguments of :func:`read_manifest`; CSV headers also match ignoring
case): ``text`` (the text), ``image`` (an image file), ``audio`` (a WAV file), ``label`` (the
class) and ``id`` (the sample's name; the row number when absent or empty). Other columns are
ignored. Any of text, image and audio may be empty in a row, but not all three. Relative paths
are resolved from the manifest's folder.

Rows are numbered from 1 in data order: the CSV header and blank lines are not counted. Errors
are :class:`~abyssal.core.errors.DataError` naming the manifest, the row and the column.
:func:`read_manifest` checks only that image and audio files exist; :func:`check_sample_files`
decodes them, one sample at a time, so a training run can report a bad row and go on.

Example:
    A file ``data/train.csv``::

        id,text,image,audio,label
        a,a red fox,img/a.png,,fox
        b,,img/b.png,wav/b.wav,owl

    >>> manifest = read_manifest("data/train.csv")  # doctest: +SKIP
    >>> manifest.modalities, manifest.classes  # doctest: +SKIP
    (['text', 'image', 'audio'], ['fox', 'owl'])
    >>> manifest.samples[1].audio  # doctest: +SKIP
    PosixPath('data/wav/b.wav')
    >>> check_sample_files(manifest.samples[1], sample_rate=16000)  # doctest: +SKIP
    ['row 2, audio data/wav/b.wav: resampled from 44100 Hz to 16000 Hz']
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from abyssal.core.errors import DataError
from abyssal.core.optional import require
from abyssal.solutions.multimodal.audio import read_audio

MODALITIES = ("text", "image", "audio")
"""The inputs a sample may have, in this order wherever they are listed."""
SUFFIXES = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
"""File name endings (lower case) :func:`read_manifest` reads."""
MAX_LISTED = 5
"""Most bad rows quoted in the error when ``skip_bad`` leaves no row."""

Cells = dict[str, object]
"""One parsed row: column name to value (CSV cells are strings; JSON values as parsed)."""


@dataclass(frozen=True)
class Sample:
    """One row of the manifest.

    Attributes:
        id: the sample's name (its row number as text when the manifest gives none).
        text: the text, stripped, or ``None``.
        image: the image file (checked to exist, not decoded), or ``None``.
        audio: the audio file (checked to exist, not decoded), or ``None``.
        label: the class, stripped, or ``None``.
        row: 1-based data row in the manifest.
        source: the manifest the row came from (for messages), if any.
    """

    id: str
    text: str | None
    image: Path | None
    audio: Path | None
    label: str | None
    row: int
    source: Path | None = None


@dataclass
class Manifest:
    """The samples of a manifest, and what they hold.

    Attributes:
        path: the manifest file.
        samples: the rows kept, in file order.
        modalities: which of ``text``, ``image``, ``audio`` at least one sample has.
        classes: the labels, sorted, each once (empty without labels).
        bad: ``(row, why)`` of the rows left out with ``skip_bad``.
    """

    path: Path
    samples: list[Sample]
    modalities: list[str]
    classes: list[str]
    bad: list[tuple[int, str]] = field(default_factory=list)


@dataclass(frozen=True)
class _Columns:
    """The column of each role; ``None`` where the manifest has no such column."""

    text: str | None
    image: str | None
    audio: str | None
    label: str | None
    id: str | None


class _RowError(Exception):
    """A problem with one row, turned into a DataError or kept in ``Manifest.bad``."""

    def __init__(self, row: int, why: str, column: str | None = None) -> None:
        super().__init__(why)
        self.row, self.why, self.column = row, why, column

    def describe(self) -> str:
        """``"column 'audio': no such file ..."`` (without the file and row)."""
        return f"column '{self.column}': {self.why}" if self.column else self.why


# --- reading ------------------------------------------------------------------------------------


def read_manifest(
    path: str | Path,
    *,
    text_column: str = "text",
    image_column: str = "image",
    audio_column: str = "audio",
    label_column: str | None = "label",
    id_column: str = "id",
    require_label: bool = True,
    skip_bad: bool = False,
    fmt: str = "auto",
    image_root: str | Path | None = None,
) -> Manifest:
    """Read and check a manifest (see the module docstring for the format).

    Args:
        path: the CSV or JSON-lines file.
        text_column: column / key of the text.
        image_column: column / key of the image path.
        audio_column: column / key of the audio path.
        label_column: column / key of the label; ``None``: no labels.
        id_column: column / key of the sample id.
        require_label: every row needs a non-empty label (and the manifest a label column);
            with ``False`` empty labels are ``None``.
        skip_bad: leave out rows with a problem, listing them in ``Manifest.bad``, instead of
            raising on the first. Problems with the whole file are raised either way.
        fmt: ``auto`` (by the suffix), ``csv`` or ``jsonl`` (whatever the suffix, e.g. a
            ``captions.txt`` that is a CSV).
        image_root: the folder relative image paths are read from (default: the manifest's).

    Returns:
        The manifest, its samples in file order.

    Raises:
        DataError: names the file, and the row and column where one is concerned. For the whole
            file: missing, unknown suffix, undecodable, malformed CSV, no modality column, no
            label column when required, no rows (or none left with ``skip_bad``). For a row:
            malformed JSON or not an object, too many CSV fields, a value of the wrong type,
            no text, image or audio, a missing image or audio file, an empty label, a
            duplicate id.

    Example:
        >>> read_manifest("clips.jsonl", label_column=None).samples[0].audio  # doctest: +SKIP
        PosixPath('clips/001.wav')
    """
    path = Path(path)
    fmt = _format(path, fmt)
    text = _decode(path)
    header, rows = _parse(text, fmt, path)
    names = dict(text=text_column, image=image_column, audio=audio_column)
    columns = _columns(header, names, label_column, id_column, fmt)
    if any(isinstance(cells, dict) for cells in rows):  # else every row is bad: said below
        _check_columns(columns, names, label_column, require_label, header, path)
    folders = {"audio": path.parent, "image": Path(image_root) if image_root else path.parent}
    samples, bad = _samples(rows, columns, path, folders, require_label, skip_bad)
    return Manifest(path, samples, _modalities(samples), _classes(samples), bad)


def _format(path: Path, fmt: str = "auto") -> str:
    if not path.exists():
        raise DataError(f"no such manifest; {_supported()}", path=path)
    if path.is_dir():
        raise DataError(f"a folder, not a manifest file; {_supported()}", path=path)
    if fmt in ("csv", "jsonl"):
        return fmt
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        shown = f"the suffix '{suffix}'" if suffix else "a name without a suffix"
        raise DataError(f"cannot read {shown}; {_supported()}", path=path)
    return SUFFIXES[suffix]


def _supported() -> str:
    return "a manifest is a CSV file (.csv) with a header, or JSON lines (.jsonl, .ndjson)"


def _decode(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DataError(f"cannot be read ({e.strerror or e})", path=path) from e
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise DataError(
            f"line {line}: byte 0x{data[e.start]:02x} is not UTF-8 ({e.reason}); save the "
            "manifest as UTF-8",
            path=path,
        ) from None


# --- formats ------------------------------------------------------------------------------------

Parsed = list[Cells | _RowError]
"""The data rows in order: cells, or the problem that kept a row from being parsed."""


def _parse(text: str, fmt: str, path: Path) -> tuple[list[str], Parsed]:
    """The column names and the data rows (DataError when there are none)."""
    if fmt == "csv":
        lines = _csv_rows(text, path)
        header = _header(lines, path)
        rows = _csv_cells(lines, header)
    else:
        rows = _jsonl_rows(text)
        header = _keys(rows)
    if not rows:
        raise DataError("no samples: the manifest holds no data rows", path=path)
    return header, rows


def _csv_rows(text: str, path: Path) -> list[list[str]]:
    """The non-blank rows of a CSV text, header first."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        return [row for row in reader if any(cell.strip() for cell in row)]
    except csv.Error as e:
        raise DataError(
            f"line {reader.line_num}: not valid CSV ({e}); a quoted field ends with a closing "
            "double quote right before the comma, and a double quote inside it is written twice",
            path=path,
        ) from None


def _header(rows: list[list[str]], path: Path) -> list[str]:
    if not rows:
        raise DataError(
            "the manifest is empty; expected a header, then one row a sample", path=path
        )
    return [name.strip() for name in rows[0]]


def _csv_cells(rows: list[list[str]], header: list[str]) -> Parsed:
    parsed: Parsed = []
    for n, row in enumerate(rows[1:], start=1):
        extra = [cell for cell in row[len(header) :] if cell.strip()]
        if extra:
            why = f"{len(row)} fields but the header has {len(header)}; quote a field with a comma"
            parsed.append(_RowError(n, why))
        else:
            parsed.append(dict(zip(header, row, strict=False)))
    return parsed


def _jsonl_rows(text: str) -> Parsed:
    lines = [(n, line) for n, line in enumerate(text.split("\n"), start=1) if line.strip()]
    return [_json_object(row, n, line) for row, (n, line) in enumerate(lines, start=1)]


def _json_object(row: int, n: int, line: str) -> Cells | _RowError:
    try:
        value = json.loads(line)
    except json.JSONDecodeError as e:
        return _RowError(row, f"line {n}: not valid JSON ({e.msg} at character {e.colno})")
    if not isinstance(value, dict):
        return _RowError(row, f"line {n}: {_json_kind(value)}; expected a JSON object")
    return value


def _keys(rows: Parsed) -> list[str]:
    """Every key of the parsed JSON objects, in order of first appearance."""
    keys: dict[str, None] = {}
    for row in rows:
        if isinstance(row, dict):
            keys.update(dict.fromkeys(row))
    return list(keys)


def _json_kind(value: object) -> str:
    kinds = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}
    kinds |= {list: "a list", dict: "an object", type(None): "null"}
    return f"{kinds.get(type(value), type(value).__name__)} ({json.dumps(value)[:40]})"


# --- columns ------------------------------------------------------------------------------------


def _find(header: list[str], name: str | None, exact: bool) -> str | None:
    """The header entry called ``name`` (case ignored unless ``exact``), or ``None``."""
    if name is None:
        return None
    if name in header:
        return name
    if exact:
        return None
    return next((h for h in header if h.lower() == name.lower()), None)


def _columns(
    header: list[str], names: dict[str, str], label: str | None, id_: str, fmt: str
) -> _Columns:
    exact = fmt == "jsonl"  # JSON keys are matched exactly; CSV headers also ignoring case
    found = {role: _find(header, name, exact) for role, name in names.items()}
    return _Columns(**found, label=_find(header, label, exact), id=_find(header, id_, exact))


def _check_columns(
    columns: _Columns,
    names: dict[str, str],
    label: str | None,
    require_label: bool,
    header: list[str],
    path: Path,
) -> None:
    present = ", ".join(header) or "none"
    if not any(getattr(columns, role) for role in MODALITIES):
        wanted = ", ".join(f"'{names[role]}'" for role in MODALITIES)
        raise DataError(
            f"none of the columns {wanted} is there (the columns are: {present}); a manifest "
            "needs at least one of text, image and audio (set text_column=, image_column=, "
            "audio_column= to yours)",
            path=path,
        )
    if require_label and label is not None and columns.label is None:
        raise DataError(
            f"no column '{label}' (the columns are: {present}); set label_column= to the one "
            "holding the labels, or read without labels",
            path=path,
            column=label,
        )


# --- rows ---------------------------------------------------------------------------------------


def _samples(
    rows: Parsed,
    columns: _Columns,
    path: Path,
    folders: dict[str, Path],
    require_label: bool,
    skip_bad: bool,
) -> tuple[list[Sample], list[tuple[int, str]]]:
    samples: list[Sample] = []
    bad: list[tuple[int, str]] = []
    seen: dict[str, int] = {}
    for row, cells in enumerate(rows, start=1):
        try:
            if isinstance(cells, _RowError):
                raise cells
            sample = _sample(cells, row, columns, path, folders, require_label)
            _check_unique(sample, seen, columns)
        except _RowError as e:
            if not skip_bad:
                raise DataError(e.why, path=path, row=e.row, column=e.column) from None
            bad.append((e.row, e.describe()))
            continue
        seen[sample.id] = row
        samples.append(sample)
    if not samples:
        raise DataError(f"no row is usable: {_listed(bad)}", path=path)
    return samples, bad


def _sample(
    cells: Cells,
    row: int,
    columns: _Columns,
    path: Path,
    folders: dict[str, Path],
    require_label: bool,
) -> Sample:
    text = _string(cells, columns.text, row)
    image = _file(cells, columns.image, row, folders["image"], "image")
    audio = _file(cells, columns.audio, row, folders["audio"], "audio")
    if text is None and image is None and audio is None:
        named = ", ".join(f"'{c}'" for c in (columns.text, columns.image, columns.audio) if c)
        raise _RowError(row, f"no text, image or audio: {named} all empty")
    label = _string(cells, columns.label, row, integers=True)
    if label is None and require_label and columns.label is not None:
        raise _RowError(row, "empty label; every sample needs a label", columns.label)
    sample_id = _string(cells, columns.id, row, integers=True) or str(row)
    return Sample(sample_id, text, image, audio, label, row, path)


def _string(cells: Cells, column: str | None, row: int, integers: bool = False) -> str | None:
    """The cell as stripped text, ``None`` when absent, null or blank."""
    if column is None or cells.get(column) is None:
        return None
    value = cells[column]
    if integers and isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        allowed = "a string or an integer" if integers else "a string"
        raise _RowError(row, f"{_json_kind(value)}; expected {allowed}", column)
    return value.strip() or None


def _file(cells: Cells, column: str | None, row: int, folder: Path, kind: str) -> Path | None:
    """The cell as a path from ``folder``, checked to be an existing file."""
    name = _string(cells, column, row)
    if name is None:
        return None
    file = folder / name
    if not file.exists():
        raise _RowError(row, f"no such {kind} file: {file}", column)
    if not file.is_file():
        raise _RowError(row, f"{file} is not a file", column)
    return file


def _check_unique(sample: Sample, seen: dict[str, int], columns: _Columns) -> None:
    if sample.id in seen:
        raise _RowError(
            sample.row, f"id {sample.id!r} is also on row {seen[sample.id]}", columns.id or "id"
        )


def _modalities(samples: list[Sample]) -> list[str]:
    return [m for m in MODALITIES if any(getattr(s, m) is not None for s in samples)]


def _classes(samples: list[Sample]) -> list[str]:
    return sorted({s.label for s in samples if s.label is not None})


def _listed(bad: list[tuple[int, str]]) -> str:
    """``"row 2 (column 'audio': ...); row 5 (...)"``, at most :data:`MAX_LISTED`."""
    shown = "; ".join(f"row {row} ({why})" for row, why in bad[:MAX_LISTED])
    more = f"; and {len(bad) - MAX_LISTED} more" if len(bad) > MAX_LISTED else ""
    return shown + more


# --- decoding -----------------------------------------------------------------------------------


def check_sample_files(
    sample: Sample, *, sample_rate: int, max_seconds: float | None = None
) -> list[str]:
    """Decode a sample's image and audio, to find files that exist but cannot be read.

    Args:
        sample: a row of :func:`read_manifest`.
        sample_rate: the rate audio is read at (:func:`~.audio.read_audio`).
        max_seconds: the longest audio kept (:func:`~.audio.read_audio`).

    Returns:
        Warnings, each naming the row and file (e.g. resampled audio).

    Raises:
        DataError: names the manifest, the row and the file that cannot be read, and why.

    Example:
        >>> for sample in manifest.samples:  # doctest: +SKIP
        ...     try:
        ...         notes = check_sample_files(sample, sample_rate=16000)
        ...     except DataError as e:
        ...         print(e)  # report the row, train on the others
    """
    notes: list[str] = []
    if sample.image is not None:
        with located(sample, "image", sample.image):
            _decode_image(sample.image)
    if sample.audio is not None:
        with located(sample, "audio", sample.audio):
            _, found = read_audio(sample.audio, sample_rate=sample_rate, max_seconds=max_seconds)
        notes += [f"row {sample.row}, audio {sample.audio}: {note}" for note in found]
    return notes


@contextmanager
def located(sample: Sample, kind: str, file: Path) -> Iterator[None]:
    """Re-raise a DataError about ``file`` naming the manifest, the row and the file (around
    the decoding of one of a sample's files)."""
    try:
        yield
    except DataError as e:
        raise DataError(
            f"{kind} {file}: {e.reason}", path=sample.source or file, row=sample.row
        ) from e


def _decode_image(file: Path) -> None:
    """Open, verify and load an image; DataError on anything Pillow cannot read."""
    image_module = require("PIL.Image", extra="multimodal", purpose="image files")
    try:
        with image_module.open(file) as image:
            image.verify()  # checks the file's structure (e.g. PNG checksums); unusable after
        with image_module.open(file) as image:
            image.load()  # decodes the pixels: catches truncated data verify() lets through
    except FileNotFoundError:
        raise DataError("no such image file", path=file) from None
    except (OSError, SyntaxError, ValueError, image_module.DecompressionBombError) as e:
        raise DataError(
            f"cannot be read as an image ({type(e).__name__}: {e})", path=file
        ) from None
