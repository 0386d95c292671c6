"""Operating points kept beside a model version (versions themselves are immutable):
``$ABYSSAL_HOME/decisions/<name>/<N>/points.json``, written whole, one of them the default.

Example:
    >>> save_points("fraud:3", [point], default=point.name)  # doctest: +SKIP
    >>> load_points("fraud:3")["default"]  # doctest: +SKIP
    'precision-0.9'
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from abyssal.core.atomic import write_text_atomic
from abyssal.core.clock import utc_now
from abyssal.core.errors import AbyssalError, ConfigError
from abyssal.core.home import abyssal_home
from abyssal.decide.points import OperatingPoint

SCHEMA = 1


def points_path(ref: str, home: str | os.PathLike[str] | None = None) -> Path:
    """Where the operating points of the version ``name:N`` are kept."""
    name, _, number = ref.partition(":")
    if not name or not number.isdigit():
        raise ConfigError(f"operating points belong to a pinned version name:N, not '{ref}'")
    return abyssal_home(home) / "decisions" / name / number / "points.json"


def save_points(
    ref: str,
    points: Sequence[OperatingPoint],
    *,
    default: str | None = None,
    chosen_on: str = "",
    home: str | os.PathLike[str] | None = None,
) -> Path:
    """Keep ``points`` for ``ref`` (replacing what was kept), ``default`` (a point's name;
    default: the first) being the one decisions use unless asked otherwise."""
    if not points:
        raise ConfigError("no operating point to keep")
    names = [p.name for p in points]
    if len(set(names)) != len(names):
        raise ConfigError(f"operating point names repeat: {names}")
    default = default or names[0]
    if default not in names:
        raise ConfigError(f"default point '{default}' is not one of {names}")
    record = {
        "schema": SCHEMA,
        "version": ref,
        "created": utc_now(),
        "chosen_on": chosen_on,
        "default": default,
        "points": [p.as_dict() for p in points],
    }
    path = points_path(ref, home)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_text_atomic(path, json.dumps(record, indent=2, allow_nan=True) + "\n")


def load_points(ref: str, home: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """The kept record of ``ref``: ``default``, ``points`` (as :class:`OperatingPoint`),
    ``chosen_on``; an error saying how to make one when there is none."""
    path = points_path(ref, home)
    if not path.is_file():
        raise AbyssalError(f"{ref} has no operating points yet (abyssal decide points {ref} ...)")
    record = json.loads(path.read_text(encoding="utf-8"))
    record["points"] = [OperatingPoint.from_dict(p) for p in record["points"]]
    return record


def point(ref: str, name: str | None = None, home: str | os.PathLike[str] | None = None) -> Any:
    """One kept point of ``ref``: ``name``, or the default."""
    record = load_points(ref, home)
    wanted = name or record["default"]
    for p in record["points"]:
        if p.name == wanted:
            return p
    raise AbyssalError(
        f"{ref} has no operating point '{wanted}'; it has {[p.name for p in record['points']]}"
    )
