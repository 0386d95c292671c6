"""Load traces: requests a second, step by step, for the simulator (:mod:`abyssal.deploy.simulate`).

A :class:`Trace` is a rate per step of ``step_s`` seconds (the rate holds for the whole step;
arrivals within it are Poisson) and the share of sensitive requests (one number, or one per
step). Traces come from :func:`diurnal` (a business day's shape) or from a user's file through
:func:`read_trace`:

- CSV with a header ``time_s,rps[,sensitive_share]``: one row per step, times increasing by the
  same step (the first difference); each row's rate holds from its time to the next row's. Extra
  columns are ignored.
- JSON lines, one object per request: ``{"time": "2024-05-01T09:00:00.120Z", "sensitive":
  true}``. ``time`` is ISO-8601 (no zone: UTC) or epoch seconds (a number or a numeric string);
  ``sensitive`` (a boolean) is optional. Requests are counted into steps of ``step_s`` from the
  first request's time. A log written as requests finish is slightly out of order: a time up to
  ``disorder_s`` before the latest seen is accepted, an earlier one is an error.

Malformed input raises :class:`~abyssal.core.errors.DataError` naming the file, the row (CSV: data
row, header excluded) or line (JSON lines), the column and what was expected.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from abyssal.core.atomic import write_text_atomic
from abyssal.core.errors import ConfigError, DataError

CSV_COLUMNS = ("time_s", "rps", "sensitive_share")
"""A CSV trace's columns (the last is optional)."""


@dataclass
class Trace:
    """Requests a second per step.

    Attributes:
        step_s: seconds per step.
        rates: requests a second in each step (>= 0, finite).
        sensitive_share: share of requests that are sensitive: one number or one per step
            (0..1).
        name: a label for results and charts.
    """

    step_s: float
    rates: np.ndarray
    sensitive_share: float | np.ndarray = 0.0
    name: str = "trace"

    def __post_init__(self) -> None:
        if not (math.isfinite(self.step_s) and self.step_s > 0):
            raise DataError(f"trace {self.name}: step_s must be > 0, got {self.step_s!r}")
        rates = np.asarray(self.rates, dtype=np.float64)
        if rates.ndim != 1 or rates.size == 0:
            raise DataError(f"trace {self.name}: rates must be a non-empty 1-d sequence")
        bad = np.flatnonzero(~np.isfinite(rates) | (rates < 0))
        if bad.size:
            k = int(bad[0])
            raise DataError(
                f"trace {self.name}: step {k} has rate {float(rates[k])!r}; rates must be "
                "finite and >= 0"
            )
        self.rates = rates
        share = self.sensitive_share
        if np.ndim(share) == 0:
            share = float(share)
            if not 0 <= share <= 1:
                raise DataError(f"trace {self.name}: sensitive_share {share!r} is not in [0, 1]")
        else:
            share = np.asarray(share, dtype=np.float64)
            if share.shape != rates.shape:
                raise DataError(
                    f"trace {self.name}: sensitive_share has {share.size} values for "
                    f"{rates.size} steps"
                )
            bad = np.flatnonzero(~((share >= 0) & (share <= 1)))
            if bad.size:
                k = int(bad[0])
                raise DataError(
                    f"trace {self.name}: step {k} has sensitive_share {float(share[k])!r}, "
                    "not in [0, 1]"
                )
        self.sensitive_share = share

    @property
    def steps(self) -> int:
        return int(self.rates.size)

    @property
    def duration_s(self) -> float:
        return self.steps * self.step_s

    @property
    def times(self) -> np.ndarray:
        """Each step's start, seconds from the trace's start."""
        return np.arange(self.steps) * self.step_s

    @property
    def shares(self) -> np.ndarray:
        """The sensitive share of each step."""
        return np.broadcast_to(np.asarray(self.sensitive_share, dtype=np.float64), self.rates.shape)

    @property
    def peak_rps(self) -> float:
        return float(self.rates.max())

    @property
    def mean_rps(self) -> float:
        return float(self.rates.mean())

    @property
    def expected_requests(self) -> float:
        """Requests the trace sends on average (rate x seconds, summed)."""
        return float(self.rates.sum() * self.step_s)

    def scaled(self, factor: float) -> Trace:
        """The same shape at ``factor`` times the rates."""
        return Trace(self.step_s, self.rates * factor, self.sensitive_share, self.name)


def _wrapped_gauss(hours: np.ndarray, centre: float, width: float) -> np.ndarray:
    d = (hours - centre + 12.0) % 24.0 - 12.0
    return np.exp(-0.5 * (d / width) ** 2)


def _logistic(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _day_shape(
    hours: np.ndarray, peak_hour: float, second_hour: float | None, ratio: float, width: float
) -> np.ndarray:
    office = _logistic((hours % 24 - 7.5) / 0.7) * _logistic((20.0 - hours % 24) / 1.0)
    bump = _wrapped_gauss(hours, peak_hour, width)
    if second_hour is not None:
        bump = np.maximum(bump, ratio * _wrapped_gauss(hours, second_hour, 0.8 * width))
    return 0.35 * office + bump


def diurnal(
    hours: float = 24.0,
    step_s: float = 60.0,
    base_rps: float = 2.0,
    peak_rps: float = 40.0,
    peak_hour: float = 14.0,
    second_peak_hour: float | None = 10.5,
    second_peak_ratio: float = 0.75,
    width_h: float = 2.0,
    noise: float = 0.05,
    seed: int = 0,
    sensitive_share: float = 0.3,
    start_hour: float = 0.0,
    name: str = "diurnal",
) -> Trace:
    """A business day: a night trough at ``base_rps`` (around 03:00), a rise from about 07:30,
    a morning peak (``second_peak_hour``, ``second_peak_ratio`` of the main one's height above
    the trough), a lunch dip, the main peak at ``peak_hour`` reaching ``peak_rps``, an evening
    decline after about 19:00.

    The noiseless day has its minimum ``base_rps`` and its maximum ``peak_rps`` over 24 h; each
    step is then multiplied by a log-normal factor of spread ``noise`` with mean 1 (seeded), so a
    noisy peak can exceed ``peak_rps`` by a few per cent.

    Args:
        hours: the trace's length.
        step_s: seconds per step.
        base_rps: the night trough's rate.
        peak_rps: the main peak's rate.
        peak_hour: the main peak's hour of day (0-24).
        second_peak_hour: the other peak's hour (``None``: one peak).
        second_peak_ratio: its height above the trough relative to the main peak's (0-1).
        width_h: the main peak's width (standard deviation, hours).
        noise: the spread of the step-to-step noise (0: none).
        seed: the noise's seed.
        sensitive_share: share of sensitive requests.
        start_hour: the hour of day the trace starts at.
        name: the trace's label.

    Raises:
        ConfigError: a value out of range (named).
    """
    checks = {
        "hours": hours > 0,
        "step_s": step_s > 0,
        "base_rps": base_rps >= 0,
        "peak_rps": peak_rps >= base_rps,
        "peak_hour": 0 <= peak_hour < 24,
        "second_peak_ratio": 0 <= second_peak_ratio <= 1,
        "width_h": width_h > 0,
        "noise": noise >= 0,
        "sensitive_share": 0 <= sensitive_share <= 1,
    }
    for key, ok in checks.items():
        if not ok:
            raise ConfigError(
                f"diurnal: {key}={locals()[key]!r} is out of range (need hours, step_s, width_h "
                "> 0; 0 <= base_rps <= peak_rps; 0 <= peak_hour < 24; ratio and shares in [0, 1])"
            )
    if second_peak_hour is not None and not 0 <= second_peak_hour < 24:
        raise ConfigError(f"diurnal: second_peak_hour={second_peak_hour!r} is not in [0, 24)")
    grid = np.arange(0.0, 24.0, 1 / 60)
    ref = _day_shape(grid, peak_hour, second_peak_hour, second_peak_ratio, width_h)
    lo, hi = float(ref.min()), float(ref.max())
    steps = max(1, math.ceil(hours * 3600 / step_s - 1e-9))
    at = start_hour + (np.arange(steps) + 0.5) * step_s / 3600
    shape = (_day_shape(at, peak_hour, second_peak_hour, second_peak_ratio, width_h) - lo) / (
        hi - lo
    )
    rates = base_rps + (peak_rps - base_rps) * np.clip(shape, 0.0, 1.0)
    if noise > 0:
        rng = np.random.default_rng(seed)
        rates = rates * np.exp(noise * rng.standard_normal(steps) - 0.5 * noise**2)
    return Trace(step_s, rates, sensitive_share, name)


# -- files -----------------------------------------------------------------------------------


def read_trace(path: str | Path, *, step_s: float | None = None, disorder_s: float = 1.0) -> Trace:
    """A trace from a CSV of rates or a JSON-lines request log (see the module's docstring).

    The format is chosen by the suffix (``.csv``; ``.jsonl``, ``.ndjson``, ``.json``, ``.log``),
    otherwise by the first character (``{``: JSON lines).

    Args:
        path: the file.
        step_s: JSON lines: seconds per step (default 60). CSV: the step of a one-row file
            (default 60); for more rows the file's own step, which must match if given.
        disorder_s: JSON lines: how far back in time a line may go (seconds).

    Raises:
        DataError: a missing or empty file, a missing column, a value that is not a number,
            NaN, negative, out of [0, 1] for a share, times that do not increase (or not by
            equal steps, in a CSV), a line that is not a JSON object or has no usable time:
            each named by file, row or line and column.
    """
    path = Path(path)
    if step_s is not None and not (math.isfinite(step_s) and step_s > 0):
        raise ConfigError(f"read_trace: step_s must be > 0, got {step_s!r}")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DataError("no such file", path=path) from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot be read as text: {e}", path=path) from None
    if not text.strip():
        raise DataError("the file is empty (expected a CSV with a header or JSON lines)", path=path)
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json", ".log") or (
        suffix != ".csv" and text.lstrip().startswith("{")
    ):
        return _read_jsonl(path, text, step_s or 60.0, disorder_s)
    return _read_csv(path, text, step_s)


def _number(path: Path, row: int, column: str, cell: str) -> float:
    try:
        value = float(cell)
    except ValueError:
        raise DataError(f"{cell.strip()!r} is not a number", path=path, row=row,
                        column=column) from None  # fmt: skip
    if math.isnan(value):
        raise DataError("NaN is not allowed", path=path, row=row, column=column)
    if not math.isfinite(value):
        raise DataError(f"{cell.strip()} is not finite", path=path, row=row, column=column)
    return value


def _read_csv(path: Path, text: str, step_s: float | None) -> Trace:
    rows = [r for r in csv.reader(io.StringIO(text)) if any(c.strip() for c in r)]
    header = [c.strip() for c in rows[0]]
    for column in CSV_COLUMNS[:2]:
        if column not in header:
            raise DataError(
                f"missing column (the header has {header}; expected time_s,rps[,sensitive_share])",
                path=path,
                column=column,
            )
    index = {c: header.index(c) for c in CSV_COLUMNS if c in header}
    if len(rows) < 2:
        raise DataError("no rows after the header", path=path)
    times, rates, shares = [], [], []
    for k, cells in enumerate(rows[1:], start=1):
        values = {}
        for column, i in index.items():
            if i >= len(cells) or not cells[i].strip():
                raise DataError("missing value", path=path, row=k, column=column)
            values[column] = _number(path, k, column, cells[i])
        if values["rps"] < 0:
            raise DataError(f"rate {values['rps']} is negative", path=path, row=k, column="rps")
        share = values.get("sensitive_share", 0.0)
        if not 0 <= share <= 1:
            raise DataError(f"{share} is not a share in [0, 1]", path=path, row=k,
                            column="sensitive_share")  # fmt: skip
        t = values["time_s"]
        if times and t <= times[-1]:
            raise DataError(
                f"time {t:g} is not after the previous row's {times[-1]:g} (times must increase)",
                path=path,
                row=k,
                column="time_s",
            )
        times.append(t)
        rates.append(values["rps"])
        shares.append(share)
    step = step_s or 60.0
    if len(times) > 1:
        step = times[1] - times[0]
        for k in range(2, len(times)):
            gap = times[k] - times[k - 1]
            if abs(gap - step) > 1e-6 * max(1.0, step):
                raise DataError(
                    f"time {times[k]:g} is {gap:g} s after the previous row; every step must be "
                    f"{step:g} s (the first one)",
                    path=path,
                    row=k + 1,
                    column="time_s",
                )
        if step_s is not None and abs(step - step_s) > 1e-6 * max(1.0, step):
            raise DataError(f"the file's step is {step:g} s, not the {step_s:g} s asked for",
                            path=path, column="time_s")  # fmt: skip
    share_value: float | np.ndarray = np.asarray(shares) if "sensitive_share" in index else 0.0
    return Trace(step, np.asarray(rates), share_value, path.stem)


def _epoch(value: object) -> float | None:
    """Seconds since the epoch of an ISO-8601 string or a number; ``None`` if neither."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) if math.isfinite(value) else None
    if not isinstance(value, str):
        return None
    try:
        number = float(value)
    except ValueError:
        pass
    else:
        return number if math.isfinite(number) else None
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def _read_jsonl(path: Path, text: str, step_s: float, disorder_s: float) -> Trace:
    times: list[float] = []
    sensitive: list[bool] = []
    any_flag = False
    latest = -math.inf
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"line {n}: not JSON ({e.msg})", path=path) from None
        if not isinstance(record, dict):
            raise DataError(
                f"line {n}: expected a JSON object per request, got {type(record).__name__}",
                path=path,
            )
        if "time" not in record:
            raise DataError(f"line {n}: no 'time' field", path=path, column="time")
        t = _epoch(record["time"])
        if t is None:
            raise DataError(
                f"line {n}: {record['time']!r} is neither ISO-8601 nor epoch seconds",
                path=path,
                column="time",
            )
        if t < latest - disorder_s:
            raise DataError(
                f"line {n}: time {record['time']!r} is {latest - t:.3f} s before an earlier "
                f"line's; requests must be in time order (up to {disorder_s:g} s out of order)",
                path=path,
                column="time",
            )
        latest = max(latest, t)
        flag = record.get("sensitive", False)
        if "sensitive" in record:
            if not isinstance(flag, bool):
                raise DataError(
                    f"line {n}: {flag!r} is not true or false", path=path, column="sensitive"
                )
            any_flag = True
        times.append(t)
        sensitive.append(flag)
    if not times:
        raise DataError("no requests in the file", path=path)
    at = np.asarray(times)
    bins = np.floor((at - at.min()) / step_s).astype(np.int64)
    counts = np.bincount(bins)
    rates = counts / step_s
    share: float | np.ndarray = 0.0
    if any_flag:
        hits = np.bincount(bins, weights=np.asarray(sensitive, dtype=np.float64))
        share = np.divide(hits, counts, out=np.zeros_like(hits), where=counts > 0)
    return Trace(step_s, rates, share, path.stem)


def write_trace(trace: Trace, path: str | Path) -> Path:
    """Write ``trace`` as a CSV (``time_s,rps,sensitive_share``) that :func:`read_trace` reads
    back unchanged; atomic."""
    lines = [",".join(CSV_COLUMNS)]
    for t, rate, share in zip(trace.times, trace.rates, trace.shares, strict=True):
        lines.append(f"{float(t)!r},{float(rate)!r},{float(share)!r}")
    return write_text_atomic(path, "\n".join(lines) + "\n")
