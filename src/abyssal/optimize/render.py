"""An SVG picture of a placement plan: the graph in layers, each box coloured by its device.

A layer is the longest path from the inputs; a graph deeper than :data:`ROWS` layers wraps into
several columns. Past :data:`MAX_BOXES` operators, operators are collapsed into one box per
module (at the deepest module level that fits), so a ResNet-50 stays readable. Hand-written XML:
no graphviz or matplotlib.

Example:
    >>> graph_svg(report, plan, Path("placement.svg"))  # doctest: +SKIP
    PosixPath('placement.svg')
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape

from abyssal.core.atomic import write_text_atomic
from abyssal.optimize.graph import GraphReport, OpStats, group_label
from abyssal.optimize.placement import HOST, PlacementPlan

MAX_BOXES = 150
"""Above this many operators, one box per module group."""

ROWS = 36
"""Layers per column before the picture wraps into another column."""

BOX_W, BOX_H, GAP_X, GAP_Y, MARGIN, HEADER = 196, 38, 14, 22, 20, 104
COLOURS = {"cpu": "#6baed6", "accelerator": "#74c476", "io": "#c8c8c8"}
"""Box fills: CPU, accelerator, and inputs/outputs or operators pinned to the CPU."""


@dataclass
class _Box:
    """One drawn box: an operator, or a module group of them.

    ``share`` is the fraction of its operators on the accelerator (the fill is split in that
    proportion); ``None`` draws it grey (inputs, outputs, pinned operators).
    """

    key: str
    title: str
    detail: str
    share: float | None
    tooltip: str
    inputs: list[str] = field(default_factory=list)
    layer: int = 0
    x: float = 0.0
    y: float = 0.0


def graph_svg(report: GraphReport, plan: PlacementPlan, path: Path) -> Path:
    """Write the placement picture of ``report`` under ``plan`` to ``path`` (atomically).

    Args:
        report: the measured graph.
        plan: its placement (from ``plan_placement`` or ``cpu_only_plan``).
        path: the ``.svg`` file to write.

    Returns:
        ``path``.

    Example:
        >>> graph_svg(report, cpu_only_plan(report), tmp / "g.svg")  # doctest: +SKIP
    """
    nodes = [o for o in report.ops if o.kind != "get_attr"]
    boxes = _op_boxes(nodes, plan) if len(report.operators()) <= MAX_BOXES else None
    if boxes is None:
        boxes = _group_boxes(nodes, plan)
    width, height = _layout(boxes)
    return write_text_atomic(path, _svg(boxes, plan, report, width, height))


def _op_boxes(nodes: list[OpStats], plan: PlacementPlan) -> list[_Box]:
    """One box per operator, input and output."""
    boxes = []
    for o in nodes:
        io = not o.is_op
        device = plan.assignment.get(o.name, HOST)
        pinned = o.name in plan.pinned
        time_ms = o.time_ms.get(device, 0.0)
        detail = o.kind if io else f"{o.op} · {time_ms:.3g} ms"
        tip = f"{o.name}: {o.op} in {group_label(o.group)} on {device}" + (
            "" if io else f", {o.flops / 1e6:.3g} MFLOP, {_times(o.time_ms)}"
        )
        share = None if io or pinned else float(device != HOST)
        boxes.append(_Box(o.name, o.name, detail, share, tip, list(o.inputs)))
    return _keep_known_inputs(boxes)


def _group_boxes(nodes: list[OpStats], plan: PlacementPlan) -> list[_Box]:
    """One box per module group, at the deepest module level that draws well: at most
    MAX_BOXES boxes and no cycle (a module called twice, such as a block's shared ReLU, would
    send edges back up). Operators no module owns keep a box each."""
    depth = max((len(o.group.split(".")) for o in nodes if o.group), default=1)
    while depth > 1 and not _draws_well(_owners(nodes, depth), nodes):
        depth -= 1
    owner = _owners(nodes, depth)
    members: dict[str, list[OpStats]] = {}
    for o in nodes:
        members.setdefault(owner[o.name], []).append(o)
    boxes = []
    for key, group in members.items():
        io = not group[0].is_op
        devices = [plan.assignment.get(o.name, HOST) for o in group]
        total = sum(o.time_ms.get(d, 0.0) for o, d in zip(group, devices, strict=True))
        accel = sum(1 for d in devices if d != HOST)
        ops = f"{len(group)} op{'s' if len(group) > 1 else ''}"
        detail = group[0].kind if io else f"{ops}, {accel} on accel · {total:.3g} ms"
        title = key if io else group_label(key)
        inputs = {owner[i] for o in group for i in o.inputs if i in owner} - {key}
        share = None if io else accel / len(group)
        boxes.append(_Box(key, title, detail, share, f"{title}: {detail}", sorted(inputs)))
    return _keep_known_inputs(boxes)


def _owners(nodes: list[OpStats], depth: int) -> dict[str, str]:
    """Node name -> its box: the module path cut to ``depth`` parts, else the node itself."""
    return {
        o.name: ".".join(o.group.split(".")[:depth]) if o.is_op and o.group else o.name
        for o in nodes
    }


def _draws_well(owner: dict[str, str], nodes: list[OpStats]) -> bool:
    """At most MAX_BOXES boxes whose edges form no cycle (Kahn's algorithm)."""
    boxes = set(owner.values())
    if len(boxes) > MAX_BOXES:
        return False
    edges = {(owner[i], owner[o.name]) for o in nodes for i in o.inputs if i in owner}
    edges = {(a, b) for a, b in edges if a != b}
    indegree = dict.fromkeys(boxes, 0)
    for _, b in edges:
        indegree[b] += 1
    ready = [k for k, d in indegree.items() if d == 0]
    seen = 0
    while ready:
        k = ready.pop()
        seen += 1
        for a, b in edges:
            if a == k:
                indegree[b] -= 1
                if indegree[b] == 0:
                    ready.append(b)
    return seen == len(boxes)


def _keep_known_inputs(boxes: list[_Box]) -> list[_Box]:
    """Drop edges from things not drawn (parameters)."""
    known = {b.key for b in boxes}
    for b in boxes:
        b.inputs = [i for i in b.inputs if i in known and i != b.key]
    return boxes


def _layout(boxes: list[_Box]) -> tuple[float, float]:
    """Layers by longest path (edges against first-appearance order ignored), then wrap."""
    order = {b.key: i for i, b in enumerate(boxes)}
    layer: dict[str, int] = {}
    for b in boxes:
        preds = [layer[i] for i in b.inputs if order[i] < order[b.key]]
        b.layer = layer[b.key] = 1 + max(preds) if preds else 0
    depth = max(layer.values(), default=0) + 1
    columns = math.ceil(depth / ROWS)
    rows = math.ceil(depth / columns)
    rows_of: dict[int, list[_Box]] = {}
    for b in boxes:
        rows_of.setdefault(b.layer, []).append(b)
    x0, width = float(MARGIN), 0.0
    for c in range(columns):
        layers = range(c * rows, min((c + 1) * rows, depth))
        span = max((len(rows_of.get(k, [])) for k in layers), default=1)
        col_w = span * (BOX_W + GAP_X)
        for k in layers:
            row = rows_of.get(k, [])
            left = x0 + (col_w - len(row) * (BOX_W + GAP_X)) / 2
            for j, b in enumerate(row):
                b.x, b.y = left + j * (BOX_W + GAP_X), HEADER + (k - c * rows) * (BOX_H + GAP_Y)
        x0 += col_w + 3 * GAP_X
        width = x0
    height = HEADER + rows * (BOX_H + GAP_Y) + MARGIN
    return max(width, 760.0), height


def _svg(boxes: list[_Box], plan: PlacementPlan, report: GraphReport, w: float, h: float) -> str:
    where = {b.key: b for b in boxes}
    title = f"Placement of the {report.method} graph, {len(report.operators())} operators"
    w = max(w, 2 * MARGIN + 7.2 * len(plan.summary()))
    parts = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w:.0f}" height="{h:.0f}" '
        f'viewBox="0 0 {w:.0f} {h:.0f}" font-family="sans-serif" font-size="11">',
        f'<rect width="{w:.0f}" height="{h:.0f}" fill="white"/>',
        f'<text x="{MARGIN}" y="24" font-size="14" font-weight="bold">{escape(title)}</text>',
        f'<text x="{MARGIN}" y="44" font-size="12">{escape(plan.summary())}</text>',
        *_legend(plan),
        '<g stroke="#888" stroke-opacity="0.6" fill="none">',
    ]
    for b in boxes:
        for i in b.inputs:
            a = where[i]
            parts.append(
                f'<line x1="{a.x + BOX_W / 2:.1f}" y1="{a.y + BOX_H:.1f}" '
                f'x2="{b.x + BOX_W / 2:.1f}" y2="{b.y:.1f}"/>'
            )
    parts.append("</g>")
    for b in boxes:
        parts += [
            f"<g><title>{escape(b.tooltip)}</title>",
            *_fill(b),
            f'<rect x="{b.x:.1f}" y="{b.y:.1f}" width="{BOX_W}" height="{BOX_H}" rx="4" '
            'fill="none" stroke="#333"/>',
            f'<text x="{b.x + 6:.1f}" y="{b.y + 15:.1f}" font-weight="bold">'
            f"{escape(_fit(b.title, 28))}</text>",
            f'<text x="{b.x + 6:.1f}" y="{b.y + 30:.1f}">{escape(_fit(b.detail, 33))}</text></g>',
        ]
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def _fill(b: _Box) -> list[str]:
    """The box's background: grey, or CPU colour with the accelerator's share over it."""
    at = f'x="{b.x:.1f}" y="{b.y:.1f}" height="{BOX_H}" rx="4"'
    if b.share is None:
        return [f'<rect {at} width="{BOX_W}" fill="{COLOURS["io"]}"/>']
    out = [f'<rect {at} width="{BOX_W}" fill="{COLOURS["cpu"]}"/>']
    if b.share > 0:
        out.append(f'<rect {at} width="{BOX_W * b.share:.1f}" fill="{COLOURS["accelerator"]}"/>')
    return out


def _legend(plan: PlacementPlan) -> list[str]:
    accel = plan.accelerator or "accelerator (none here)"
    entries = [("cpu", COLOURS["cpu"]), (accel, COLOURS["accelerator"])]
    entries.append(("inputs/outputs, pinned to cpu", COLOURS["io"]))
    out, x = [], float(MARGIN)
    for label, colour in entries:
        out.append(
            f'<rect x="{x:.0f}" y="58" width="14" height="14" fill="{colour}" stroke="#333"/>'
            f'<text x="{x + 20:.0f}" y="70">{escape(label)}</text>'
        )
        x += 30 + 7 * len(label)
    out.append(f'<text x="{MARGIN}" y="90" fill="#555">{_predicted_line(plan)}</text>')
    return out


def _predicted_line(plan: PlacementPlan) -> str:
    """The predicted times, escaped for text content."""
    p = plan.predicted_ms
    parts = [f"{k}: {v:.3g} ms" for k, v in p.items() if not math.isnan(v)]
    return escape("predicted " + ", ".join(parts))


def _fit(text: str, size: int) -> str:
    return text if len(text) <= size else text[: size - 1] + "…"


def _times(times: dict[str, float]) -> str:
    return ", ".join(f"{d} {t:.3g} ms" for d, t in times.items())
