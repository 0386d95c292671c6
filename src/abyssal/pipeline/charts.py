"""Hand-drawn SVG charts for pipeline reports: PSI per feature, grouped bars (metrics, latency)
and the gate's rules, each a standalone ``<svg>`` element (escaped text, no JavaScript, no
matplotlib).

Example:
    >>> svg_drift_chart([{"feature": "amount", "psi": 0.4, "drifted": True}]).startswith("<svg")
    True
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any
from xml.sax.saxutils import escape

from abyssal.core.errors import AbyssalError

PSI_MODERATE = 0.1
"""PSI from which a change is moderate; as ``abyssal.data.drift.PSI_MODERATE`` (not imported
from there: that module pulls in pandas)."""
PSI_MAJOR = 0.25
"""PSI from which a feature drifted by default; as ``abyssal.data.drift.PSI_MAJOR``."""

SERIES_COLOURS = ("#3b6fb6", "#e08a2c", "#6a9f3a", "#8c6bb1", "#c2478a", "#4aa3a3")
PRODUCTION_COLOUR = "#9e9e9e"
PASS_COLOUR, FAIL_COLOUR = "#4c9a52", "#d64545"
DRIFT_COLOURS = {"drifted": "#d64545", "moderate": "#e0a030", "none": "#7a9cc6"}
CHART_WIDTH = 900
"""Every chart's width in pixels (the page is about 1,000 wide)."""


def finite(value: Any) -> float | None:
    """``value`` as a float if it is a finite number, else ``None``."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def num(value: Any, digits: int = 4) -> str:
    """A number for people (``-`` when missing or not finite)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}" if abs(value) >= 10_000 else str(value)
    number = finite(value)
    return "-" if number is None else f"{number:.{digits}g}"


def esc(value: Any) -> str:
    """Text from a record, escaped for HTML and SVG text and attributes (``-`` for None)."""
    return "-" if value is None else escape(str(value), {'"': "&quot;", "'": "&#x27;"})


def _fit(text: str, size: int) -> str:
    return text if len(text) <= size else text[: max(1, size - 1)] + "…"


def _svg_open(width: float, height: float, title: str) -> list[str]:
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
        f'viewBox="0 0 {width:.0f} {height:.0f}" font-family="sans-serif" font-size="12">',
        f'<rect width="{width:.0f}" height="{height:.0f}" fill="white"/>',
        f'<text x="10" y="20" font-size="14" font-weight="bold">{esc(title)}</text>',
    ]


def _legend(entries: Sequence[tuple[str, str]], x: float, y: float) -> list[str]:
    out = []
    for label, colour in entries:
        out.append(
            f'<rect x="{x:.0f}" y="{y - 10:.0f}" width="12" height="12" fill="{colour}"/>'
            f'<text x="{x + 16:.0f}" y="{y:.0f}">{esc(label)}</text>'
        )
        x += 30 + 7 * len(label)
    return out


def svg_drift_chart(
    features: Sequence[Mapping[str, Any]],
    psi_threshold: float = PSI_MAJOR,
    *,
    moderate: float = PSI_MODERATE,
) -> str:
    """A horizontal bar chart of the PSI of each feature, with dashed lines at ``moderate`` and
    ``psi_threshold``; drifted features red, moderate ones amber.

    Args:
        features: ``DriftReport.to_dict()["features"]``: ``feature, psi, drifted`` each.
        psi_threshold: the PSI from which a feature drifted.
        moderate: the PSI from which a change is worth a look.

    Returns:
        An ``<svg>`` element.

    Example:
        >>> svg = svg_drift_chart([{"feature": "amount", "psi": 0.4, "drifted": True}])
        >>> svg.startswith("<svg") and "amount" in svg and 'stroke-dasharray' in svg
        True
    """
    rows = [(str(f.get("feature", "?")), finite(f.get("psi")), bool(f.get("drifted")))
            for f in features]  # fmt: skip
    left, right, top, row_h = 180, 70, 56, 22
    height = top + row_h * max(1, len(rows)) + 16
    top_psi = max([p for _, p, _ in rows if p is not None] + [1.4 * psi_threshold, 1.4 * moderate])

    def x(value: float) -> float:
        return left + (CHART_WIDTH - left - right) * max(value, 0.0) / top_psi

    parts = _svg_open(CHART_WIDTH, height, "Population stability index (PSI) per feature")
    parts += _legend([(k, c) for k, c in DRIFT_COLOURS.items()], 10, 42)
    for i, (name, psi, drifted) in enumerate(rows):
        y = top + i * row_h
        parts.append(f'<text x="{left - 8}" y="{y + 14}" text-anchor="end"><title>{esc(name)}'
                     f"</title>{esc(_fit(name, 24))}</text>")  # fmt: skip
        if psi is None:
            parts.append(f'<text x="{left + 4}" y="{y + 14}">-</text>')
            continue
        level = "drifted" if drifted else "moderate" if psi >= moderate else "none"
        parts.append(
            f'<rect x="{left}" y="{y + 3}" width="{x(psi) - left:.1f}" height="{row_h - 6}" '
            f'fill="{DRIFT_COLOURS[level]}"><title>{esc(name)}: PSI {psi:.4g}</title></rect>'
            f'<text x="{x(psi) + 4:.1f}" y="{y + 14}">{psi:.3g}</text>'
        )
    if not rows:
        parts.append(f'<text x="{left}" y="{top + 14}">no feature was compared</text>')
    for value in (moderate, psi_threshold):
        parts.append(
            f'<line x1="{x(value):.1f}" y1="{top - 4}" x2="{x(value):.1f}" y2="{height - 12}" '
            'stroke="#444" stroke-dasharray="4 3"/>'
            f'<text x="{x(value):.1f}" y="{height - 2}" text-anchor="middle" font-size="10">'
            f"{value:g}</text>"
        )
    return "\n".join([*parts, "</svg>"])


def svg_grouped_bars(
    groups: Sequence[str],
    series: Sequence[str],
    values: Sequence[Sequence[float | None]],
    *,
    title: str = "",
    colours: Sequence[str] | None = None,
) -> str:
    """A vertical grouped bar chart: one group per entry of ``groups``, one bar per series.

    Args:
        groups: the groups' names (metrics, attempts).
        series: the bars' names in each group (versions, p50/p99), shown in the legend.
        values: ``values[g][s]``; ``None`` or NaN draws no bar and shows ``-``.
        title: the chart's title.
        colours: one per series (default: :data:`SERIES_COLOURS`).

    Returns:
        An ``<svg>`` element.

    Raises:
        AbyssalError: ``values`` is not ``len(groups)`` rows of ``len(series)`` values.

    Example:
        >>> svg = svg_grouped_bars(["test_auprc"], ["fraud:2", "fraud:1"], [[0.62, None]])
        >>> svg.count("<rect"), ">-</text>" in svg
        (4, True)
    """
    shape = [len(row) for row in values]
    if len(values) != len(groups) or any(n != len(series) for n in shape):
        raise AbyssalError(
            f"svg_grouped_bars: values must be {len(groups)} rows of {len(series)} (groups x "
            f"series), got rows of {shape}"
        )
    colours = list(colours or SERIES_COLOURS)
    left, right, top, bottom, height = 60, 20, 52, 36, 280
    plot_w, plot_h = CHART_WIDTH - left - right, height - top - bottom
    numbers = [finite(v) for row in values for v in row]
    top_value = _nice_top(max([v for v in numbers if v is not None], default=0.0))
    base = height - bottom
    parts = _svg_open(CHART_WIDTH, height, title)
    parts += _legend([(s, colours[i % len(colours)]) for i, s in enumerate(series)], 10, 40)
    for k in range(5):
        y = base - plot_h * k / 4
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{CHART_WIDTH - right}" y2="{y:.1f}" '
                     f'stroke="#e3e3e3"/><text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" '
                     f'font-size="10">{top_value * k / 4:.3g}</text>')  # fmt: skip
    group_w = plot_w / max(1, len(groups))
    bar_w = min(40.0, 0.8 * group_w / max(1, len(series)))
    for g, name in enumerate(groups):
        x0 = left + g * group_w + (group_w - bar_w * len(series)) / 2
        parts.append(f'<text x="{left + (g + 0.5) * group_w:.1f}" y="{base + 16}" '
                     f'text-anchor="middle"><title>{esc(name)}</title>'
                     f"{esc(_fit(str(name), int(group_w / 7)))}</text>")  # fmt: skip
        for s, value in enumerate(values[g]):
            parts += _bar(x0 + s * bar_w, bar_w, base, plot_h, top_value, finite(value),
                          colours[s % len(colours)], f"{name}, {series[s]}")  # fmt: skip
    parts.append(f'<line x1="{left}" y1="{base}" x2="{CHART_WIDTH - right}" y2="{base}" '
                 'stroke="#444"/>')  # fmt: skip
    return "\n".join([*parts, "</svg>"])


def _nice_top(value: float) -> float:
    """The axis top for a largest value: 1, 2, 2.5 or 5 times a power of ten, above it."""
    if value <= 0:
        return 1.0
    target = 1.08 * value  # room for the value written above the bar
    power = 10 ** math.floor(math.log10(target))
    return next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= target)


def _bar(
    x: float, w: float, base: float, plot_h: float, top: float, v: float | None, fill: str, tip: str
) -> list[str]:
    """One bar of :func:`svg_grouped_bars`, with its value above it (``-`` without a value)."""
    if v is None:
        return [f'<text x="{x + w / 2:.1f}" y="{base - 4}" text-anchor="middle">-</text>']
    h = plot_h * max(v, 0.0) / top
    return [
        f'<rect x="{x + 1:.1f}" y="{base - h:.1f}" width="{w - 2:.1f}" height="{h:.1f}" '
        f'fill="{fill}"><title>{esc(tip)}: {v:.4g}</title></rect>',
        f'<text x="{x + w / 2:.1f}" y="{base - h - 4:.1f}" text-anchor="middle" font-size="10">'
        f"{v:.3g}</text>",
    ]


def svg_gate_chart(checks: Sequence[Mapping[str, Any]], *, title: str = "") -> str:
    """The gate's rules, one row each: the candidate's value (green if the rule passed, red if
    it failed) over production's (grey), both on the row's own scale, and why a rule failed.

    Args:
        checks: the gate's rule checks (``metric, value, passed, why, production``).
        title: the chart's title (default: ``Gate rules``).

    Returns:
        An ``<svg>`` element.

    Example:
        >>> svg = svg_gate_chart([{"metric": "p99_ms", "value": 9.9, "passed": True,
        ...                        "production": 17.5}])
        >>> "PASS" in svg and "17.5" in svg
        True
    """
    left, bars_w, top, row_h = 180, 330, 56, 40
    height = top + row_h * max(1, len(checks)) + 8
    parts = _svg_open(CHART_WIDTH, height, title or "Gate rules")
    entries = [("candidate passed", PASS_COLOUR), ("candidate failed", FAIL_COLOUR)]
    parts += _legend([*entries, ("production", PRODUCTION_COLOUR)], 10, 42)
    for i, check in enumerate(checks):
        y = top + i * row_h
        value, before = finite(check.get("value")), finite(check.get("production"))
        scale = max(abs(value or 0.0), abs(before or 0.0)) or 1.0
        passed = bool(check.get("passed"))
        metric = str(check.get("metric", "?"))
        parts.append(f'<text x="{left - 8}" y="{y + 20}" text-anchor="end"><title>{esc(metric)}'
                     f"</title>{esc(_fit(metric, 24))}</text>")  # fmt: skip
        for v, dy, h, fill in ((value, 4, 14, PASS_COLOUR if passed else FAIL_COLOUR),
                               (before, 21, 10, PRODUCTION_COLOUR)):  # fmt: skip
            w = bars_w * max(v or 0.0, 0.0) / scale
            parts.append(f'<rect x="{left}" y="{y + dy}" width="{w:.1f}" height="{h}" '
                         f'fill="{fill}"/><text x="{left + w + 4:.1f}" y="{y + dy + h - 2}" '
                         f'font-size="10">{num(v)}</text>')  # fmt: skip
        why = str(check.get("why") or "")
        parts.append(
            f'<text x="{left + bars_w + 60}" y="{y + 20}" font-weight="bold" '
            f'fill="{PASS_COLOUR if passed else FAIL_COLOUR}">{"PASS" if passed else "FAIL"}</text>'
            f'<text x="{left + bars_w + 100}" y="{y + 20}" font-size="11"><title>{esc(why)}'
            f"</title>{esc(_fit(why, 52))}</text>"
        )
    if not checks:
        parts.append(f'<text x="{left}" y="{top + 14}">no gate rule was checked</text>')
    return "\n".join([*parts, "</svg>"])


def svg_interval_chart(
    rows: Sequence[tuple[str, float | None, float | None, float | None]],
    *,
    title: str = "",
    axis: str = "",
    references: Sequence[tuple[str, float]] = (),
    colours: Sequence[str] | None = None,
) -> str:
    """Estimates with their confidence intervals, one row each (a dot and a whisker), and
    reference values as dashed vertical lines (published results, a baseline).

    Args:
        rows: ``(label, value, low, high)``; a missing value draws ``-``, a missing bound no
            whisker.
        title: the chart's title.
        axis: what the horizontal axis measures.
        references: ``(label, value)`` lines across every row.
        colours: one per row, cycled (default: :data:`SERIES_COLOURS`).

    Example:
        >>> svg = svg_interval_chart([("a", 0.9, 0.85, 0.95), ("b", None, None, None)],
        ...                          references=[("paper", 0.93)])
        >>> svg.count("<circle"), svg.count("stroke-dasharray")
        (1, 1)
    """
    colours = list(colours or SERIES_COLOURS)
    label_w = min(320, 20 + 7 * max([len(str(r[0])) for r in rows] + [4]))
    left, right, top, row_h = label_w, 30, 44 + (16 if references else 0), 26
    height = top + row_h * max(1, len(rows)) + 40
    numbers = [finite(v) for r in rows for v in r[1:]] + [finite(v) for _, v in references]
    known = [v for v in numbers if v is not None]
    lo, hi = (min(known), max(known)) if known else (0.0, 1.0)
    pad = max(1e-9, (hi - lo) * 0.08 or abs(hi) * 0.05 or 0.05)
    lo, hi = lo - pad, hi + pad
    plot_w = CHART_WIDTH - left - right

    def x_of(v: float) -> float:
        return left + plot_w * (v - lo) / (hi - lo)

    parts = _svg_open(CHART_WIDTH, height, title)
    base = top + row_h * max(1, len(rows))
    for k in range(6):
        v = lo + (hi - lo) * k / 5
        parts.append(f'<line x1="{x_of(v):.1f}" y1="{top - 6}" x2="{x_of(v):.1f}" y2="{base}" '
                     f'stroke="#e3e3e3"/><text x="{x_of(v):.1f}" y="{base + 14}" '
                     f'text-anchor="middle" font-size="10">{v:.3g}</text>')  # fmt: skip
    if axis:
        parts.append(f'<text x="{left + plot_w / 2:.0f}" y="{base + 30}" text-anchor="middle">'
                     f"{esc(axis)}</text>")  # fmt: skip
    for k, (label, value) in enumerate(references):
        v = finite(value)
        if v is None:
            continue
        parts.append(f'<line x1="{x_of(v):.1f}" y1="{top - 8}" x2="{x_of(v):.1f}" y2="{base}" '
                     f'stroke="#777" stroke-dasharray="4 3"><title>{esc(label)}: {v:.4g}</title>'
                     f'</line><text x="{x_of(v):.1f}" y="{top - 12 - 12 * (k % 2)}" '
                     f'text-anchor="middle" font-size="10" fill="#555">'
                     f"{esc(_fit(str(label), 40))}</text>")  # fmt: skip
    for k, (label, value, low, high) in enumerate(rows):
        y = top + row_h * k + row_h / 2
        colour = colours[k % len(colours)]
        shown = esc(_fit(str(label), int(label_w / 7)))
        parts.append(f'<text x="{left - 8}" y="{y + 4:.1f}" text-anchor="end"><title>'
                     f"{esc(label)}</title>{shown}</text>")  # fmt: skip
        v, a, b = finite(value), finite(low), finite(high)
        if v is None:
            parts.append(f'<text x="{left + 6}" y="{y + 4:.1f}">-</text>')
            continue
        if a is not None and b is not None:
            parts.append(f'<line x1="{x_of(a):.1f}" y1="{y:.1f}" x2="{x_of(b):.1f}" '
                         f'y2="{y:.1f}" stroke="{colour}" stroke-width="2"/>'
                         f'<line x1="{x_of(a):.1f}" y1="{y - 5:.1f}" x2="{x_of(a):.1f}" '
                         f'y2="{y + 5:.1f}" stroke="{colour}"/><line x1="{x_of(b):.1f}" '
                         f'y1="{y - 5:.1f}" x2="{x_of(b):.1f}" y2="{y + 5:.1f}" '
                         f'stroke="{colour}"/>')  # fmt: skip
        interval = f" [{a:.4g}, {b:.4g}]" if a is not None and b is not None else ""
        parts.append(f'<circle cx="{x_of(v):.1f}" cy="{y:.1f}" r="4.5" fill="{colour}">'
                     f"<title>{esc(label)}: {v:.4g}{interval}</title></circle>"
                     f'<text x="{x_of(v):.1f}" y="{y - 7:.1f}" text-anchor="middle" '
                     f'font-size="10">{v:.3g}</text>')  # fmt: skip
    return "\n".join([*parts, "</svg>"])
