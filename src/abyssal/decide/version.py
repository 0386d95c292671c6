"""Operating points of a registered version: chosen on its validation split's held-out scores
(:meth:`Solution.held_out` with ``split="val"``), checked on its test split, kept beside it."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from abyssal.core.errors import AbyssalError
from abyssal.decide.points import OperatingPoint, PointSpec, achieved, choose
from abyssal.decide.store import save_points


def _binary(frame: Any, where: str) -> tuple[np.ndarray, np.ndarray]:
    if "score" not in frame.columns:
        raise AbyssalError(
            f"{where}: operating points are for binary classifiers (a score of the positive "
            "class); this model predicts more classes"
        )
    return frame["label"].to_numpy(dtype=np.int64), frame["score"].to_numpy(dtype=np.float64)


def choose_for_version(
    ref: str,
    specs: Sequence[PointSpec],
    *,
    default: str | None = None,
    store: Any = None,
    home: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Choose each of ``specs`` on ``ref``'s validation split, measure it on its test split,
    and keep the points beside the version.

    Returns:
        ``{"version", "default", "points": [OperatingPoint], "test": {name: achieved}}``.
    """
    from abyssal.solutions.loading import load_model

    loaded = load_model(ref, store)
    version = loaded.version.ref
    solution, cfg, model = loaded.solution, loaded.cfg, loaded.model
    data = solution.prepare(cfg)
    yv, sv = _binary(solution.held_out(cfg, model, data, split="val"), f"{version} validation")
    yt, st = _binary(solution.held_out(cfg, model, data, split="test"), f"{version} test")
    points: list[OperatingPoint] = [choose(yv, sv, spec) for spec in specs]
    test = {
        p.name: achieved(yt, st, p.review_at, p.block_at, p.spec.get("costs") or None)
        for p in points
    }
    save_points(
        version,
        points,
        default=default,
        chosen_on=f"validation split of {getattr(data, 'description', '')}",
        home=home,
    )
    return {"version": version, "default": default or points[0].name, "points": points,
            "test": test}  # fmt: skip
