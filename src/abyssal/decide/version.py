"""Operating points of a registered version: chosen on its validation split's held-out scores
of the items its service decides on (:meth:`Solution.decision_frame`, by default
:meth:`Solution.held_out`, with ``split="val"``), checked on its test split, kept beside it.

A binary classifier's frame has ``score`` (the positive class's probability) and takes
triage points (:func:`~abyssal.decide.points.choose`); a multi-class classifier's has
``prediction`` and ``probability`` (the predicted class's) and takes accept-or-review points
(:func:`~abyssal.decide.points.choose_multiclass`)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from abyssal.core.errors import AbyssalError, ConfigError
from abyssal.decide.points import (
    BINARY_KINDS,
    MULTICLASS_KINDS,
    OperatingPoint,
    PointSpec,
    achieved,
    achieved_multiclass,
    choose,
    choose_multiclass,
)
from abyssal.decide.store import save_points


def _columns(frame: Any, where: str) -> tuple[np.ndarray, ...]:
    """``(label, score)`` of a binary frame, ``(label, prediction, probability)`` of a
    multi-class one."""
    if "score" in frame.columns:
        return frame["label"].to_numpy(dtype=np.int64), frame["score"].to_numpy(dtype=np.float64)
    if {"prediction", "probability"} <= set(frame.columns):
        return (frame["label"].to_numpy(dtype=object), frame["prediction"].to_numpy(dtype=object),
                frame["probability"].to_numpy(dtype=np.float64))  # fmt: skip
    raise AbyssalError(
        f"{where}: operating points need held-out predictions with a score (binary) or a "
        f"prediction and its probability (multi-class); got columns {list(frame.columns)}"
    )


def _fitting(specs: Sequence[PointSpec], multiclass: bool, version: str) -> None:
    kinds = MULTICLASS_KINDS if multiclass else BINARY_KINDS
    wrong = [s.name for s in specs if s.kind not in kinds]
    if wrong:
        what = "a multi-class" if multiclass else "a binary"
        raise ConfigError(
            f"{version} is {what} classifier: points {wrong} do not fit it; it takes "
            f"{', '.join(kinds)} points"
        )


def _choose(cols: tuple[np.ndarray, ...], spec: PointSpec) -> OperatingPoint:
    return choose(*cols, spec) if len(cols) == 2 else choose_multiclass(*cols, spec)


def _measure(cols: tuple[np.ndarray, ...], p: OperatingPoint) -> dict[str, Any]:
    if len(cols) == 2:
        return achieved(*cols, p.review_at, p.block_at, p.spec.get("costs") or None)
    return achieved_multiclass(*cols, p.accept_at)


def choose_for_version(
    ref: str,
    specs: Sequence[PointSpec],
    *,
    default: str | None = None,
    store: Any = None,
    home: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Choose each of ``specs`` on ``ref``'s validation split, measure it on its test split,
    and keep the points beside the version. A binary classifier takes precision, recall,
    review_budget and cost points; a multi-class one accuracy and review_budget points
    (accept or review).

    Returns:
        ``{"version", "default", "points": [OperatingPoint], "test": {name: achieved}}``.

    Raises:
        ConfigError: a point that does not fit the model (binary kinds on a multi-class model
            or the reverse), naming the kinds that do.
    """
    from abyssal.solutions.loading import load_model

    loaded = load_model(ref, store)
    version = loaded.version.ref
    solution, cfg, model = loaded.solution, loaded.cfg, loaded.model
    data = solution.prepare(cfg)
    val = _columns(solution.decision_frame(cfg, model, data, split="val"), f"{version} validation")
    _fitting(specs, len(val) == 3, version)
    test_cols = _columns(solution.decision_frame(cfg, model, data, split="test"), f"{version} test")
    points: list[OperatingPoint] = [_choose(val, spec) for spec in specs]
    test = {p.name: _measure(test_cols, p) for p in points}
    save_points(
        version,
        points,
        default=default,
        chosen_on=f"validation split of {getattr(data, 'description', '')}",
        home=home,
    )
    return {"version": version, "default": default or points[0].name, "points": points,
            "test": test}  # fmt: skip
