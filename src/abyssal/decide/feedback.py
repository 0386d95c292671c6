"""Confirmed labels coming back after a model's decisions (chargebacks, analyst decisions,
inspection results), and the label delay that decides when an example counts as negative.

Two append-only JSON-lines files per model name, under ``$ABYSSAL_HOME/feedback/<name>/``:

- ``predictions.jsonl``: one line per scored item, ``{"id", "version", "score", "action",
  "event_time", "logged"}`` (:func:`log_predictions`; a served version with operating points
  logs every decided response that carries an id);
- ``labels.jsonl``: one line per confirmed label, ``{"id", "label", "labelled_at", "source",
  "received"}`` (:func:`add_feedback`, which checks the whole batch and writes all of it or
  nothing). No prediction, no feedback: a label's id must be in the prediction log.

Label delay (:func:`resolve_labels`): labels arrive late, so at a time ``as_of`` an item is

- its confirmed label when one arrived (``labelled_at <= as_of``; the latest such wins);
- 0 when it is binary, no label arrived and its label window has passed
  (``as_of - event_time >= window_s``): **an example counts as negative only once its label
  window has passed**;
- NaN (pending) otherwise: inside its window, silence is not a negative.

Example:
    >>> log_predictions("fraud", [{"id": "T1", "version": "fraud:3", "score": 0.9,
    ...                             "action": "block", "event_time": 1000}])  # doctest: +SKIP
    1
    >>> add_feedback("fraud", [{"id": "T1", "label": 1, "timestamp": 5000}])  # doctest: +SKIP
    1
    >>> labelled_rows("fraud", as_of=6000, window_s=86400)["label"].tolist()  # doctest: +SKIP
    [1.0]
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from abyssal.core.atomic import FILE_MODE, fsync_dir
from abyssal.core.clock import utc_now
from abyssal.core.errors import ConfigError, DataError, StoreError
from abyssal.core.home import abyssal_home
from abyssal.core.versions import check_name

log = logging.getLogger(__name__)

CLOCK_SKEW_S = 60
"""A label may be stamped this many seconds after "now" (clocks of two machines differ)."""

SHOWN = 5
"""How many refused records or unknown ids an error lists."""

ID_KEYS = ("id", "transaction_id")
TIME_KEYS = ("timestamp", "labelled_at")
PREDICTION_COLUMNS = ["id", "version", "score", "action", "event_time", "logged"]
LABEL_COLUMNS = ["id", "label", "labelled_at", "source", "received"]
ROW_COLUMNS = ["id", "version", "score", "action", "event_time", "label", "labelled_at"]
ACTIONS = ("approve", "review", "block", "accept")  # accept: a multi-class point's
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}

Home = str | os.PathLike[str] | None


# -- files -------------------------------------------------------------------------------------


def feedback_dir(model_name: str, home: Home = None) -> Path:
    """``$ABYSSAL_HOME/feedback/<model_name>``; the name is checked (no path tricks)."""
    check_name(model_name)
    return abyssal_home(home) / "feedback" / model_name


def predictions_path(model_name: str, home: Home = None) -> Path:
    """The prediction log of ``model_name``."""
    return feedback_dir(model_name, home) / "predictions.jsonl"


def labels_path(model_name: str, home: Home = None) -> Path:
    """The confirmed labels of ``model_name``."""
    return feedback_dir(model_name, home) / "labels.jsonl"


def _append_lines(path: Path, entries: Sequence[Mapping[str, Any]]) -> None:
    """All ``entries`` as JSON lines in one ``O_APPEND`` write, then fsynced: the batch lands
    whole at the end of the file, also beside another writer. A torn last line left by a
    crash is closed first, so that it spoils no new line (readers skip it)."""
    text = "".join(json.dumps(e, allow_nan=False) + "\n" for e in entries)
    path.parent.mkdir(parents=True, exist_ok=True)
    created = not path.exists()
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, FILE_MODE)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            text = "\n" + text
        data = text.encode()
        while data:
            data = data[os.write(fd, data) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    if created:  # the new name itself must survive a crash
        fsync_dir(path.parent)


def _read_lines(path: Path, required: Sequence[str]) -> list[dict[str, Any]]:
    """The JSON objects of a JSON-lines file; an unreadable line (a write a crash cut short,
    never acknowledged) or one without a ``required`` key is skipped with a warning naming
    it."""
    if not path.is_file():
        return []
    out = []
    with path.open("rb") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                entry = None
            if isinstance(entry, dict) and all(entry.get(k) is not None for k in required):
                out.append(entry)
            else:
                log.warning("%s line %d is not a JSON object with %s (a torn write?); "
                            "skipped", path, number, ", ".join(required))  # fmt: skip
    return out


# -- the prediction log ------------------------------------------------------------------------


def log_predictions(model_name: str, rows: Iterable[Mapping[str, Any]], home: Home = None) -> int:
    """Append scored items to ``model_name``'s prediction log (one write and one fsync for
    the batch); how many.

    Args:
        model_name: the model's name (``fraud``, not ``fraud:3``).
        rows: each with ``id`` and ``version``, optionally ``score`` (a float or ``None``),
            ``action`` (approve, review, block or ``None``) and ``event_time`` (Unix seconds
            or ISO-8601; default: now).
        home: the abyssal home (default: ``$ABYSSAL_HOME``).

    Raises:
        DataError: a row without an id or version, or with an unreadable event time.

    Example:
        >>> log_predictions("fraud", [{"id": "T1", "version": "fraud:3", "score": 0.91,
        ...                            "action": "block", "event_time": 1700000000}])
        1
    """
    now, logged = int(time.time()), utc_now()
    lines = [_prediction_line(k, row, now, logged) for k, row in enumerate(rows)]
    if lines:
        _append_lines(predictions_path(model_name, home), lines)
    return len(lines)


def _prediction_line(k: int, row: Mapping[str, Any], now: int, logged: str) -> dict[str, Any]:
    ident, version = _id(row.get("id")), row.get("version")
    if ident is None or not isinstance(version, str) or not version:
        raise DataError(f"prediction {k} needs an id and a version, got {dict(row)!r}")
    score, action = row.get("score"), row.get("action")
    if score is not None:
        score = float(score)
        score = score if math.isfinite(score) else None
    if action not in (None, *ACTIONS):
        raise DataError(f"prediction {k} ({ident!r}): action {action!r} is not one of {ACTIONS}")
    when = row.get("event_time")
    try:
        event_time = now if when is None else math.floor(to_unix_seconds(when))
    except ValueError as e:
        raise DataError(f"prediction {k} ({ident!r}): event_time {e}") from None
    return {"id": ident, "version": version, "score": score, "action": action,
            "event_time": event_time, "logged": logged}  # fmt: skip


def read_predictions(model_name: str, home: Home = None) -> pd.DataFrame:
    """Every logged prediction of ``model_name``, in the order logged (an id scored twice,
    by a replay or by two versions, has two rows): columns ``id`` (text), ``version``,
    ``score``, ``action``, ``event_time`` (int Unix seconds), ``logged``."""
    frame = pd.DataFrame(_read_lines(predictions_path(model_name, home), ("id", "event_time")),
                         columns=PREDICTION_COLUMNS)  # fmt: skip
    frame["id"] = frame["id"].astype(str)
    frame["event_time"] = frame["event_time"].astype("int64")
    frame["score"] = frame["score"].astype("float64")
    return frame


def _first_predictions(predictions: pd.DataFrame) -> pd.DataFrame:
    """One row per id: its first logged prediction (the decision acted on)."""
    return predictions.drop_duplicates("id", keep="first")


# -- timestamps and durations ------------------------------------------------------------------

_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")


def to_unix_seconds(value: Any) -> float:
    """Unix seconds of a timestamp: a number (Unix seconds), numeric text, an ISO-8601
    string (``Z`` or an offset; none: UTC) or a ``datetime`` (naive: UTC).

    Raises:
        ValueError: anything else (a bool, NaN, unreadable text), the reason in the message.

    Example:
        >>> to_unix_seconds("1970-01-02T00:00:00Z"), to_unix_seconds(60)
        (86400.0, 60.0)
    """
    if isinstance(value, bool | np.bool_):
        raise ValueError(f"{value!r} is not a time: write Unix seconds or ISO-8601")
    if isinstance(value, datetime):
        stamp = value if value.tzinfo else value.replace(tzinfo=UTC)
        return stamp.timestamp()
    if isinstance(value, str) and _NUMBER.match(value.strip()):
        value = float(value)
    if isinstance(value, int | float | np.integer | np.floating):
        seconds = float(value)
        if not math.isfinite(seconds):
            raise ValueError(f"{value!r} is not a time: write Unix seconds or ISO-8601")
        return seconds
    if isinstance(value, str):
        try:
            return to_unix_seconds(datetime.fromisoformat(value.strip()))
        except ValueError:
            pass
    raise ValueError(f"{value!r} cannot be read as a time: write Unix seconds or ISO-8601 "
                     "(2026-03-01T12:00:00Z)")  # fmt: skip


def parse_duration(text: str | int | float) -> int:
    """Seconds of a duration: ``3600``, ``90s``, ``15m``, ``12h``, ``30d``, ``2w``.

    Raises:
        ConfigError: anything else, or a negative duration.

    Example:
        >>> parse_duration("30d"), parse_duration("12h"), parse_duration(3600)
        (2592000, 43200, 3600)
    """
    found = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", str(text).lower())
    if found is None:
        raise ConfigError(f"duration {text!r}: write seconds (3600) or 90s, 15m, 12h, 30d, 2w")
    return round(float(found.group(1)) * _UNITS[found.group(2) or "s"])


def _iso(seconds: float) -> str:
    try:
        return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds")
    except (OverflowError, OSError, ValueError):  # beyond the years datetime holds
        return f"{seconds:g} s"


# -- the feedback store ------------------------------------------------------------------------


class _Refused(Exception):
    """One record's problem (collected, then raised together as a DataError)."""


class _Unknown(Exception):
    """A record whose id was never predicted (collected, then named together)."""


def add_feedback(
    model: str,
    records: Iterable[Any],
    *,
    source: str = "unspecified",
    home: Home = None,
    now: float | None = None,
    store: Any = None,
) -> int:
    """Store confirmed labels of ``model``'s predictions; all of them or, if any record is
    refused, none.

    Args:
        model: ``name``, ``name:N`` or ``name:alias`` of a model in the store; labels are kept
            per name.
        records: mappings with ``id`` (or ``transaction_id``), ``label`` (an integer class:
            0 or 1 for a binary model) and ``timestamp`` (or ``labelled_at``: when the label
            became known, Unix seconds or ISO-8601, naive = UTC), optionally ``source``.
        source: where the batch comes from (``chargebacks``, ``analyst``), unless a record
            names its own.
        home: where the prediction log and the labels are (default: ``$ABYSSAL_HOME``).
        now: Unix seconds taken as now (default: the clock); a label may be stamped at most
            :data:`CLOCK_SKEW_S` later.
        store: the model store (default: the one in ``home``).

    Returns:
        How many labels were stored.

    Raises:
        StoreError: an unknown model or version (the known ones listed).
        DataError: an empty batch, or refused records, each named by its index (from 0) and
            id: not a mapping, a missing field, a label that is not one of the model's
            classes (bools, 0.5, "yes", NaN), a timestamp unreadable, in the future or
            before the prediction's event time, ids never predicted (at most 5 shown).
    """
    from abyssal.core.store import ModelStore

    store = store if store is not None else ModelStore(home)
    version = store.resolve(model)
    records = _as_list(records)
    now = time.time() if now is None else float(now)
    first = _first_predictions(read_predictions(version.name, home)).set_index("id")
    classes = _class_counter(store, version)
    lines, problems, unknown = [], [], []
    received = utc_now()
    for index, record in enumerate(records):
        try:
            line = _label_line(index, record, first, classes, now)
        except _Refused as e:
            problems.append(str(e))
            continue
        except _Unknown as e:
            unknown.append(str(e))
            continue
        own = record.get("source")
        line["source"] = own if isinstance(own, str) and own else str(source)
        lines.append({**line, "received": received})
    if problems or unknown:
        raise DataError(_refusal(version.name, len(records), problems, unknown, first.empty))
    _append_lines(labels_path(version.name, home), lines)
    return len(lines)


def _as_list(records: Iterable[Any]) -> list[Any]:
    if isinstance(records, Mapping | str | bytes) or not isinstance(records, Iterable):
        raise DataError(f"feedback records must be a list of objects, got "
                        f"{type(records).__name__}")  # fmt: skip
    records = list(records)
    if not records:
        raise DataError("no feedback records: give at least one {id, label, timestamp}")
    return records


def _label_line(
    index: int,
    record: Any,
    first: pd.DataFrame,
    classes: Callable[[str | None], int],
    now: float,
) -> dict[str, Any]:
    """The stored line of one record.

    Raises:
        _Refused: what is wrong with the record.
        _Unknown: its id was never predicted.
    """
    where = f"record {index}"
    if not isinstance(record, Mapping):
        raise _Refused(f"{where} is not an object with id, label and timestamp "
                       f"(got {type(record).__name__})")  # fmt: skip
    ident = _id(_field(record, ID_KEYS, where))
    if ident is None:
        raise _Refused(f"{where}: the id must be text or a whole number")
    where = f"record {index} (id {ident!r})"
    raw_label, raw_time = _field(record, ("label",), where), _field(record, TIME_KEYS, where)
    known = ident in first.index
    label = _label(raw_label, classes(first.at[ident, "version"] if known else None), where)
    try:
        labelled_at = to_unix_seconds(raw_time)
    except ValueError as e:
        raise _Refused(f"{where}: timestamp {e}") from None
    if labelled_at > now + CLOCK_SKEW_S:
        hint = "; it looks like milliseconds: divide by 1000" if labelled_at > 1e11 else ""
        raise _Refused(f"{where}: timestamp {_iso(labelled_at)} is in the future (now is "
                       f"{_iso(now)}){hint}")  # fmt: skip
    if not known:
        raise _Unknown(ident)
    event_time = int(first.at[ident, "event_time"])
    if labelled_at < event_time:
        raise _Refused(f"{where}: labelled at {_iso(labelled_at)}, before its prediction's "
                       f"event time {_iso(event_time)}")  # fmt: skip
    stamp = int(labelled_at) if float(labelled_at).is_integer() else labelled_at
    return {"id": ident, "label": label, "labelled_at": stamp}


def _field(record: Mapping[str, Any], keys: Sequence[str], where: str) -> Any:
    """The value under the first of ``keys`` present (the others are aliases)."""
    given = {k: record[k] for k in keys if _present(record.get(k))}
    if not given:
        named = " (or ".join(keys) + ")" * (len(keys) - 1)
        raise _Refused(f"{where}: missing {named}")
    if len({json.dumps(v, default=str) for v in given.values()}) > 1:
        raise _Refused(f"{where}: {' and '.join(given)} differ: {given}")
    return next(iter(given.values()))


def _present(value: Any) -> bool:
    return value is not None and not (isinstance(value, str) and not value.strip())


def _id(value: Any) -> str | None:
    """An id as text (``7`` and ``"7"`` are one id); ``None`` for what is not an id."""
    if isinstance(value, bool | np.bool_) or value is None:
        return None
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


def _label(value: Any, n_classes: int, where: str) -> int:
    allowed = "0 or 1" if n_classes == 2 else f"0 to {n_classes - 1}"
    number = value if isinstance(value, int | float | np.integer | np.floating) else None
    if isinstance(value, bool | np.bool_) or number is None or not float(number).is_integer():
        raise _Refused(f"{where}: label {value!r} is not a class ({allowed})")
    if not 0 <= int(number) < n_classes:
        raise _Refused(f"{where}: label {int(number)} is not a class of the model ({allowed})")
    return int(number)


def _refusal(name: str, total: int, problems: list[str], unknown: list[str],
             nothing_logged: bool) -> str:  # fmt: skip
    shown = problems[:SHOWN]
    if len(problems) > SHOWN:
        shown.append(f"and {len(problems) - SHOWN} more")
    if unknown:
        ids = ", ".join(repr(i) for i in unknown[:SHOWN])
        more = f" and {len(unknown) - SHOWN} more" if len(unknown) > SHOWN else ""
        have = "ids have" if len(unknown) > 1 else "id has"
        text = f"{len(unknown)} {have} no logged prediction of {name} (no prediction, no " \
               f"feedback): {ids}{more}"  # fmt: skip
        if nothing_logged:
            text += (f"; nothing is logged for {name} yet: a served version with operating "
                     "points logs its decisions (abyssal decide points)")  # fmt: skip
        shown.append(text)
    refused = len(problems) + len(unknown)
    return f"{refused} of {total} feedback records refused, nothing stored: " + "; ".join(shown)


def n_classes(version: Any) -> int:
    """How many classes a version predicts, from its stored model spec (``classes``, or a
    tabular target's classes); 2 when it does not say (fraud, nodule: binary)."""
    spec = (getattr(version, "config", None) or {}).get("model_spec") or {}
    classes = spec.get("classes")
    if classes is None:
        target = (spec.get("preprocessing") or {}).get("target") or {}
        classes = target.get("classes") if target.get("task") == "classification" else None
    return len(classes) if classes and len(classes) >= 2 else 2


def _class_counter(store: Any, fallback: Any) -> Callable[[str | None], int]:
    """The class count of the version that made a prediction (cached), else ``fallback``'s."""
    counts: dict[str | None, int] = {None: n_classes(fallback)}

    def count(ref: str | None) -> int:
        if ref not in counts:
            try:
                counts[ref] = n_classes(store.resolve(ref))
            except StoreError:
                counts[ref] = counts[None]
        return counts[ref]

    return count


def read_labels(model_name: str, home: Home = None) -> pd.DataFrame:
    """Every stored label line of ``model_name`` in the order stored: ``id`` (text),
    ``label`` (int), ``labelled_at`` (float Unix seconds), ``source``, ``received``."""
    frame = pd.DataFrame(
        _read_lines(labels_path(model_name, home), ("id", "label", "labelled_at")),
        columns=LABEL_COLUMNS,
    )
    frame["id"] = frame["id"].astype(str)
    frame["label"] = frame["label"].astype("int64")
    frame["labelled_at"] = frame["labelled_at"].astype("float64")
    return frame


# -- label delay -------------------------------------------------------------------------------


def seen_labels(labels: pd.DataFrame, as_of: float) -> pd.DataFrame:
    """The label of each id as known at ``as_of``: of the labels with ``labelled_at <=
    as_of``, the latest (then the one stored last); indexed by id, columns ``label`` and
    ``labelled_at``."""
    arrived = labels[labels["labelled_at"] <= as_of].reset_index(drop=True)
    arrived = arrived.assign(_line=np.arange(len(arrived)))
    latest = arrived.sort_values(["labelled_at", "_line"], kind="stable")
    latest = latest.drop_duplicates("id", keep="last")
    return latest.set_index(latest["id"].astype(str))[["label", "labelled_at"]]


def resolve_labels(
    predictions: pd.DataFrame,
    labels: pd.DataFrame,
    *,
    as_of: float,
    window_s: float | None,
    n_classes: int = 2,
) -> pd.Series:
    """The label of each prediction as known at ``as_of``, with the label delay.

    An example counts as negative only once its label window has passed: silence inside the
    window is not a negative, so a fraud whose chargeback is still weeks away is not trained
    on as legitimate.

    Args:
        predictions: ``id`` and ``event_time`` (Unix seconds) per row.
        labels: ``id``, ``label``, ``labelled_at`` (every stored line: :func:`read_labels`).
        as_of: Unix seconds; labels stamped later are not seen.
        window_s: seconds after its event within which an item's label is expected;
            ``None``: no window (no implicit negative).
        n_classes: 2 for a binary model; more: no implicit negative either.

    Returns:
        Floats indexed like ``predictions``: the latest label seen by ``as_of``; else 0.0
        for a binary model when ``as_of - event_time >= window_s``; else NaN (pending).

    Example:
        >>> p = pd.DataFrame({"id": ["a", "b", "c"], "event_time": [0, 0, 90]})
        >>> l = pd.DataFrame({"id": ["a"], "label": [1], "labelled_at": [50.0]})
        >>> resolve_labels(p, l, as_of=100, window_s=30).tolist()
        [1.0, 0.0, nan]
    """
    if window_s is not None and window_s < 0:
        raise ConfigError(f"the label window must be >= 0 seconds, got {window_s}")
    seen = seen_labels(labels, as_of)["label"].astype("float64")
    out = predictions["id"].astype(str).map(seen).astype("float64")
    if n_classes == 2 and window_s is not None:
        age = as_of - predictions["event_time"].astype("float64")
        out = out.where(out.notna() | (age < window_s), 0.0)
    return out.rename("label")


def labelled_rows(
    model: str,
    *,
    as_of: Any = None,
    window_s: float | None,
    home: Home = None,
    store: Any = None,
) -> pd.DataFrame:
    """The logged predictions of ``model``'s name made by ``as_of``, one per id (its first),
    with their label at ``as_of`` (:func:`resolve_labels`): what continual learning trains on.

    Args:
        model: ``name``, ``name:N`` or ``name:alias`` (every version's predictions of the name;
            the ref's version gives the class count).
        as_of: Unix seconds or ISO-8601 (default: now).
        window_s: the label window in seconds (``None``: none, nothing is negative by silence).
        home: the abyssal home.
        store: the model store (default: the one in ``home``).

    Returns:
        Columns ``id, version, score, action, event_time, label`` (1.0, 0.0 or NaN) and
        ``labelled_at`` (the confirmed label's time; NaN for a negative by window or pending).
    """
    from abyssal.core.store import ModelStore

    store = store if store is not None else ModelStore(home)
    version = store.resolve(model)
    moment = time.time() if as_of is None else _as_of(as_of)
    rows = _first_predictions(read_predictions(version.name, home))
    rows = rows[rows["event_time"] <= moment].reset_index(drop=True)
    labels = read_labels(version.name, home)
    rows["label"] = resolve_labels(rows, labels, as_of=moment, window_s=window_s,
                                   n_classes=n_classes(version))  # fmt: skip
    rows["labelled_at"] = rows["id"].map(seen_labels(labels, moment)["labelled_at"])
    rows["labelled_at"] = rows["labelled_at"].astype("float64")
    return rows[ROW_COLUMNS]


def _as_of(value: Any) -> float:
    try:
        return to_unix_seconds(value)
    except ValueError as e:
        raise ConfigError(f"as of: {e}") from None


def feedback_counts(rows: pd.DataFrame) -> dict[str, int]:
    """How :func:`labelled_rows` labelled its rows: ``logged``, ``confirmed_positive`` (a
    confirmed non-zero class), ``confirmed_negative`` (a confirmed 0), ``negative_by_window``
    and ``pending``."""
    confirmed = rows["labelled_at"].notna()
    return {
        "logged": len(rows),
        "confirmed_positive": int((confirmed & (rows["label"] != 0)).sum()),
        "confirmed_negative": int((confirmed & (rows["label"] == 0)).sum()),
        "negative_by_window": int((~confirmed & (rows["label"] == 0)).sum()),
        "pending": int(rows["label"].isna().sum()),
    }
