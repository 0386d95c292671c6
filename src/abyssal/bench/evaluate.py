"""Evaluate a registered model version on its data (or other data, through overrides)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from abyssal.core.store import ModelStore
from abyssal.solutions.loading import check_data_paths, load_model


@dataclass
class Evaluation:
    """Metrics of one model version on one data set."""

    ref: str
    data: str
    metrics: dict[str, float]
    layout: Any = None  # the solution's MetricLayout, for display


def evaluate(
    ref: str, overrides: list[str] | None = None, store: ModelStore | None = None
) -> Evaluation:
    """Evaluate the version ``ref`` on the data its config names, after ``overrides``.

    Example:
        >>> ev = evaluate("fraud:production", ["data.path=march.csv"])  # doctest: +SKIP
        >>> ev.metrics["test_auprc"]  # doctest: +SKIP
        0.91
    """
    loaded = load_model(ref, store, overrides)
    check_data_paths(loaded, overrides)
    data = loaded.solution.prepare(loaded.cfg)
    metrics = loaded.solution.evaluate(loaded.cfg, loaded.model, data)
    layout = loaded.solution.metric_layout
    return Evaluation(loaded.version.ref, getattr(data, "description", ""), metrics, layout)
