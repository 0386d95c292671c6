"""Read the labelled (or unlabelled) texts of the text solution from a file.

:func:`read_texts` reads one of three formats into :class:`TextRecords`:

- ``csv``: a CSV file (``.csv``; ``.tsv`` is tab-separated) with a header; the text and label
  columns are named by ``data.text_column`` and ``data.label_column``, other columns are ignored.
  Quoted fields may hold commas and line breaks.
- ``jsonl``: JSON lines (``.jsonl``, ``.ndjson``), one object a line, blank lines skipped; labels
  may be strings or integers.
- ``phrasebank``: the Financial PhraseBank (Malo et al., 2014), one ``sentence@label`` a line,
  the label after the last ``@``; Latin-1 unless ``data.encoding`` says otherwise.

The whole file is decoded before it is parsed, so a byte the encoding cannot read is reported with
its line. Every record remembers the line it starts on, so later errors can name it
(:meth:`TextRecords.where`).

Example:
    >>> records = read_texts("reviews.csv")  # doctest: +SKIP
    >>> records.format, records.texts[0], records.labels[0], records.where(0)  # doctest: +SKIP
    ('csv', 'Net sales rose 5 %', 'positive', 'reviews.csv line 2')
"""

from __future__ import annotations

import codecs
import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

from abyssal.core.errors import ConfigError, DataError

FORMATS = ("csv", "jsonl", "phrasebank")
"""The formats :func:`read_texts` reads."""
SUFFIXES = {".csv": "csv", ".tsv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
"""File name endings (lower case) whose format ``auto`` knows without looking inside."""
MAX_BYTES = 2 << 30
"""Largest file read (2 GiB): texts are read into memory whole."""
MAX_LISTED = 10
"""Most line numbers named in one error message."""
SUPPORTED = (
    "supported: CSV (.csv, or .tsv separated by tabs) with a header, JSON lines (.jsonl, .ndjson) "
    "with one object a line, or a Financial PhraseBank .txt file with one 'sentence@label' a line"
)
_SNIFF_LINES = 5
"""Non-blank lines of a .txt file that must all hold '@' for ``auto`` to call it PhraseBank."""

_EXPECTED = {
    "csv": "expected a header, then one row a text",
    "jsonl": "expected one JSON object a line",
    "phrasebank": "expected one 'sentence@label' a line",
}

Row = tuple[int, str, str | None]
"""One parsed record: (line it starts on, text, label or ``None`` when the file has no labels)."""


@dataclass
class TextRecords:
    """Texts read from a file, with their labels and where each starts.

    Attributes:
        texts: the texts, stripped of surrounding white space, none empty.
        labels: the labels (stripped, none empty), or ``None`` when the file has no labels and
            none were required.
        lines: the 1-based line of the file each record starts on.
        source: the file, as given.
        format: ``csv``, ``jsonl`` or ``phrasebank``.
    """

    texts: list[str]
    labels: list[str] | None
    lines: list[int]
    source: str
    format: str

    def where(self, i: int) -> str:
        """Where record ``i`` is, for messages: ``"reviews.csv line 14"``."""
        return f"{self.source} line {self.lines[i]}"


def detect_format(path: Path, format: str = "auto") -> str:
    """The format to read ``path`` in: ``format`` itself unless it is ``auto``.

    ``auto`` goes by the suffix (``.csv``, ``.tsv``, ``.jsonl``, ``.ndjson``); a ``.txt`` file
    whose first non-blank lines all hold an ``@`` is ``phrasebank``.

    Raises:
        ConfigError: ``format`` is not ``auto``, ``csv``, ``jsonl`` or ``phrasebank``.
        DataError: ``auto`` cannot tell (the message lists the formats and ``data.format``).

    Example:
        >>> detect_format(Path("news.ndjson"))
        'jsonl'
    """
    if format != "auto":
        if format not in FORMATS:
            raise ConfigError(f"data.format must be auto, {', '.join(FORMATS)}; got {format!r}")
        return format
    suffix = Path(path).suffix.lower()
    if suffix in SUFFIXES:
        return SUFFIXES[suffix]
    if suffix == ".txt" and _looks_like_phrasebank(Path(path)):
        return "phrasebank"
    raise DataError(
        f"cannot tell the format from {_what_suffix(suffix)}; {SUPPORTED}; or set "
        "data.format=csv, jsonl or phrasebank",
        path=path,
    )


def _what_suffix(suffix: str) -> str:
    if suffix == ".txt":
        return "a .txt file whose first lines are not 'sentence@label'"
    return f"the suffix '{suffix}'" if suffix else "a name without a suffix"


def read_texts(
    path: str | Path,
    *,
    format: str = "auto",
    text_column: str = "text",
    label_column: str = "label",
    encoding: str = "auto",
    require_labels: bool = True,
) -> TextRecords:
    """Read the texts (and labels) of a CSV, JSONL or Financial PhraseBank file.

    Args:
        path: the file.
        format: ``auto`` (see :func:`detect_format`), ``csv``, ``jsonl`` or ``phrasebank``.
        text_column: CSV column / JSON key of the text.
        label_column: CSV column / JSON key of the label.
        encoding: ``auto`` (UTF-8 with any BOM dropped; Latin-1 for PhraseBank) or a codec name.
        require_labels: a missing label column is an error; with ``False`` it gives
            ``labels=None`` (as does a label column with every cell empty).

    Returns:
        The records, in file order.

    Raises:
        ConfigError: an unknown ``format`` or ``encoding``.
        DataError: names the file, and the line where one is concerned: missing, too large,
            undecodable bytes, malformed CSV/JSON, a missing column or key, a wrong label
            type, empty texts (all listed at once), an empty label, or no texts at all.

    Example:
        >>> read_texts("Sentences_AllAgree.txt").labels[:2]  # doctest: +SKIP
        ['neutral', 'neutral']
    """
    source = str(path)  # as given, for messages
    path = Path(path)
    _check_file(path)
    fmt = detect_format(path, format)
    text = _decode(path, _codec(encoding, fmt))
    if fmt == "csv":
        delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
        rows = _parse_csv(text, delimiter, text_column, label_column, require_labels, path)
    elif fmt == "jsonl":
        rows = _parse_jsonl(text, text_column, label_column, require_labels, path)
    else:
        rows = _parse_phrasebank(text, path)
    return _records(rows, require_labels, source, fmt)


# --- bytes to text ------------------------------------------------------------------------------


def _check_file(path: Path) -> None:
    if not path.exists():
        raise DataError(f"no such file; {SUPPORTED}", path=path)
    if path.is_dir():
        raise DataError(f"a folder, not a file; {SUPPORTED}", path=path)
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise DataError(
            f"the file is {size / 2**30:.1f} GiB; texts are read into memory and files over "
            "2 GiB are refused: split it or take a sample",
            path=path,
        )


def _codec(encoding: str, fmt: str) -> str:
    """The codec to decode with: ``auto`` is UTF-8 (BOM dropped), Latin-1 for PhraseBank."""
    if encoding == "auto":
        return "latin-1" if fmt == "phrasebank" else "utf-8-sig"
    try:
        return codecs.lookup(encoding).name
    except LookupError:
        raise ConfigError(
            f"data.encoding: unknown codec {encoding!r}; use auto, utf-8, latin-1, cp1252 or "
            "another Python codec name"
        ) from None


def _decode(path: Path, codec: str) -> str:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DataError(f"cannot be read ({e.strerror or e})", path=path) from e
    try:
        return data.decode(codec).removeprefix("\ufeff")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise DataError(
            f"line {line}: byte 0x{data[e.start]:02x} cannot be read as {_codec_name(codec)} "
            f"({e.reason}); {_encoding_hint(codec)}",
            path=path,
        ) from None


def _codec_name(codec: str) -> str:
    return "UTF-8" if codec.replace("_", "-") in ("utf-8", "utf-8-sig") else codec


def _encoding_hint(codec: str) -> str:
    if codec.replace("_", "-").startswith("utf-8"):
        return (
            "if the file is Latin-1 or Windows-1252 text, set data.encoding=latin-1 (or "
            "data.encoding=cp1252), or save it as UTF-8"
        )
    return "set data.encoding to the file's encoding (e.g. data.encoding=utf-8 or latin-1)"


def _looks_like_phrasebank(path: Path) -> bool:
    """Whether the first non-blank lines of a .txt file all hold '@' (an empty file does)."""
    try:
        with path.open("rb") as fh:
            head = fh.read(1 << 16).decode("latin-1")
    except OSError as e:
        raise DataError(f"cannot be read ({e.strerror or e})", path=path) from e
    lines = [line for line in head.split("\n") if line.strip()][:_SNIFF_LINES]
    return all("@" in line for line in lines)


# --- formats ------------------------------------------------------------------------------------


def _parse_csv(
    text: str, delimiter: str, text_column: str, label_column: str, required: bool, path: Path
) -> list[Row]:
    rows = _csv_rows(text, delimiter, path)
    if not rows:
        return []
    header_line, header = rows[0]
    header = [name.strip() for name in header]
    text_at = _column(header, text_column, "text", header_line, path)
    label_at = (
        _column(header, label_column, "label", header_line, path)
        if required
        else _find(header, label_column)
    )
    out: list[Row] = []
    for line, row in rows[1:]:
        if len(row) > len(header) and any(cell.strip() for cell in row[len(header) :]):
            raise DataError(
                f"line {line}: {len(row)} fields but the header has {len(header)}; a text "
                f"holding the separator ({delimiter!r}) must be in double quotes",
                path=path,
            )
        cell = [*row, *[""] * len(header)]
        out.append((line, cell[text_at], None if label_at is None else cell[label_at]))
    return out


def _csv_rows(text: str, delimiter: str, path: Path) -> list[tuple[int, list[str]]]:
    """The non-blank rows with the line each starts on (a quoted field may span lines)."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    rows: list[tuple[int, list[str]]] = []
    start = 1
    try:
        for row in reader:
            if any(cell.strip() for cell in row):
                rows.append((start, row))
            start = reader.line_num + 1
    except csv.Error as e:
        raise DataError(
            f"line {start}: not valid CSV ({e}); a quoted text ends with a closing double quote "
            'right before the separator, and a double quote inside it is written twice ("")',
            path=path,
        ) from None
    return rows


def _find(header: list[str], name: str) -> int | None:
    """The column called ``name`` (the first; case ignored if no exact match), or ``None``."""
    for names in (header, [h.lower() for h in header]):
        key = name if names is header else name.lower()
        if key in names:
            return names.index(key)
    return None


def _column(header: list[str], name: str, role: str, line: int, path: Path) -> int:
    found = _find(header, name)
    if found is not None:
        return found
    hint = ""
    if len(header) == 1 and ("\t" in header[0] or ";" in header[0]):
        hint = "; the header is one column: columns are separated by commas (.csv) or tabs (.tsv)"
    raise DataError(
        f"line {line}: no column '{name}'; the columns are: {', '.join(header)}; set "
        f"data.{role}_column=<column> to the one holding the {role}s{hint}",
        path=path,
    )


def _parse_jsonl(text: str, text_key: str, label_key: str, required: bool, path: Path) -> list[Row]:
    objects = [
        (n, _json_object(line, n, path))
        for n, line in enumerate(text.split("\n"), start=1)
        if line.strip()
    ]
    has_labels = required or any(label_key in obj for _, obj in objects)
    out: list[Row] = []
    for n, obj in objects:
        text_value = _json_key(obj, text_key, "text", n, path)
        if not isinstance(text_value, str):
            raise DataError(
                f"line {n}: '{text_key}' is {_json_kind(text_value)}; expected a string",
                path=path,
            )
        label = None
        if has_labels:
            label = _json_label(_json_key(obj, label_key, "label", n, path), label_key, n, path)
        out.append((n, text_value, label))
    return out


def _json_object(line: str, n: int, path: Path) -> dict[str, object]:
    try:
        value = json.loads(line)
    except json.JSONDecodeError as e:
        raise DataError(
            f"line {n}: not valid JSON ({e.msg} at column {e.colno}); expected one JSON object "
            "a line",
            path=path,
        ) from None
    if not isinstance(value, dict):
        raise DataError(f"line {n}: {_json_kind(value)}; expected a JSON object", path=path)
    return value


def _json_key(obj: dict[str, object], key: str, role: str, n: int, path: Path) -> object:
    if key in obj:
        return obj[key]
    keys = ", ".join(obj) or "none"
    raise DataError(
        f"line {n}: no key '{key}'; its keys are: {keys}; set data.{role}_column=<key> to the "
        f"one holding the {role}s",
        path=path,
    )


def _json_label(value: object, key: str, n: int, path: Path) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise DataError(
        f"line {n}: label '{key}' is {_json_kind(value)}; expected a string or an integer",
        path=path,
    )


def _json_kind(value: object) -> str:
    kinds = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}
    kinds |= {list: "a list", dict: "an object", type(None): "null"}
    return f"{kinds.get(type(value), type(value).__name__)} ({json.dumps(value)[:40]})"


def _parse_phrasebank(text: str, path: Path) -> list[Row]:
    out: list[Row] = []
    for n, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        sentence, at, label = line.rpartition("@")
        if not at:
            raise DataError(
                f"line {n}: no '@'; a Financial PhraseBank line is 'sentence@label'", path=path
            )
        out.append((n, sentence, label))
    return out


# --- checks -------------------------------------------------------------------------------------


def _records(rows: list[Row], required: bool, source: str, fmt: str) -> TextRecords:
    if not rows:
        raise DataError(f"no texts: the file holds no records; {_EXPECTED[fmt]}", path=source)
    lines = [line for line, _, _ in rows]
    texts = [text.strip() for _, text, _ in rows]
    empty = [line for line, text in zip(lines, texts, strict=True) if not text]
    if empty:
        raise DataError(f"empty text on {_lines(empty)}; every record needs a text", path=source)
    return TextRecords(texts, _labels(rows, required, source), lines, source, fmt)


def _labels(rows: list[Row], required: bool, source: str) -> list[str] | None:
    if any(label is None for _, _, label in rows):
        return None
    labels = [str(label).strip() for _, _, label in rows]
    empty = [line for (line, _, _), label in zip(rows, labels, strict=True) if not label]
    if empty and not required and len(empty) == len(rows):
        return None
    if empty:
        raise DataError(
            f"line {empty[0]}: empty label; every text needs a label ({len(empty)} record(s) "
            "have none)",
            path=source,
        )
    return labels


def _lines(lines: list[int]) -> str:
    """``"3 lines: 4, 9, 12"``, at most :data:`MAX_LISTED` numbers."""
    shown = ", ".join(str(n) for n in lines[:MAX_LISTED])
    more = f" and {len(lines) - MAX_LISTED} more" if len(lines) > MAX_LISTED else ""
    return f"{len(lines)} line(s): {shown}{more}"
