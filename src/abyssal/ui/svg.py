"""Hand-drawn SVG for the dashboard: the lineage graph (each node a link to its version's page),
metric curves over a run's rows, and leaderboard bars with confidence-interval whiskers and
reference lines. Each is one ``<svg>`` element with escaped text and no JavaScript, in the style
of :mod:`abyssal.pipeline.charts` (whose helpers and colours it reuses).

Example:
    >>> svg_curve("val_auroc", [(1, 0.9), (2, 0.95)], x_label="step").startswith("<svg")
    True
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from abyssal.pipeline.charts import SERIES_COLOURS, esc, finite

FOCUS_COLOUR, NODE_COLOUR, EXTERNAL_COLOUR = "#3b6fb6", "#eef3fa", "#f3f3f3"
ANCHOR_COLOUR = "#c2478a"


def _open(width: float, height: float, title: str, testid: str) -> list[str]:
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
        f'viewBox="0 0 {width:.0f} {height:.0f}" font-family="sans-serif" font-size="12" '
        f'role="img" aria-label="{esc(title)}" data-testid="{esc(testid)}">',
        f'<rect width="{width:.0f}" height="{height:.0f}" fill="white"/>',
        f'<text x="10" y="18" font-size="13" font-weight="bold">{esc(title)}</text>',
    ]


def _fit(text: str, size: int) -> str:
    return text if len(text) <= size else text[: max(1, size - 1)] + "…"


def nice_range(low: float, high: float, *, zero: bool = False) -> tuple[float, float]:
    """An axis from ``low`` to ``high`` with a little room, on round numbers; from 0 when
    ``zero`` (or when 0 is close anyway).

    Example:
        >>> nice_range(0.91, 0.99)
        (0.9, 1.0)
    """
    if not math.isfinite(low) or not math.isfinite(high):
        return 0.0, 1.0
    if high <= low == 0:
        return 0.0, 1.0
    if high <= low:
        pad = abs(high) * 0.1
        low, high = low - pad, high + pad
    span = high - low
    if zero or (low >= 0 and low < 0.5 * span):
        low = min(low, 0.0)
    room_low = low if low == 0 else low - 0.05 * span
    room_high = high + 0.05 * span
    if high <= 1.0 < room_high:  # a share or a score: its axis ends at 1
        room_high = 1.0
    step = 10 ** math.floor(math.log10((room_high - room_low) / 2))
    bottom = round(math.floor(room_low / step) * step, 12)
    return bottom, round(math.ceil(room_high / step) * step, 12)


# -- lineage ----------------------------------------------------------------------------------


def svg_lineage(
    nodes: Mapping[str, Mapping[str, Any]], edges: Sequence[Sequence[str]], focus: str
) -> str:
    """The lineage graph: one column per generation (oldest on the left), an arrow from each
    version to the ones made from it (solid: lineage parent, dashed: base of an adapter or
    optimized variant), ``focus`` filled, every stored version a link to its page.

    Args:
        nodes: ref -> ``{"label", "href", "depth", "external"}`` (:class:`~abyssal.ui.data.
            LineageGraph`).
        edges: ``(parent, child, kind)``.
        focus: the version the page is about.

    Returns:
        An ``<svg>`` element.

    Example:
        >>> nodes = {"t:1": {"label": "t:1", "href": "/models/t/1", "depth": 0},
        ...          "t:2": {"label": "t:2", "href": "/models/t/2", "depth": 1}}
        >>> 'href="/models/t/1"' in svg_lineage(nodes, [("t:1", "t:2", "parent")], "t:2")
        True
    """
    box_w, box_h, gap_x, gap_y, top = 190, 34, 70, 18, 34
    columns: dict[int, list[str]] = {}
    for ref, node in nodes.items():
        columns.setdefault(int(node.get("depth", 0)), []).append(ref)
    rows = max((len(c) for c in columns.values()), default=1)
    width = max(360, 20 + len(columns) * (box_w + gap_x) - gap_x + 20)
    height = top + rows * (box_h + gap_y) + 10
    where: dict[str, tuple[float, float]] = {}
    for depth, refs in sorted(columns.items()):
        for k, ref in enumerate(refs):
            where[ref] = (20 + depth * (box_w + gap_x), top + k * (box_h + gap_y))
    parts = _open(width, height, "Lineage", "lineage-graph")
    parts.append(
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" '
        'markerWidth="7" markerHeight="7" orient="auto-start-reverse">'
        '<path d="M0,0 L10,5 L0,10 z" fill="#555"/></marker></defs>'
    )
    for parent, child, *kind in edges:
        if parent not in where or child not in where:
            continue
        (x1, y1), (x2, y2) = where[parent], where[child]
        dash = ' stroke-dasharray="5 3"' if kind and kind[0] == "base" else ""
        parts.append(
            f'<path d="M{x1 + box_w:.0f},{y1 + box_h / 2:.0f} C{x1 + box_w + gap_x / 2:.0f},'
            f"{y1 + box_h / 2:.0f} {x2 - gap_x / 2:.0f},{y2 + box_h / 2:.0f} {x2:.0f},"
            f'{y2 + box_h / 2:.0f}" fill="none" stroke="#555"{dash} marker-end="url(#arrow)">'
            f"<title>{esc(child)} from {esc(parent)}"
            f"{' (' + esc(kind[0]) + ')' if kind else ''}</title></path>"
        )
    for ref, node in nodes.items():
        parts.append(_node(ref, node, where[ref], box_w, box_h, ref == focus))
    return "\n".join([*parts, "</svg>"])


def _node(
    ref: str, node: Mapping[str, Any], at: tuple[float, float], w: int, h: int, focus: bool
) -> str:
    x, y = at
    fill = FOCUS_COLOUR if focus else EXTERNAL_COLOUR if node.get("external") else NODE_COLOUR
    ink = "white" if focus else "#222"
    label = str(node.get("label") or ref)
    box = (
        f'<rect x="{x:.0f}" y="{y:.0f}" width="{w}" height="{h}" rx="6" fill="{fill}" '
        f'stroke="{FOCUS_COLOUR}"/><text x="{x + w / 2:.0f}" y="{y + h / 2 + 4:.0f}" '
        f'text-anchor="middle" fill="{ink}"><title>{esc(label)}</title>'
        f"{esc(_fit(label, 26))}</text>"
    )
    href = node.get("href")
    if not href:
        return f'<g data-ref="{esc(ref)}">{box}</g>'
    return f'<a href="{esc(href)}" data-testid="lineage-node" data-ref="{esc(ref)}">{box}</a>'


# -- metric curves ----------------------------------------------------------------------------


def svg_curve(
    metric: str,
    points: Sequence[tuple[float, float]],
    *,
    x_label: str = "step",
    width: int = 440,
    height: int = 220,
) -> str:
    """One metric over a run's rows: a line with a dot per row, the first, last and best
    values marked.

    Args:
        metric: its name (the title).
        points: ``(x, value)`` in order; values that are not finite are left out.
        x_label: what ``x`` counts (``step`` or ``epoch``).
        width: pixels.
        height: pixels.

    Returns:
        An ``<svg>`` element.

    Example:
        >>> svg = svg_curve("train_loss", [(0, 0.7), (1, 0.5), (2, 0.4)], x_label="epoch")
        >>> svg.count("<circle"), "0.4" in svg
        (3, True)
    """
    pts = [
        (float(x), v) for x, y in points if (v := finite(y)) is not None and finite(x) is not None
    ]
    parts = _open(width, height, metric, f"curve-{metric}")
    left, right, top, bottom = 52, 14, 30, 34
    if not pts:
        parts.append(f'<text x="{left}" y="{top + 30}">no value recorded</text>')
        return "\n".join([*parts, "</svg>"])
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    y0, y1 = nice_range(min(ys), max(ys))
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    plot_w, plot_h = width - left - right, height - top - bottom

    def px(x: float) -> float:
        return left + plot_w * (x - x0) / (x1 - x0)

    def py(y: float) -> float:
        return top + plot_h * (1 - (y - y0) / ((y1 - y0) or 1.0))

    for k in range(5):
        value = y0 + (y1 - y0) * k / 4
        parts.append(
            f'<line x1="{left}" y1="{py(value):.1f}" x2="{width - right}" '
            f'y2="{py(value):.1f}" stroke="#eee"/><text x="{left - 5}" '
            f'y="{py(value) + 4:.1f}" text-anchor="end" font-size="10">{value:.3g}</text>'
        )
    for value in (x0, x1):
        parts.append(
            f'<text x="{px(value):.1f}" y="{height - bottom + 14}" text-anchor="middle" '
            f'font-size="10">{value:g}</text>'
        )
    parts.append(
        f'<text x="{left + plot_w / 2:.0f}" y="{height - 6}" text-anchor="middle" '
        f'font-size="10" fill="#666">{esc(x_label)}</text>'
    )
    line = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in pts)
    parts.append(
        f'<polyline points="{line}" fill="none" stroke="{SERIES_COLOURS[0]}" stroke-width="2"/>'
    )
    for x, y in pts:
        parts.append(
            f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="2.5" '
            f'fill="{SERIES_COLOURS[0]}"><title>{esc(x_label)} {x:g}: {y:.5g}</title>'
            "</circle>"
        )
    last_x, last_y = pts[-1]
    parts.append(
        f'<text x="{min(px(last_x), width - right - 4):.1f}" y="{py(last_y) - 6:.1f}" '
        f'text-anchor="end" font-size="11" font-weight="bold">{last_y:.4g}</text>'
    )
    return "\n".join([*parts, "</svg>"])


# -- leaderboards -----------------------------------------------------------------------------


def svg_interval_bars(
    title: str,
    rows: Sequence[tuple[str, float | None, float | None, float | None]],
    *,
    anchors: Sequence[tuple[str, float]] = (),
    width: int = 900,
    testid: str = "leaderboard-chart",
) -> str:
    """Horizontal bars, one per model, with whiskers from ``low`` to ``high`` (the confidence
    interval) and dashed reference lines for published anchors. When every value is far from 0
    the axis starts at a round number below them, and the chart says so.

    Args:
        title: the chart's title (task and metric).
        rows: ``(label, value, low, high)`` in rank order; a missing value draws ``-``.
        anchors: ``(label, value)`` reference lines.
        width: pixels.
        testid: the ``data-testid`` of the ``<svg>``.

    Returns:
        An ``<svg>`` element.

    Example:
        >>> svg = svg_interval_bars("auroc", [("t:3", 0.99, 0.98, 1.0)], anchors=[("paper", 0.97)])
        >>> svg.count('class="whisker"'), "paper" in svg
        (1, True)
    """
    left, right, top, row_h = 170, 60, 44, 28
    height = top + row_h * max(1, len(rows)) + 36 + 14 * len(anchors)
    numbers = [v for _, *vals in rows for v in vals if finite(v) is not None]
    numbers += [a for _, a in anchors if finite(a) is not None]
    lo, hi = nice_range(min(numbers, default=0.0), max(numbers, default=1.0))
    plot_w = width - left - right

    def px(v: float) -> float:
        return left + plot_w * (min(max(v, lo), hi) - lo) / ((hi - lo) or 1.0)

    parts = _open(width, height, title, testid)
    base = top + row_h * max(1, len(rows))
    for k in range(5):
        v = lo + (hi - lo) * k / 4
        parts.append(
            f'<line x1="{px(v):.1f}" y1="{top - 6}" x2="{px(v):.1f}" y2="{base}" '
            f'stroke="#eee"/><text x="{px(v):.1f}" y="{base + 14}" text-anchor="middle" '
            f'font-size="10">{v:.3g}</text>'
        )
    if lo != 0:
        parts.append(
            f'<text x="{left}" y="{base + 28}" font-size="10" fill="#666">'
            f"axis from {lo:g}, not 0</text>"
        )
    for i, (label, value, low, high) in enumerate(rows):
        y = top + i * row_h
        parts.append(
            f'<text x="{left - 8}" y="{y + 17}" text-anchor="end"><title>{esc(label)}'
            f"</title>{esc(_fit(label, 24))}</text>"
        )
        parts += _interval_bar(
            y,
            row_h,
            px,
            lo,
            finite(value),
            finite(low),
            finite(high),
            SERIES_COLOURS[0] if i else "#2e7d32",
            label,
        )
    for k, (label, value) in enumerate(anchors):
        v = finite(value)
        if v is None:
            continue
        parts.append(
            f'<line class="anchor" x1="{px(v):.1f}" y1="{top - 8}" x2="{px(v):.1f}" '
            f'y2="{base}" stroke="{ANCHOR_COLOUR}" stroke-dasharray="5 3" '
            f'stroke-width="1.5"><title>{esc(label)}: {v:.4g}</title></line>'
            f'<text x="{px(v):.1f}" y="{base + 42 + 14 * k}" font-size="10" '
            f'fill="{ANCHOR_COLOUR}" text-anchor="middle">{esc(_fit(label, 40))} '
            f"({v:.4g})</text>"
        )
    return "\n".join([*parts, "</svg>"])


def _interval_bar(
    y: float,
    row_h: float,
    px: Any,
    lo: float,
    value: float | None,
    low: float | None,
    high: float | None,
    fill: str,
    label: str,
) -> list[str]:
    if value is None:
        return [f'<text x="{px(lo) + 4:.1f}" y="{y + 17}">-</text>']
    x0, x1 = px(lo), px(value)
    out = [
        f'<rect class="bar" x="{x0:.1f}" y="{y + 5}" width="{max(x1 - x0, 1):.1f}" '
        f'height="{row_h - 10}" fill="{fill}" opacity="0.85"><title>{esc(label)}: '
        f"{value:.4g}</title></rect>"
    ]
    text_x = x1
    if low is not None and high is not None:
        a, b, mid = px(low), px(high), y + row_h / 2
        out.append(
            f'<g class="whisker" stroke="#222" stroke-width="1.5"><title>interval '
            f"[{low:.4g}, {high:.4g}]</title>"
            f'<line x1="{a:.1f}" y1="{mid:.1f}" x2="{b:.1f}" y2="{mid:.1f}"/>'
            f'<line x1="{a:.1f}" y1="{mid - 6:.1f}" x2="{a:.1f}" y2="{mid + 6:.1f}"/>'
            f'<line x1="{b:.1f}" y1="{mid - 6:.1f}" x2="{b:.1f}" y2="{mid + 6:.1f}"/></g>'
        )
        text_x = max(text_x, b)
    out.append(f'<text x="{text_x + 6:.1f}" y="{y + 17}" font-size="11">{value:.4g}</text>')
    return out
