"""Feedback files for :func:`abyssal.decide.feedback.add_feedback`: CSV with a header, or JSON
lines, one record a row or line: ``id`` (or ``transaction_id``), ``label``, ``timestamp`` (or
``labelled_at``), optionally ``source``.

Example:
    >>> read_feedback_file("chargebacks.csv")  # doctest: +SKIP
    [{'id': 'T1', 'label': 1, 'timestamp': '2026-03-01T12:00:00Z'}]
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pandas as pd

from abyssal.core.errors import DataError

_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")


def read_feedback_file(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The records of a feedback file: CSV with a header, or JSON lines (``.jsonl``,
    ``.ndjson``, ``.json``; a ``.json`` file may also hold one array). CSV cells are text, so
    a label written as a whole number becomes that integer and empty cells are missing.

    Raises:
        DataError: the file is missing, unreadable, or a JSON line is not JSON (its line named).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError("no such feedback file", path=path)
    if path.suffix.lower() in (".jsonl", ".ndjson", ".json"):
        return _json_records(path)
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read the CSV: {e}", path=path) from None
    frame.columns = [str(c).strip() for c in frame.columns]
    records = []
    for row in frame.to_dict("records"):
        row = {k: (v.strip() or None) for k, v in row.items()}
        label = row.get("label")
        if label is not None and _NUMBER.match(label):
            number = float(label)
            row["label"] = int(number) if number.is_integer() else number
        records.append(row)
    return records


def _json_records(path: Path) -> list[Any]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(f"not UTF-8 text: {e}", path=path) from None
    if path.suffix.lower() == ".json" and text.lstrip().startswith("["):
        try:
            records = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"not JSON: {e}", path=path) from None
        return records if isinstance(records, list) else [records]
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise DataError(f"not a JSON line: {e}", path=path, row=number) from None
    return records
