"""Validated reading of the tables users bring: CSV, gzipped CSV, Parquet, and any format an
installed package adds to :data:`READERS` (the ``abyssal.readers`` entry-point group).

Reading and checking are two steps. :func:`read_table` turns a file into a frame (CSV cells are read
as text, so that ids keep their leading zeros and a bad value is reported as written). Then
:func:`validate_columns` checks the frame against a declarative list of :class:`ColumnSpec` and
returns a normalised frame: canonical column names, one dtype per kind.

Row numbers in every error are **1-based data rows**: the first row under the header is row 1 (in a
frame, the first row by position, whatever its index label). A spreadsheet shows that row as line 2.

CSV files may start with a UTF-8 byte-order mark and end their lines with CRLF (Windows) or CR; a
file whose header is one column holding ``;``, tab or ``|`` is refused as separated by that
character, and a header that names a column twice is refused, naming it. Timestamps must fall
between 1677-09-21 and 2262-04-11 (the range of nanosecond date-times).

A plugin reader is named by the file suffix it reads, without the leading dot, and is a callable
``(path: pathlib.Path) -> pandas.DataFrame``::

    [project.entry-points."abyssal.readers"]
    feather = "acme_formats:read_feather"
    "fw.txt" = "acme_formats:read_bank_export"

:func:`read_table` uses it for a file whose suffix is not a built-in one (the longest matching
suffix wins, case-insensitive), then checks its frame as it checks the built-in formats.

Example:
    >>> specs = [ColumnSpec("user_id", "id"), ColumnSpec("amount", "number")]
    >>> frame = pd.DataFrame({"user_id": ["a", "b"], "amount": ["1.5", "2"]})
    >>> validate_columns(frame, specs, "t.csv")["amount"].tolist()
    [1.5, 2.0]
"""

from __future__ import annotations

import difflib
import os
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NoReturn, get_args

import numpy as np
import pandas as pd

from abyssal.core.atomic import atomic_path
from abyssal.core.errors import DataError, RegistryError
from abyssal.core.optional import require
from abyssal.core.registry import Registry

SUFFIXES = (".csv", ".csv.gz", ".parquet", ".pq")
"""The suffixes abyssal reads and writes itself (readers from plugins add more to read)."""
ColumnKind = Literal["id", "timestamp", "number", "label"]
PathLike = str | os.PathLike[str]

_MAX_UNIX_SECONDS = pd.Timestamp.max.value / 1e9  # 2262-04-11: the range of ns date-times
_DATE_RANGE = "1677-09-21 00:12:44 to 2262-04-11 23:47:16 UTC"
_SEPARATORS = {";": "';'", "\t": "tab", "|": "'|'"}
_TIMESTAMP_HELP = "expected Unix seconds or an ISO-8601 date-time such as 2026-01-31T12:00:00Z"
_EPOCH = pd.Timestamp(0, tz="UTC")
_SHOWN_COLUMNS = 12
_READ_ERRORS = (
    pd.errors.ParserError,
    UnicodeDecodeError,
    OSError,
    EOFError,
    ValueError,
    zlib.error,
)


@dataclass(frozen=True)
class ColumnSpec:
    """One expected column of a table.

    Args:
        name: the canonical column name, used in the normalised frame.
        kind: ``"id"`` (text), ``"timestamp"`` (int64 Unix seconds, UTC), ``"number"`` (finite
            float64) or ``"label"`` (int8, 0 or 1).
        required: whether a table without this column is an error (else the column is left out).
        aliases: other headers accepted for this column, renamed to ``name``.

    Example:
        >>> ColumnSpec("transaction_id", "id", aliases=("tx_id",)).name
        'transaction_id'
    """

    name: str
    kind: ColumnKind
    required: bool = True
    aliases: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in get_args(ColumnKind):
            raise ValueError(
                f"column '{self.name}': unknown kind {self.kind!r}; "
                f"choose one of {', '.join(get_args(ColumnKind))}"
            )


TableReader = Callable[[Path], pd.DataFrame]

READERS: Registry[TableReader] = Registry("table reader", group="abyssal.readers")
"""Table readers by file suffix. An entry's name is the suffix without its leading dot (``psv``,
``xlsx``, ``fw.txt``); its object is a callable ``(path: pathlib.Path) -> pandas.DataFrame``.
Plugins add entries through the ``abyssal.readers`` entry-point group; abyssal's own (``csv``,
``csv.gz``, ``parquet``, ``pq``) are listed too, and a plugin claiming one of them is a conflict.
"""


def table_format(path: PathLike) -> str:
    """The format of a table file, from its suffix (nothing is imported or read).

    Args:
        path: the file name or path.

    Returns:
        ``"csv"`` for ``.csv`` / ``.csv.gz``, ``"parquet"`` for ``.parquet`` / ``.pq``; for any
        other suffix a plugin reader of :data:`READERS` reads, that reader's name (the longest
        matching suffix without its dot, e.g. ``"psv"``).

    Raises:
        DataError: a suffix no reader reads; the message lists the built-in suffixes and those
            of the installed readers.

    Example:
        >>> table_format("tx.csv.gz")
        'csv'
    """
    name = Path(path).name.lower()
    if name.endswith((".csv", ".csv.gz")):
        return "csv"
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    matches = [r for r in _plugin_readers() if name.endswith("." + r.lower().lstrip("."))]
    if matches:
        return max(matches, key=lambda r: len(r.lstrip(".")))
    raise DataError(f"unsupported file type; expected {_expected_suffixes()}", path=path)


def is_table(path: PathLike) -> bool:
    """Whether :func:`read_table` reads files named like ``path`` (plugin readers included);
    nothing is read.

    Example:
        >>> is_table("scores.parquet"), is_table("scan.nii.gz")
        (True, False)
    """
    try:
        table_format(path)
    except DataError:
        return False
    return True


def table_suffixes() -> tuple[str, ...]:
    """Every suffix :func:`read_table` reads: :data:`SUFFIXES`, then the installed readers'.

    Example:
        >>> table_suffixes()[:4]
        ('.csv', '.csv.gz', '.parquet', '.pq')
    """
    return SUFFIXES + tuple("." + r.lstrip(".") for r in _plugin_readers())


def _plugin_readers() -> list[str]:
    """The names of the readers that are not built in, those two packages claim included (reading
    such a file then says so)."""
    builtin = {s.lstrip(".") for s in SUFFIXES}
    return sorted({*READERS.names(), *READERS.conflicts()} - builtin)


def _expected_suffixes() -> str:
    text = "one of " + ", ".join(SUFFIXES)
    extra = []
    for reader in _plugin_readers():
        plugin = READERS.origin(reader)
        extra.append("." + reader.lstrip(".") + (f" ({plugin.package})" if plugin else ""))
    return text + (f"; or, from installed readers, {', '.join(extra)}" if extra else "")


def read_table(path: PathLike, *, names: Sequence[str] | None = None) -> pd.DataFrame:
    """Read a CSV (optionally gzipped), Parquet or plugin-read table that has at least one data
    row.

    CSV cells are read as text (only empty cells are missing), header names are stripped of
    surrounding spaces; Parquet columns keep their types. A file whose suffix is not a built-in
    one is read by the plugin reader of :data:`READERS` named by its longest matching suffix;
    its frame gets the same checks (rows, unique and stripped headers, a fresh index).

    Args:
        path: a ``.csv``, ``.csv.gz``, ``.parquet`` or ``.pq`` file, or one a reader reads.
        names: column names for a CSV file *without* a header row (CSV only).

    Returns:
        The table as read, with a fresh 0-based index.

    Raises:
        DataError: unknown suffix, missing file, an empty or header-only file ("no rows"), a
            header that names a column twice, a CSV file separated by ``;``, tab or ``|``
            instead of commas, or a file that cannot be parsed (with the reader's reason); for a
            plugin reader, also a plugin that fails to load, raises, or returns something other
            than a DataFrame (naming its package and version).

    Example:
        >>> frame = read_table("transactions.csv")  # doctest: +SKIP
    """
    path = Path(path)
    fmt = table_format(path)
    if not path.exists():
        raise DataError("file not found", path=path)
    if path.is_dir():
        raise DataError("is a folder; expected a table file", path=path)
    if fmt == "csv":
        frame = _read_csv(path, names)
        if names is None:
            _check_separator(frame, path)
            _check_unique_headers(_csv_header(path), path)
    elif fmt == "parquet":
        frame = _read_parquet(path)
    else:
        if names is not None:
            raise DataError("column names can be given for a CSV file only", path=path)
        frame = _read_with_plugin(path, fmt)
    if len(frame) == 0:
        raise DataError("no rows: the table has a header but no data", path=path)
    frame.columns = [str(c).strip() for c in frame.columns]
    _check_unique_headers(list(frame.columns), path)
    return frame.reset_index(drop=True)


def _read_with_plugin(path: Path, reader: str) -> pd.DataFrame:
    """``path`` read by the reader named ``reader``; every failure names the file and the
    reader's package."""
    try:
        read = READERS.get(reader)
    except RegistryError as exc:  # a plugin that fails to import, or a name claimed twice
        raise DataError(f"cannot read it: {exc}", path=path) from exc
    plugin = READERS.origin(reader)
    who = f"the table reader '{reader}'" + (
        f" from the plugin package {plugin.package} {plugin.version}" if plugin else ""
    )
    try:
        frame = read(path)
    except DataError as exc:
        raise DataError(f"{who} failed: {exc.reason}", path=path, row=exc.row,
                        column=exc.column) from exc  # fmt: skip
    except Exception as exc:  # a plugin's bug or its library's error: named, not a traceback
        raise DataError(f"{who} failed: {type(exc).__name__}: {exc}", path=path) from exc
    if not isinstance(frame, pd.DataFrame):
        raise DataError(
            f"{who} returned {type(frame).__name__}; expected a pandas DataFrame", path=path
        )
    return frame


def _check_separator(frame: pd.DataFrame, path: Path) -> None:
    """Refuse a one-column CSV whose header holds another common separator."""
    if len(frame.columns) != 1:
        return
    header = str(frame.columns[0])
    for sep, name in _SEPARATORS.items():
        if sep in header:
            raise DataError(
                f"the file looks {name}-separated (its header reads as one column, "
                f"{header!r}); expected comma-separated values",
                path=path,
            )


def _csv_header(path: Path) -> list[str]:
    """The header cells exactly as written (pandas renames a repeated ``a`` to ``a.1``)."""
    first = pd.read_csv(
        path, header=None, nrows=1, dtype=str, keep_default_na=False, encoding="utf-8-sig"
    )
    return [str(c).strip() for c in first.iloc[0].tolist()]


def _check_unique_headers(headers: Sequence[str], path: Path) -> None:
    seen: set[str] = set()
    for header in headers:
        if header in seen:
            raise DataError(
                f"the header names column '{header}' twice; expected each column once",
                path=path,
                column=header,
            )
        seen.add(header)


def _read_csv(path: Path, names: Sequence[str] | None) -> pd.DataFrame:
    try:
        return pd.read_csv(
            path,
            dtype=str,
            keep_default_na=False,
            na_values=[""],
            header=None if names else 0,
            names=list(names) if names else None,
            index_col=False,
            skipinitialspace=True,
            encoding="utf-8-sig",  # a byte-order mark is not part of the first header
        )
    except pd.errors.EmptyDataError:
        raise DataError("no rows: the file is empty", path=path) from None
    except _READ_ERRORS as exc:
        raise DataError(f"cannot read as CSV: {exc}", path=path) from exc


def _read_parquet(path: Path) -> pd.DataFrame:
    require("pyarrow", extra="parquet", purpose="Parquet files")
    try:
        return pd.read_parquet(path)
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise DataError(f"cannot read as Parquet: {exc}", path=path) from exc


def write_table(frame: pd.DataFrame, path: PathLike) -> Path:
    """Write a frame as CSV or Parquet (by suffix), atomically: a reader never sees half a file.

    Args:
        frame: the table; its index is not written.
        path: destination with one of :data:`SUFFIXES`; parent folders are created.

    Returns:
        The destination path.

    Example:
        >>> write_table(pd.DataFrame({"a": [1]}), "out/a.csv")  # doctest: +SKIP
        PosixPath('out/a.csv')
    """
    path = Path(path)
    fmt = table_format(path)
    if fmt not in ("csv", "parquet"):
        raise DataError(
            f"cannot write a '{fmt}' table (readers from plugins only read); expected one of "
            f"{', '.join(SUFFIXES)}",
            path=path,
        )
    if fmt == "parquet":
        require("pyarrow", extra="parquet", purpose="Parquet files")
    with atomic_path(path) as tmp:
        if fmt == "csv":
            frame.to_csv(tmp, index=False, compression="gzip" if path.suffix == ".gz" else None)
        else:
            frame.to_parquet(tmp, index=False)
    return path


def validate_columns(
    frame: pd.DataFrame, specs: Sequence[ColumnSpec], path: PathLike | None = None
) -> pd.DataFrame:
    """Check a frame against column specs and return it normalised.

    Headers match a spec by its name, then its aliases, then either ignoring case, spaces and
    dashes. Values are converted by kind: ``id`` -> text, ``timestamp`` -> int64 Unix seconds UTC
    (numbers are Unix seconds, fractions dropped; text is parsed as ISO-8601, a date-time without
    a zone is UTC), ``number`` -> finite float64, ``label`` -> int8 0/1 (``true``/``false`` too).

    Args:
        frame: the table as read (see :func:`read_table`).
        specs: the expected columns.
        path: the source, for messages.

    Returns:
        A frame with exactly the spec columns present (in spec order) and a 0-based index.

    Raises:
        DataError: a missing required column (the message lists the columns found and suggests a
            close match), or the first bad value: missing, unparseable, non-finite or out of range,
            naming its row, its column (as written in the file) and the value.

    Example:
        >>> validate_columns(pd.DataFrame({"uid": ["7"]}), [ColumnSpec("user_id", "id")])
        Traceback (most recent call last):
        ...
        abyssal.core.errors.DataError: missing column 'user_id' (found: uid; did you mean 'uid'?)
    """
    frame = frame.reset_index(drop=True)
    sources = match_columns(list(frame.columns), specs, path)
    out = {}
    for spec in specs:
        if spec.name in sources:
            header = sources[spec.name]
            out[spec.name] = _CONVERTERS[spec.kind](frame[header], path, header)
    return pd.DataFrame(out, index=frame.index)


def match_columns(
    found: Sequence[Any], specs: Sequence[ColumnSpec], path: PathLike | None = None
) -> dict[str, str]:
    """Map each spec's canonical name to the header that provides it.

    Args:
        found: the headers of the table.
        specs: the expected columns.
        path: the source, for messages.

    Returns:
        ``{spec.name: header}`` for every spec whose column is present.

    Raises:
        DataError: a required column is missing; lists what was found and the closest unused header.

    Example:
        >>> match_columns(["tx_id"], [ColumnSpec("transaction_id", "id", aliases=("tx_id",))])
        {'transaction_id': 'tx_id'}
    """
    headers = [str(h) for h in found]
    folded: dict[str, str] = {}
    for header in headers:
        folded.setdefault(_fold(header), header)
    sources: dict[str, str] = {}
    for spec in specs:
        for candidate in (spec.name, *spec.aliases):
            hit = candidate if candidate in headers else folded.get(_fold(candidate))
            if hit is not None:
                sources[spec.name] = hit
                break
    for spec in specs:
        if spec.required and spec.name not in sources:
            unused = [h for h in headers if h not in sources.values()]
            raise DataError(_missing_message(spec, headers, unused), path=path)
    return sources


def _fold(header: str) -> str:
    return header.strip().lower().replace(" ", "_").replace("-", "_")


def _missing_message(spec: ColumnSpec, headers: list[str], unused: list[str]) -> str:
    shown = ", ".join(headers[:_SHOWN_COLUMNS]) + (", ..." if len(headers) > _SHOWN_COLUMNS else "")
    guess = ""
    for candidate in (spec.name, *spec.aliases):
        close = difflib.get_close_matches(candidate, unused, n=1, cutoff=0.6)
        if close:
            guess = f"; did you mean '{close[0]}'?"
            break
    also = f"; also accepted: {', '.join(spec.aliases)}" if spec.aliases else ""
    return f"missing column '{spec.name}' (found: {shown}{guess}){also}"


def check_unique(frame: pd.DataFrame, column: str, path: PathLike | None = None) -> None:
    """Raise if a value occurs twice in ``column``.

    Args:
        frame: a frame whose row positions are the data rows (as :func:`validate_columns` returns).
        column: the column that must hold unique values.
        path: the source, for messages.

    Raises:
        DataError: names the first repeated value and both rows (1-based data rows).

    Example:
        >>> check_unique(pd.DataFrame({"id": ["a", "b", "a"]}), "id", "t")
        Traceback (most recent call last):
        ...
        abyssal.core.errors.DataError: t, row 3, column 'id': duplicate value 'a' (first in row 1)
    """
    values = frame[column]
    repeated = values.duplicated(keep="first").to_numpy()
    if not repeated.any():
        return
    second = int(np.argmax(repeated))
    value = values.iloc[second]
    first = int(np.argmax((values == value).to_numpy()))
    raise DataError(
        f"duplicate value {_show(value)} (first in row {first + 1})",
        path=path,
        row=second + 1,
        column=column,
    )


def first_row(mask: np.ndarray | pd.Series) -> int | None:
    """The 1-based data row of the first ``True`` in ``mask``, or ``None`` if there is none.

    Example:
        >>> first_row(np.array([False, True]))
        2
    """
    flags = np.asarray(mask, dtype=bool)
    return int(np.argmax(flags)) + 1 if flags.any() else None


def _show(value: Any) -> str:
    """A value as a message shows it: text quoted, numbers plain."""
    return repr(value) if isinstance(value, str) else str(value)


def _fail(
    column: pd.Series, row: int, message: str, path: PathLike | None, header: str
) -> NoReturn:
    value = _show(column.iloc[row - 1])
    raise DataError(message.format(value=value), path=path, row=row, column=header)


def _text(column: pd.Series) -> pd.Series:
    return column.astype(str).str.strip()


def _check_present(column: pd.Series, path: PathLike | None, header: str, expected: str) -> None:
    missing = column.isna().to_numpy()
    if column.dtype == object or pd.api.types.is_string_dtype(column):
        missing = missing | (column.astype(str).str.strip() == "").to_numpy()
    row = first_row(missing)
    if row is not None:
        raise DataError(f"missing value; expected {expected}", path=path, row=row, column=header)


def _numeric(text: pd.Series) -> np.ndarray:
    """Text to float64, NaN where it is not a number."""
    numbers = pd.to_numeric(text, errors="coerce")
    return numbers.to_numpy(dtype="float64", na_value=np.nan, copy=True)


def _to_id(column: pd.Series, path: PathLike | None, header: str) -> pd.Series:
    _check_present(column, path, header, "an id")
    if pd.api.types.is_float_dtype(column) and np.all(np.mod(column.to_numpy(), 1) == 0):
        column = column.astype("int64")  # 7.0 -> "7", as the id was written
    text = _text(column)
    row = first_row(text.str.contains("\x00", regex=False).to_numpy())
    if row is not None:
        _fail(column, row, "id {value} contains a NUL byte; expected printable text", path, header)
    return text


def _to_timestamp(column: pd.Series, path: PathLike | None, header: str) -> pd.Series:
    _check_present(column, path, header, "a timestamp")
    if pd.api.types.is_datetime64_any_dtype(column):
        seconds, numbers = _datetime_seconds(column), np.zeros(len(column), dtype=bool)
    elif pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
        seconds = column.to_numpy(dtype="float64")
        numbers = np.ones(len(column), dtype=bool)
    else:
        seconds, numbers = _text_seconds(_text(column), path, header)
    row = first_row(~np.isfinite(seconds))
    if row is not None:
        _fail(column, row, "cannot read timestamp {value}: " + _TIMESTAMP_HELP, path, header)
    outside = np.abs(seconds) >= _MAX_UNIX_SECONDS
    row = first_row(outside & numbers)
    if row is not None:
        message = (
            "timestamp {value} is too large for Unix seconds (it would be after the year 2262): "
            "expected Unix seconds; it looks like milliseconds (or finer): divide by 1000"
        )
        _fail(column, row, message, path, header)
    row = first_row(outside)
    if row is not None:
        _fail(column, row, f"timestamp {{value}} is outside {_DATE_RANGE}", path, header)
    return pd.Series(np.floor(seconds).astype("int64"), index=column.index)


def _text_seconds(
    text: pd.Series, path: PathLike | None, header: str
) -> tuple[np.ndarray, np.ndarray]:
    """Text to float Unix seconds (numbers as they are, other text as ISO-8601, else NaN), and
    which cells were numbers.

    Raises:
        DataError: an ISO-8601 date-time outside 1677-09-21 to 2262-04-11 (naming its row).
    """
    seconds = _numeric(text)
    words = np.isnan(seconds)
    if words.any():
        try:
            parsed = pd.to_datetime(text[words], format="ISO8601", utc=True, errors="coerce")
        except pd.errors.OutOfBoundsDatetime:
            _fail_out_of_bounds(text, path, header)
        seconds[words] = _datetime_seconds(parsed)
    return seconds, ~words


def _fail_out_of_bounds(text: pd.Series, path: PathLike | None, header: str) -> NoReturn:
    """Find the first date-time pandas cannot hold and raise a DataError naming its row."""
    for row, value in enumerate(text.tolist(), start=1):
        try:
            pd.to_datetime(value, format="ISO8601", utc=True, errors="coerce")
        except pd.errors.OutOfBoundsDatetime:
            message = f"timestamp {{value}} is outside {_DATE_RANGE}; " + _TIMESTAMP_HELP
            _fail(text, row, message, path, header)
    raise DataError(f"a timestamp is outside {_DATE_RANGE}", path=path, column=header)


def _datetime_seconds(moments: pd.Series) -> np.ndarray:
    """Date-times to float Unix seconds (NaN for NaT); naive date-times are taken as UTC."""
    if moments.dt.tz is None:
        moments = moments.dt.tz_localize("UTC")
    epoch = _EPOCH.as_unit(moments.dt.unit)  # same resolution: no overflow for far dates
    delta = (moments - epoch) / pd.Timedelta(seconds=1)
    return delta.to_numpy(dtype="float64", na_value=np.nan)


def _to_number(column: pd.Series, path: PathLike | None, header: str) -> pd.Series:
    _check_present(column, path, header, "a number")
    if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
        values = column.to_numpy(dtype="float64", na_value=np.nan)
    else:
        text = _text(column)
        values = _numeric(text)
        spelled_nan = text.str.lower().str.lstrip("+-").eq("nan").to_numpy()
        row = first_row(np.isnan(values) & ~spelled_nan)
        if row is not None:
            _fail(column, row, "not a number: {value}", path, header)
    row = first_row(~np.isfinite(values))
    if row is not None:
        _fail(column, row, "not a finite number: {value}", path, header)
    return pd.Series(values, index=column.index, dtype="float64")


def _to_label(column: pd.Series, path: PathLike | None, header: str) -> pd.Series:
    _check_present(column, path, header, "a label 0 or 1")
    if pd.api.types.is_bool_dtype(column):
        return column.astype("int8")
    text = _text(column).str.lower()
    values = _numeric(text.replace({"true": "1", "false": "0"}))
    row = first_row(~np.isin(values, (0.0, 1.0)))
    if row is not None:
        _fail(column, row, "expected 0 or 1 (or true/false), got {value}", path, header)
    return pd.Series(values.astype("int8"), index=column.index)


_CONVERTERS = {
    "id": _to_id,
    "timestamp": _to_timestamp,
    "number": _to_number,
    "label": _to_label,
}

READERS.add("csv", lambda path: _read_csv(path, None), summary="comma-separated values")
READERS.add("csv.gz", lambda path: _read_csv(path, None), summary="gzipped CSV")
READERS.add("parquet", _read_parquet, summary="Apache Parquet (pip install 'abyssal[parquet]')")
READERS.add("pq", _read_parquet, summary="Apache Parquet (pip install 'abyssal[parquet]')")

__all__ = [
    "READERS",
    "SUFFIXES",
    "ColumnKind",
    "ColumnSpec",
    "TableReader",
    "check_unique",
    "first_row",
    "match_columns",
    "read_table",
    "table_format",
    "table_suffixes",
    "validate_columns",
    "write_table",
]


def trained_table(config: Any, key: str = "data.path") -> Path | None:
    """The table file a model version was trained on: the ``key`` (dotted) of its config as
    training saved it (``solution_config``), when that names a file still on disk; else
    ``None`` (an image folder, a moved file, a solution without one)."""
    value: Any = config.get("solution_config", config) if isinstance(config, dict) else None
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if not value or not isinstance(value, str | os.PathLike):
        return None
    path = Path(value)
    try:
        table_format(path)
    except DataError:
        return None
    return path if path.is_file() else None
