"""Validation of a table against expectations: every check runs, every problem is reported.

A :class:`TableSchema` says what a table should look like: per column (a
:class:`ColumnExpectation`) its kind, whether it is required, an allowed range, allowed
categories and the largest share of missing values; for the whole table the key columns that must
be unique, a label column whose rarest class must keep a minimum share, and a minimum row count.
:func:`infer_schema` learns one from a reference table (the data the production model was trained
on) and :meth:`TableSchema.to_dict` / :meth:`TableSchema.from_dict` keep it in YAML or JSON.

:func:`check_table` runs every check and returns a :class:`CheckReport` of findings
(:class:`Finding`); it never stops at the first problem. A finding's severity is ``"error"`` (a
pipeline stops) or ``"warning"`` (it goes on); :data:`DEFAULT_SEVERITY` gives each check's
default and ``TableSchema.severity`` overrides it per check.

Conventions:

- **Rows** are 1-based data rows, as in every abyssal error: the first row under the header is row
  1 (in a frame, the first row by position, whatever its index label). A spreadsheet shows it as
  line 2.
- **Missing** is an empty (or blank) cell, ``None``, NaN in a numeric column, or NaT. A number
  written out as ``nan`` or ``inf`` in a text cell is not missing: it is a non-finite number
  (check ``non_finite``), as is ±inf in a numeric column.
- Frames straight from :func:`abyssal.data.tables.read_table` (every CSV cell text) are checked by
  what the text says: ``"1.5"`` is a number, ``"true"`` a bool, ``"2026-01-31"`` a date-time.
- Text is compared with categories after stripping surrounding spaces.

Example:
    >>> reference = pd.DataFrame({"amount": [1.0, 5.0, 9.0], "shop": ["a", "b", "a"]})
    >>> schema = infer_schema(reference)
    >>> report = check_table(pd.DataFrame({"amount": ["2", "x"], "shop": ["a", "z"]}), schema)
    >>> [(f.check, f.column, f.rows) for f in report.findings]
    [('dtype', 'amount', (2,)), ('unknown_category', 'shop', (2,))]
"""

from __future__ import annotations

import difflib
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, NamedTuple, get_args

import numpy as np
import pandas as pd

from abyssal.core.config import config_from_dict
from abyssal.core.display import table
from abyssal.core.errors import ConfigError, DataError

Kind = Literal["number", "integer", "string", "bool", "datetime"]
Severity = Literal["error", "warning"]

DEFAULT_SEVERITY: dict[str, Severity] = {
    "too_few_rows": "error",
    "duplicate_column": "error",
    "missing_column": "error",
    "dtype": "error",
    "missing_share": "error",
    "non_finite": "error",
    "out_of_range": "error",
    "unknown_category": "warning",
    "unexpected_column": "warning",
    "duplicate_key": "error",
    "label_balance": "error",
}
"""Each check's name and its default severity, in the order the checks run."""
CHECKS = tuple(DEFAULT_SEVERITY)
MAX_EXAMPLES = 5
"""Example rows (and values) a finding names at most."""
LABEL_SHARE_FACTOR = 0.5
""":func:`infer_schema` asks the rarest label class to keep this fraction of its reference share."""

_NUMERIC_KINDS = ("number", "integer")
_EXPECTED = {
    "number": "numbers",
    "integer": "whole numbers",
    "string": "text",
    "bool": "true/false (or 1/0)",
    "datetime": "ISO-8601 date-times such as 2026-01-31T12:00:00Z",
}
_BOOL_TEXT = {"true": 1.0, "false": 0.0, "1": 1.0, "0": 0.0}
_SHOWN_NAMES = 12


@dataclass(frozen=True)
class ColumnExpectation:
    """What one column should hold.

    Args:
        name: the column's header.
        kind: ``"number"``, ``"integer"``, ``"string"``, ``"bool"`` or ``"datetime"``.
        required: whether a table without this column is an error.
        minimum: smallest allowed value (number and integer columns only).
        maximum: largest allowed value (number and integer columns only).
        categories: the allowed values (string columns only); ``None`` allows any.
        max_missing: largest allowed share of missing cells, in [0, 1].
        finite: whether ±inf and values written as ``nan`` are refused (number and integer).

    Example:
        >>> ColumnExpectation("age", "integer", minimum=0, maximum=130).maximum
        130
    """

    name: str
    kind: Kind
    required: bool = True
    minimum: float | None = None
    maximum: float | None = None
    categories: tuple[str, ...] | None = None
    max_missing: float = 0.0
    finite: bool = True

    def __post_init__(self) -> None:
        where = f"column '{self.name}'"
        if self.kind not in get_args(Kind):
            raise ConfigError(f"{where}: unknown kind {self.kind!r}; choose one of {_kinds()}")
        if not 0.0 <= self.max_missing <= 1.0:
            raise ConfigError(f"{where}: max_missing must be in [0, 1], got {self.max_missing}")
        bounded = self.minimum is not None or self.maximum is not None
        if bounded and self.kind not in _NUMERIC_KINDS:
            raise ConfigError(f"{where}: minimum/maximum apply to number or integer columns")
        if bounded and None not in (self.minimum, self.maximum) and self.minimum > self.maximum:
            raise ConfigError(f"{where}: minimum {self.minimum} is above maximum {self.maximum}")
        if self.categories is not None and self.kind != "string":
            raise ConfigError(f"{where}: categories apply to string columns, not {self.kind}")


@dataclass(frozen=True)
class TableSchema:
    """What a table should look like.

    Args:
        columns: one expectation per column, in the table's order.
        keys: columns whose values together must be unique (a row's identity).
        label: the label column, whose class balance is checked.
        label_classes: the classes the label should have (as text: ``"0"``, ``"1"``); a class
            that does not occur has share 0. ``None``: the classes found.
        min_label_share: the rarest label class's smallest allowed share of labelled rows.
        min_rows: the fewest rows the table may have.
        severity: check name -> ``"error"`` or ``"warning"``, over :data:`DEFAULT_SEVERITY`.

    Example:
        >>> schema = TableSchema((ColumnExpectation("id", "string"),), keys=("id",))
        >>> TableSchema.from_dict(schema.to_dict()) == schema
        True
    """

    columns: tuple[ColumnExpectation, ...]
    keys: tuple[str, ...] = ()
    label: str | None = None
    label_classes: tuple[str, ...] | None = None
    min_label_share: float = 0.0
    min_rows: int = 1
    severity: dict[str, Severity] = field(default_factory=dict)

    def __post_init__(self) -> None:
        names = [c.name for c in self.columns]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ConfigError(f"columns named more than once: {', '.join(twice)}")
        for role, name in [*(("key", k) for k in self.keys), ("label", self.label)]:
            if name is not None and name not in names:
                raise ConfigError(
                    f"{role} column '{name}' is not among the columns ({_few(names)})"
                )
        if not 0.0 <= self.min_label_share < 1.0:
            raise ConfigError(f"min_label_share must be in [0, 1), got {self.min_label_share}")
        if self.min_rows < 0:
            raise ConfigError(f"min_rows must be 0 or more, got {self.min_rows}")
        for check, level in self.severity.items():
            if check not in DEFAULT_SEVERITY:
                raise ConfigError(f"severity: unknown check {check!r}; checks are {_few(CHECKS)}")
            if level not in get_args(Severity):
                raise ConfigError(f"severity.{check}: expected 'error' or 'warning', got {level!r}")

    def column(self, name: str) -> ColumnExpectation:
        """The expectation for column ``name``.

        Raises:
            KeyError: no such column in the schema.
        """
        for spec in self.columns:
            if spec.name == name:
                return spec
        raise KeyError(f"no column '{name}' in the schema ({_few([c.name for c in self.columns])})")

    def to_dict(self) -> dict[str, Any]:
        """Plain lists, numbers and text (for YAML or JSON); column keys that are ``None`` are
        left out."""
        columns = [
            {
                k: list(v) if isinstance(v, tuple) else v
                for k, v in asdict(c).items()
                if v is not None
            }
            for c in self.columns
        ]
        return {
            "columns": columns,
            "keys": list(self.keys),
            "label": self.label,
            "label_classes": None if self.label_classes is None else list(self.label_classes),
            "min_label_share": self.min_label_share,
            "min_rows": self.min_rows,
            "severity": dict(self.severity),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, where: str = "schema") -> TableSchema:
        """The schema a :meth:`to_dict` mapping describes.

        Raises:
            ConfigError: an unknown key (the valid ones are listed), a value of the wrong type or
                an inconsistent schema, naming where (``schema.columns[2].kind``).
        """
        plain = dict(data) if isinstance(data, Mapping) else data
        return config_from_dict(cls, plain, where=where)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Finding:
    """One problem a check found.

    Attributes:
        check: the check's name (one of :data:`CHECKS`).
        severity: ``"error"`` or ``"warning"``.
        column: the column concerned (for ``duplicate_key``, the key columns joined by ``, ``);
            ``None`` for the table as a whole.
        message: what was expected and what was found, with example values and rows.
        count: how many rows (or columns) are affected.
        rows: up to :data:`MAX_EXAMPLES` example rows (1-based data rows).
    """

    check: str
    severity: Severity
    column: str | None
    message: str
    count: int
    rows: tuple[int, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The finding as plain values."""
        return {**vars(self), "rows": list(self.rows)}


@dataclass(frozen=True)
class CheckReport:
    """Everything :func:`check_table` found.

    Attributes:
        findings: in the order the checks ran.
        rows: the table's row count.
        columns: the table's column count.
        source: the table's name (a file), for the summary.
    """

    findings: tuple[Finding, ...]
    rows: int
    columns: int
    source: str | None = None

    @property
    def errors(self) -> list[Finding]:
        """The findings that stop a pipeline."""
        return [f for f in self.findings if f.severity == "error"]

    @property
    def warnings(self) -> list[Finding]:
        """The findings that do not stop a pipeline."""
        return [f for f in self.findings if f.severity == "warning"]

    @property
    def ok(self) -> bool:
        """True when there is no error (warnings allowed)."""
        return not self.errors

    def to_dict(self) -> dict[str, Any]:
        """The report as plain values (for JSON)."""
        return {
            "ok": self.ok,
            "source": self.source,
            "rows": self.rows,
            "columns": self.columns,
            "errors": len(self.errors),
            "warnings": len(self.warnings),
            "findings": [f.to_dict() for f in self.findings],
        }

    def summary(self) -> str:
        """A headline and an aligned table of the findings, for a terminal."""
        name = f"{self.source}: " if self.source else ""
        head = f"{name}{self.rows} rows, {self.columns} columns: "
        if not self.findings:
            return head + "all checks passed"
        counts = f"{_plural(len(self.errors), 'error')}, {_plural(len(self.warnings), 'warning')}"
        rows = [
            [f.severity, f.check, f.column or "-", f.count, _rows_text(f.rows), f.message]
            for f in self.findings
        ]
        headers = ["severity", "check", "column", "count", "rows", "message"]
        return f"{head}{counts}\n{table(headers, rows)}"


def infer_schema(
    frame: pd.DataFrame,
    label: str | None = None,
    keys: Sequence[str] = (),
    *,
    margin: float = 0.0,
    missing_margin: float = 0.0,
    max_categories: int = 20,
) -> TableSchema:
    """Learn expectations from a reference table, e.g. the production model's training data.

    Every column becomes required with the kind :func:`infer_kind` gives it (text that reads as
    whole numbers is ``integer``; a float column stays ``number``). Number columns get the observed
    range widened by ``margin`` times its span on each side; text columns with at most
    ``max_categories`` distinct values get those as categories; each column may miss as large a
    share as observed plus ``missing_margin``. Key columns get neither range nor categories (new
    ids are normal). The label's classes are recorded and the rarest must keep
    :data:`LABEL_SHARE_FACTOR` of its share. Learnt ranges are observations, not rules, so
    ``out_of_range`` is a warning in the result.

    Args:
        frame: the reference table.
        label: its label column, if any.
        keys: columns that identify a row.
        margin: widening of observed ranges, as a fraction of their span (0.1 = 10 % each side).
        missing_margin: added to each observed missing share (0.01 = one point more).
        max_categories: most distinct values for a text column to get categories.

    Returns:
        The schema; :func:`check_table` finds no error in ``frame`` itself.

    Raises:
        DataError: ``frame`` has no rows, or a label or key column is not in it.

    Example:
        >>> schema = infer_schema(pd.DataFrame({"n": [1, 4], "c": ["x", "y"]}), margin=0.5)
        >>> n = schema.column("n")
        >>> n.kind, n.minimum, n.maximum, schema.column("c").categories
        ('integer', -1.0, 6.0, ('x', 'y'))
    """
    frame = _as_frame(frame, None)
    keys = (keys,) if isinstance(keys, str) else tuple(keys)
    if len(frame) == 0:
        raise DataError("the reference table has no rows; expected at least one to learn from")
    names = [str(c) for c in frame.columns]
    for role, name in [*(("key", k) for k in keys), ("label", label)]:
        if name is not None and name not in names:
            raise DataError(f"{role} column not found (found: {_few(names)})", column=name)
    columns = []
    for position, name in enumerate(names):
        column = frame.iloc[:, position]
        use_values = name not in keys
        columns.append(
            _infer_column(name, column, margin, missing_margin, max_categories, use_values)
        )
    classes, share = (None, 0.0) if label is None else _infer_label(frame[label], columns, label)
    return TableSchema(
        tuple(columns),
        keys=tuple(keys),
        label=label,
        label_classes=classes,
        min_label_share=share,
        severity={"out_of_range": "warning"},
    )


def infer_kind(column: pd.Series) -> Kind:
    """The kind of a column: its dtype's, or for text the narrowest kind that reads every cell.

    Text is tried as ``integer``, ``number``, ``bool``, then ``datetime`` (ISO-8601); an empty or
    mixed text column is ``string``.

    Example:
        >>> infer_kind(pd.Series(["1", "2"])), infer_kind(pd.Series(["1.5", "x"]))
        ('integer', 'string')
    """
    if isinstance(column.dtype, pd.CategoricalDtype):
        column = column.astype(object)
    if pd.api.types.is_bool_dtype(column.dtype):
        return "bool"
    if pd.api.types.is_datetime64_any_dtype(column.dtype):
        return "datetime"
    if pd.api.types.is_integer_dtype(column.dtype):
        return "integer"
    if _is_number(column):
        return "number"
    if _is_text(column) and not _missing(column).all():
        for kind in ("integer", "number", "bool", "datetime"):
            if not _parse(column, kind).bad.any():
                return kind
    return "string"


def check_table(
    frame: pd.DataFrame, schema: TableSchema, *, source: str | None = None
) -> CheckReport:
    """Run every check of ``schema`` on ``frame``.

    Args:
        frame: the table, e.g. from :func:`abyssal.data.tables.read_table`.
        schema: the expectations.
        source: the table's name (a file), for the summary.

    Returns:
        The report; ``report.ok`` is False when any finding is an error.

    Raises:
        DataError: ``frame`` is not a DataFrame (problems *in* the table are findings instead).

    Example:
        >>> schema = TableSchema((ColumnExpectation("x", "number", minimum=0),), min_rows=1)
        >>> report = check_table(pd.DataFrame({"x": [1.0, -2.0]}), schema)
        >>> report.ok, report.errors[0].message
        (False, 'expected values >= 0; found 1 value that is not: -2.0 (row 2)')
    """
    frame = _as_frame(frame, source)
    found = _Findings(schema.severity)
    if len(frame) < schema.min_rows:
        message = f"expected at least {schema.min_rows} rows; found {len(frame)}"
        found.add("too_few_rows", None, message, len(frame))
    positions = _positions(frame, found)
    parsed: dict[str, _Parsed] = {}
    for spec in schema.columns:
        if spec.name in positions:
            parsed[spec.name] = _check_column(frame.iloc[:, positions[spec.name]], spec, found)
        elif spec.required:
            found.add("missing_column", spec.name, _missing_column(spec.name, positions), 1)
    expected = {c.name for c in schema.columns}
    for name in positions:
        if name not in expected:
            found.add("unexpected_column", name, "column not in the schema", 1)
    if schema.keys and all(k in positions for k in schema.keys):
        _check_keys(frame.iloc[:, [positions[k] for k in schema.keys]], schema.keys, found)
    if schema.label in parsed:
        _check_label(parsed[schema.label], schema, found)
    return CheckReport(tuple(found.items), len(frame), frame.shape[1], source)


class _Parsed(NamedTuple):
    """A column read as its kind: values (float64 for number, integer and bool; text for string;
    date-times for datetime), and masks of missing cells, cells that are not of the kind, and
    numbers written out as ``nan``."""

    values: np.ndarray
    missing: np.ndarray
    bad: np.ndarray
    written_nan: np.ndarray


class _Findings:
    """Collects findings, giving each its severity."""

    def __init__(self, overrides: Mapping[str, Severity]) -> None:
        self.severity = {**DEFAULT_SEVERITY, **overrides}
        self.items: list[Finding] = []

    def add(
        self, check: str, column: str | None, message: str, count: int, rows: Sequence[int] = ()
    ) -> None:
        self.items.append(Finding(check, self.severity[check], column, message, count, tuple(rows)))


def _as_frame(frame: Any, source: str | None) -> pd.DataFrame:
    if not isinstance(frame, pd.DataFrame):
        raise DataError(f"expected a pandas DataFrame, got {type(frame).__name__}", path=source)
    return frame


def _positions(frame: pd.DataFrame, found: _Findings) -> dict[str, int]:
    """Header -> position of its first occurrence; a repeated header is a finding."""
    names = [str(c) for c in frame.columns]
    positions: dict[str, int] = {}
    for position, name in enumerate(names):
        positions.setdefault(name, position)
    for name, times in Counter(names).items():
        if times > 1:
            message = (
                f"expected each column once; the header names it {times} times (first checked)"
            )
            found.add("duplicate_column", name, message, times)
    return positions


def _missing_column(name: str, positions: Mapping[str, int]) -> str:
    found = list(positions)
    close = difflib.get_close_matches(name, found, n=1, cutoff=0.6)
    guess = f"; did you mean '{close[0]}'?" if close else ""
    return f"required column is missing (found: {_few(found)}{guess})"


def _check_column(column: pd.Series, spec: ColumnExpectation, found: _Findings) -> _Parsed:
    parsed = _parse(column, spec.kind)
    if parsed.bad.any():
        message = f"expected {_EXPECTED[spec.kind]}; found {_values_that(parsed.bad)} not"
        found.add("dtype", spec.name, *_with_examples(message, column, parsed.bad))
    _check_missing(spec, parsed.missing, column, found)
    if spec.kind in _NUMERIC_KINDS:
        _check_numbers(spec, parsed, column, found)
    if spec.categories is not None:
        unknown = ~parsed.missing & ~pd.Series(parsed.values).isin(spec.categories).to_numpy()
        if unknown.any():
            allowed = _few([repr(c) for c in spec.categories])
            message = f"expected one of {allowed}; found {_values_that(unknown)} not"
            found.add("unknown_category", spec.name, *_with_examples(message, column, unknown))
    return parsed


def _check_missing(
    spec: ColumnExpectation, missing: np.ndarray, column: pd.Series, found: _Findings
) -> None:
    count, n = int(missing.sum()), len(missing)
    if n == 0 or count / n <= spec.max_missing:
        return
    limit = "no missing values" if spec.max_missing == 0 else f"at most {spec.max_missing:.1%}"
    message = f"expected {limit}; found {count} of {n} rows missing ({count / n:.1%})"
    found.add("missing_share", spec.name, message, count, _example_rows(missing))


def _check_numbers(
    spec: ColumnExpectation, parsed: _Parsed, column: pd.Series, found: _Findings
) -> None:
    values = parsed.values
    if spec.finite:
        non_finite = parsed.written_nan | np.isinf(values)
        if non_finite.any():
            message = f"expected finite numbers; found {_values_that(non_finite)} not"
            found.add("non_finite", spec.name, *_with_examples(message, column, non_finite))
    with np.errstate(invalid="ignore"):
        below = values < spec.minimum if spec.minimum is not None else np.zeros(len(values), bool)
        above = values > spec.maximum if spec.maximum is not None else np.zeros(len(values), bool)
    outside = (below | above) & ~parsed.bad
    if outside.any():
        message = f"expected {_range_text(spec)}; found {_values_that(outside)} not"
        found.add("out_of_range", spec.name, *_with_examples(message, column, outside))


def _range_text(spec: ColumnExpectation) -> str:
    low, high = spec.minimum, spec.maximum
    if low is not None and high is not None:
        return f"values in [{low:g}, {high:g}]"
    return f"values >= {low:g}" if low is not None else f"values <= {high:g}"


def _check_keys(keys: pd.DataFrame, names: Sequence[str], found: _Findings) -> None:
    repeated = keys.duplicated(keep="first").to_numpy()
    if not repeated.any():
        return
    examples = []
    for row in np.flatnonzero(repeated)[:MAX_EXAMPLES]:
        values = [_show(v) for v in keys.iloc[row].tolist()]
        shown = values[0] if len(values) == 1 else f"({', '.join(values)})"
        same = (keys == keys.iloc[row]).all(axis=1).to_numpy()
        first = f", first in row {np.argmax(same) + 1}" if same.any() else ""
        examples.append(f"{shown} (row {row + 1}{first})")
    count = int(repeated.sum())
    message = f"expected unique keys; found {_plural(count, 'row')} repeating an earlier key: "
    message += ", ".join(examples)
    found.add("duplicate_key", ", ".join(names), message, count, _example_rows(repeated))


def _check_label(parsed: _Parsed, schema: TableSchema, found: _Findings) -> None:
    labelled = ~parsed.missing & ~parsed.bad
    total = int(labelled.sum())
    if total == 0:
        return
    counts = _class_counts(parsed.values[labelled])
    for name in schema.label_classes or ():
        counts.setdefault(name, 0)
    rarest = min(counts, key=lambda c: (counts[c], c))
    share = counts[rarest] / total
    if share < schema.min_label_share:
        message = (
            f"expected every class to be at least {schema.min_label_share:.1%} of labelled rows; "
            f"class {rarest!r} is {share:.1%} ({counts[rarest]} of {total})"
        )
        found.add("label_balance", schema.label, message, counts[rarest])


def _class_counts(values: np.ndarray) -> dict[str, int]:
    """Class (as text, whole numbers without ``.0``) -> rows."""
    counts = pd.Series(values).value_counts(sort=False)
    return {_class_text(v): int(n) for v, n in counts.items()}


def _class_text(value: Any) -> str:
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    return str(value)


def _parse(column: pd.Series, kind: str) -> _Parsed:
    if isinstance(column.dtype, pd.CategoricalDtype):
        column = column.astype(object)
    missing = _missing(column)
    none = np.zeros(len(column), dtype=bool)
    if kind == "string":
        return _Parsed(_text(column).to_numpy(dtype=object), missing, none, none)
    if kind == "datetime":
        return _parse_datetime(column, missing, none)
    if kind == "bool":
        return _parse_bool(column, missing, none)
    parsed = _parse_number(column, missing, none)
    if kind == "integer":
        with np.errstate(invalid="ignore"):
            fraction = np.isfinite(parsed.values) & (np.floor(parsed.values) != parsed.values)
        parsed = parsed._replace(bad=parsed.bad | fraction)
    return parsed


def _is_text(column: pd.Series) -> bool:
    return pd.api.types.is_object_dtype(column.dtype) or isinstance(column.dtype, pd.StringDtype)


def _is_number(column: pd.Series) -> bool:
    dtype = column.dtype
    return pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype)


def _text(column: pd.Series) -> pd.Series:
    return column.astype(object).where(column.notna(), "").astype(str).str.strip()


def _missing(column: pd.Series) -> np.ndarray:
    missing = column.isna().to_numpy(dtype=bool, copy=True)
    if _is_text(column):
        missing |= _text(column).eq("").to_numpy(dtype=bool)
    return missing


def _parse_number(column: pd.Series, missing: np.ndarray, none: np.ndarray) -> _Parsed:
    if _is_number(column):
        values = column.to_numpy(dtype="float64", na_value=np.nan)
        return _Parsed(values, missing, none, none)
    if not _is_text(column):  # bool or date-time columns
        return _Parsed(np.full(len(column), np.nan), missing, ~missing, none)
    text = _text(column)
    values = pd.to_numeric(text, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    written_nan = text.str.lower().str.lstrip("+-").eq("nan").to_numpy(dtype=bool)
    return _Parsed(values, missing, np.isnan(values) & ~missing & ~written_nan, written_nan)


def _parse_bool(column: pd.Series, missing: np.ndarray, none: np.ndarray) -> _Parsed:
    if pd.api.types.is_bool_dtype(column.dtype):
        return _Parsed(column.to_numpy(dtype="float64", na_value=np.nan), missing, none, none)
    if _is_number(column):
        values = column.to_numpy(dtype="float64", na_value=np.nan)
    elif _is_text(column):
        text = _text(column).str.lower().map(_BOOL_TEXT)
        values = text.to_numpy(dtype="float64", na_value=np.nan)
    else:
        values = np.full(len(column), np.nan)
    bad = ~missing & ~np.isin(values, (0.0, 1.0))
    return _Parsed(np.where(bad, np.nan, values), missing, bad, none)


def _parse_datetime(column: pd.Series, missing: np.ndarray, none: np.ndarray) -> _Parsed:
    if pd.api.types.is_datetime64_any_dtype(column.dtype):
        return _Parsed(column.to_numpy(dtype=object), missing, none, none)
    if not _is_text(column):
        return _Parsed(np.full(len(column), None, dtype=object), missing, ~missing, none)
    moments = _to_datetime(_text(column).where(~missing, None))
    bad = moments.isna().to_numpy(dtype=bool) & ~missing
    return _Parsed(moments.to_numpy(dtype=object), missing, bad, none)


def _to_datetime(text: pd.Series) -> pd.Series:
    """ISO-8601 text to UTC date-times, NaT where it is not one (or out of pandas' range)."""
    try:
        return pd.to_datetime(text, format="ISO8601", utc=True, errors="coerce")
    except (pd.errors.OutOfBoundsDatetime, OverflowError, ValueError):
        return pd.Series([_one_datetime(v) for v in text], index=text.index)


def _one_datetime(value: Any) -> Any:
    try:
        return pd.to_datetime(value, format="ISO8601", utc=True, errors="coerce")
    except (pd.errors.OutOfBoundsDatetime, OverflowError, ValueError):
        return pd.NaT


def _example_rows(mask: np.ndarray) -> list[int]:
    return [int(i) + 1 for i in np.flatnonzero(mask)[:MAX_EXAMPLES]]


def _with_examples(message: str, column: pd.Series, mask: np.ndarray) -> tuple[str, int, list[int]]:
    """``(message: examples, count, rows)`` naming the cells as written and their rows."""
    rows = _example_rows(mask)
    shown = ", ".join(f"{_show(column.iloc[r - 1])} (row {r})" for r in rows)
    return f"{message}: {shown}", int(mask.sum()), rows


def _show(value: Any) -> str:
    """A value as a message shows it: text quoted (and cut at 40 characters), numbers plain."""
    if isinstance(value, str):
        return repr(value if len(value) <= 40 else value[:37] + "...")
    return str(value)


def _few(names: Sequence[Any]) -> str:
    shown = ", ".join(str(n) for n in names[:_SHOWN_NAMES])
    return shown + (", ..." if len(names) > _SHOWN_NAMES else "")


def _kinds() -> str:
    return ", ".join(get_args(Kind))


def _values_that(mask: np.ndarray) -> str:
    count = int(mask.sum())
    return f"{count} value that is" if count == 1 else f"{count} values that are"


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _rows_text(rows: Sequence[int]) -> str:
    return ", ".join(map(str, rows)) if rows else "-"


def _infer_column(
    name: str,
    column: pd.Series,
    margin: float,
    missing_margin: float,
    max_categories: int,
    use_values: bool,
) -> ColumnExpectation:
    kind = infer_kind(column)
    parsed = _parse(column, kind)
    share = int(parsed.missing.sum()) / len(column)
    max_missing = min(1.0, _round_up(share + missing_margin))
    low = high = categories = None
    finite = True
    if kind in _NUMERIC_KINDS:
        finite = not (parsed.written_nan.any() or np.isinf(parsed.values).any())
    if use_values and kind in _NUMERIC_KINDS:
        low, high = _widened(parsed.values, margin, whole=kind == "integer")
    if use_values and kind == "string":
        distinct = sorted(set(parsed.values[~parsed.missing].tolist()))
        categories = tuple(distinct) if 0 < len(distinct) <= max_categories else None
    return ColumnExpectation(name, kind, True, low, high, categories, max_missing, finite)


def _widened(values: np.ndarray, margin: float, *, whole: bool) -> tuple[Any, Any]:
    finite = values[np.isfinite(values)]
    if len(finite) == 0:
        return None, None
    low, high = float(finite.min()), float(finite.max())
    pad = margin * (high - low)
    low, high = low - pad, high + pad
    if whole:
        return float(math.floor(low)), float(math.ceil(high))
    return low, high


def _infer_label(
    column: pd.Series, columns: Sequence[ColumnExpectation], name: str
) -> tuple[tuple[str, ...], float]:
    kind = next(c.kind for c in columns if c.name == name)
    parsed = _parse(column, kind)
    counts = _class_counts(parsed.values[~parsed.missing & ~parsed.bad])
    if len(counts) < 2:
        return tuple(counts), 0.0
    rarest = min(counts.values()) / sum(counts.values())
    return tuple(sorted(counts)), math.floor(rarest * LABEL_SHARE_FACTOR * 1e4) / 1e4


def _round_up(share: float) -> float:
    """A share rounded up to 4 decimals (float noise aside), so the reference stays within it."""
    return max(share, math.ceil(round(share * 1e4, 6)) / 1e4)


__all__ = [
    "CHECKS",
    "DEFAULT_SEVERITY",
    "LABEL_SHARE_FACTOR",
    "MAX_EXAMPLES",
    "CheckReport",
    "ColumnExpectation",
    "Finding",
    "Kind",
    "Severity",
    "TableSchema",
    "check_table",
    "infer_kind",
    "infer_schema",
]
