"""Plain-text rendering for the CLI: aligned tables and metric summaries."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """An aligned text table.

    Example:
        >>> print(table(["a", "b"], [[1, "x"]]))
        a  b
        -  -
        1  x
    """
    cells = [[fmt(c) for c in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    line = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()  # noqa: E731
    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in cells)])


def fmt(value: Any) -> str:
    """A number to 4 significant decimals, anything else as ``str``."""
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4f}"
    return str(value)


def metric_rows(metrics: dict[str, Any], prefixes: Sequence[str], splits=("val", "test")) -> list:
    """Rows ``[model, split, auroc, auprc, macro_f1, recall_at_k]`` for each prefix and split."""
    names = ("auroc", "auprc", "macro_f1", "recall_at_k")
    rows = []
    for prefix in prefixes:
        for split in splits:
            if f"{prefix}{split}_auprc" in metrics:
                label = prefix.rstrip("_") or "model"
                rows.append([label, split, *(metrics.get(f"{prefix}{split}_{n}") for n in names)])
    return rows


METRIC_HEADERS = ["model", "split", "AUROC", "AUPRC", "macro-F1", "Recall@K"]
