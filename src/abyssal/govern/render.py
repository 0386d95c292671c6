"""The audit as a person reads it: one self-contained HTML page, and a PDF whose pages are also
written as PNG images (US Letter at 150 dpi: 1275 x 1650 pixels).

Both show the same sections in the same order: the verdict and each check, the model (data,
lineage, training), its intended use, the test metrics with their intervals, the fairness table
per group with the gaps and the mitigation, the explanations (global importance as bars, the top
attributions of each explained prediction, the solution's own explanations and images), and
privacy (PII found in the training data, masking, the DP guarantee), then one section per
check a plugin added (``card["checks"]``, shown generically: values as lines, lists of records as
tables, the PNGs named in its ``images``). The PDF is drawn with
matplotlib (no browser needed), so the tests and CI can render and read it.

Example:
    >>> write_pdf(result, Path("audit.pdf"), pages=Path("pages"))  # doctest: +SKIP
    [PosixPath('audit.pdf'), PosixPath('pages/page-1.png'), PosixPath('pages/page-2.png')]
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from abyssal.core.atomic import atomic_path, write_text_atomic

PAGE_INCHES = (8.5, 11.0)
DPI = 150
MARGIN = 0.06
"""Page margin as a share of the page."""
PASS, FAIL, MUTED = "#2e7d32", "#c62828", "#666666"


def _num(value: Any, digits: int = 4) -> str:
    if isinstance(value, bool) or value is None:
        return "-" if value is None else str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, int | float):
        return "-" if not math.isfinite(value) else f"{value:.{digits}g}"
    return str(value)


def _setting(value: Any) -> Any:
    """A training setting for people: a switched-off section (``enabled: false``) is "off"."""
    if isinstance(value, Mapping) and value.get("enabled") is False:
        return "off"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {v}" for k, v in value.items() if v is not None) + "}"
    return value


def _rows(card: Mapping[str, Any]) -> dict[str, Any]:
    """Every section as (title, lines, tables, charts, images), shared by HTML and PDF."""
    model = card.get("model", {})
    out: dict[str, Any] = {}
    out["model"] = [
        ("solution", model.get("solution")),
        ("registered", model.get("created")),
        ("trained by run", model.get("run")),
        ("aliases", ", ".join(model.get("aliases") or []) or "-"),
        ("data", model.get("data")),
        ("data fingerprint", model.get("data_fingerprint")),
        ("lineage", " <- ".join(model.get("lineage") or [])),
        (
            "training",
            ", ".join(f"{k}={_setting(v)}" for k, v in (model.get("training") or {}).items()),
        ),
    ]
    out["metrics"] = [
        [
            m["metric"],
            _num(m["value"]),
            f"[{_num(m['low'], 3)}, {_num(m['high'], 3)}]" if m.get("low") is not None else "-",
        ]
        for m in card.get("metrics", [])
    ]
    return out


def _group_table(report: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The per-group rows of a fairness report, whatever its exact layout."""
    groups = report.get("groups") or report.get("by_group") or []
    if isinstance(groups, Mapping):
        groups = [{"group": k, **v} for k, v in groups.items()]
    if not groups:
        return [], []
    keys = [k for k in groups[0] if k != "group"]
    headers = ["group", *keys]
    rows = []
    for g in groups:
        row = [str(g.get("group"))]
        for k in keys:
            value = g.get(k)
            if isinstance(value, Mapping):
                low, high = value.get("low"), value.get("high")
                shown = _num(value.get("value", value.get("estimate")), 3)
                value = shown + (f" [{_num(low, 2)}, {_num(high, 2)}]" if low is not None else "")
            else:
                value = _num(value, 3)
            row.append(value)
        rows.append(row)
    return headers, rows


GAP_NAMES = {
    "equalized_odds_difference": "equalized odds difference",
    "demographic_parity_difference": "demographic parity difference",
    "demographic_parity_ratio": "demographic parity ratio",
    "tpr_difference": "recall difference",
    "fpr_difference": "false-positive rate difference",
    "threshold": "threshold",
}


def _gap_lines(report: Mapping[str, Any]) -> list[str]:
    lines = []
    for key, name in GAP_NAMES.items():
        value = report.get(key)
        if value is None:
            continue
        if isinstance(value, Mapping):
            low, high = value.get("low"), value.get("high")
            shown = _num(value.get("value", value.get("estimate")), 3)
            shown += f" [{_num(low, 3)}, {_num(high, 3)}]" if low is not None else ""
        else:
            shown = _num(value, 3)
        lines.append(f"{name}: {shown}")
    return lines


def _mitigation_lines(mitigation: Mapping[str, Any] | None) -> list[str]:
    """Per-group thresholds, where they were fitted, the gaps and the cost, before and after."""
    if not mitigation:
        return []
    lines = [
        f"mitigation ({mitigation.get('constraint', '')}), fitted on "
        f"{mitigation.get('fitted_on', '?')}:"
    ]
    thresholds = mitigation.get("thresholds")
    if isinstance(thresholds, Mapping):
        lines.append(
            "  per-group thresholds "
            + ", ".join(f"{g} {_num(t, 4)}" for g, t in thresholds.items())
            + f" (single: {_num(mitigation.get('threshold'), 4)})"
        )
    before, after = mitigation.get("before") or {}, mitigation.get("after") or {}
    for key in ("equalized_odds_difference", "demographic_parity_difference", "fpr_difference"):
        b, a = before.get(key), after.get(key)
        if isinstance(b, Mapping) and isinstance(a, Mapping):
            lines.append(
                f"  {key.replace('_', ' ')}: {_num(b.get('value'), 3)} -> {_num(a.get('value'), 3)}"
            )
    cost = mitigation.get("cost")
    if isinstance(cost, Mapping) and cost:
        lines.append(
            "  cost: "
            + ", ".join(
                f"{k} {_num(v.get('before'), 3)} -> {_num(v.get('after'), 3)}"
                for k, v in cost.items()
                if isinstance(v, Mapping)
            )
        )
    return lines


def _privacy_lines(privacy: Mapping[str, Any]) -> list[str]:
    lines = []
    dp = privacy.get("dp") or {}
    if dp:
        lines.append("DP-SGD: " + ", ".join(f"{k} {_num(v, 3)}" for k, v in dp.items()))
    else:
        lines.append("DP-SGD: not used in training")
    if privacy.get("masking"):
        lines.append(f"text masking (data.pii): {privacy['masking']}")
    pii = privacy.get("pii")
    if pii is None:
        lines.append("PII scan: no training table to scan")
    else:
        from abyssal.data.pii import column_kinds

        columns = [c for c in pii.get("columns") or [] if isinstance(c, Mapping)]
        scanned = pii.get("scanned_rows")
        lines.append(
            f"PII scan of {pii.get('table')} ({scanned} rows): "
            + (f"{len(columns)} column(s) hold PII" if columns else "none found")
        )
        for c in columns:
            rows = ", ".join(str(r) for r in (c.get("examples") or [])[:5])
            lines.append(
                f"  {c.get('column')}: {', '.join(column_kinds(c))} in {c.get('rows')} "
                f"row(s), e.g. rows {rows}"
            )
    return lines


def _explain_parts(explained: Mapping[str, Any] | None) -> dict[str, Any]:
    if not explained:
        return {"lines": ["explanations were not asked for"], "bars": {}, "items": [], "images": []}
    if not explained.get("available", True):
        return {
            "lines": [f"not available: {explained.get('why')}"],
            "bars": {},
            "items": [],
            "images": [],
        }
    items = explained.get("items") or []
    lines = [f"method: {explained.get('method', '')}"]
    item_lines = []
    for item in items:
        scores = item.get("scores") or {}
        top = sorted(scores.items(), key=lambda kv: -abs(kv[1]))[:5]
        item_lines.append(
            f"{item.get('item')}: predicted {_num(item.get('prediction'), 3)}, label "
            f"{item.get('label')}; "
            + ", ".join(f"{k} {v:+.3g}" for k, v in top)
            + (f" ({item['note']})" if item.get("note") else "")
        )
    images = [Path(i["image"]) for i in items if i.get("image") and Path(i["image"]).is_file()]
    bars = dict(
        sorted((explained.get("global_importance") or {}).items(), key=lambda kv: -abs(kv[1]))[:12]
    )
    metric = explained.get("global_metric") or ""
    return {
        "lines": lines,
        "items": item_lines,
        "bars": bars,
        "metric": metric,
        "extras": list(explained.get("extras") or [])[:12],
        "images": images[:6],
    }


def _short(value: Any, limit: int = 300) -> str:
    """A value of an added section on one line: numbers as :func:`_num`, lists joined,
    mappings as ``key: value`` pairs."""
    if isinstance(value, Mapping):
        text = "; ".join(f"{k}: {_short(v, limit)}" for k, v in value.items())
    elif isinstance(value, list | tuple):
        text = ", ".join(_short(v, limit) for v in value)
    else:
        text = _num(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _added_parts(section: Any) -> list[tuple[str, Any]]:
    """An added check's section as ``("line", text)``, ``("table", (headers, rows))`` and
    ``("images", paths)`` parts, for HTML and PDF alike."""
    if not isinstance(section, Mapping):
        return [("line", _short(section))]
    parts: list[tuple[str, Any]] = []
    for key, value in section.items():
        if key == "images" and isinstance(value, list):
            paths = [Path(str(v)) for v in value]
            parts.append(("images", [p for p in paths if p.suffix == ".png" and p.is_file()][:6]))
        elif isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
            headers = list(dict.fromkeys(str(k) for v in value for k in v))
            rows = [[_short(v.get(h), 60) for h in headers] for v in value[:50]]
            more = f" (the first 50 of {len(value)})" if len(value) > 50 else ""
            parts += [("line", f"{key}{more}:"), ("table", (headers, rows))]
        else:
            parts.append(("line", f"{key}: {_short(value)}"))
    return parts or [("line", "(nothing recorded)")]


def _added_title(name: str, card: Mapping[str, Any]) -> str:
    plugin = ((card.get("audit") or {}).get("plugins") or {}).get(name)
    source = f" (from {plugin.get('package')} {plugin.get('version')})" if plugin else ""
    return f"Check: {name}{source}"


# -- HTML -------------------------------------------------------------------------------------

CSS = """body{font:15px/1.45 system-ui,sans-serif;max-width:980px;margin:24px auto;padding:0 16px;
color:#222}h1{margin-bottom:4px}h2{border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:28px}
table{border-collapse:collapse;width:100%;margin:8px 0}td,th{padding:4px 8px;border-bottom:1px solid
#eee;text-align:left;vertical-align:top}th{background:#f4f4f4}.pass{color:#2e7d32;font-weight:600}
.fail{color:#c62828;font-weight:600}.muted{color:#666}.badge{display:inline-block;padding:2px 10px;
border-radius:12px;color:#fff;font-weight:600}.bar{background:#3b6fb6;height:12px}
img{max-width:300px;margin:4px;border:1px solid #ddd}"""


def write_html(result: Any, path: Path) -> Path:
    """The audit as one self-contained HTML page (images embedded); written atomically."""
    card = result.card
    e = html.escape
    verdict = "PASSED" if result.passed else "FAILED"
    colour = PASS if result.passed else FAIL
    parts = [
        f"<!doctype html><meta charset='utf-8'><title>Audit of {e(result.ref)}</title>",
        f"<style>{CSS}</style>",
        f"<h1>Model card and audit: {e(result.ref)} "
        f"<span class='badge' style='background:{colour}'>{verdict}</span></h1>",
        f"<p class='muted'>policy {e(result.policy)} · {e(str(card.get('audit', {}).get('time')))}"
        "</p>",
        "<h2>Checks</h2>",
        _html_table(
            ["check", "result", "detail"],
            [
                [
                    e(c.name),
                    f"<span class='{'pass' if c.passed else 'fail'}'>"
                    f"{'pass' if c.passed else 'FAIL'}</span>",
                    e(c.detail),
                ]
                for c in result.checks
            ]
            or [["(none)", "", "the policy sets no rule"]],
            escape=False,
        ),
        "<h2>Model</h2>",
        _html_table(["", ""], [[k, _num(v)] for k, v in _rows(card)["model"]]),
        "<h2>Intended use</h2>",
        f"<p>{e(card.get('intended_use') or 'not stated by the policy')}</p>",
        f"<p class='muted'>Out of scope: {e(card.get('out_of_scope') or 'not stated')}</p>",
        "<h2>Test metrics</h2>",
        _html_table(["metric", "value", "95 % interval"], _rows(card)["metrics"]),
        "<h2>Fairness</h2>",
    ]
    fairness = card.get("fairness")
    if not fairness:
        parts.append("<p class='muted'>No sensitive attribute named by the policy.</p>")
    else:
        report = fairness.get("report", {})
        headers, rows = _group_table(report)
        parts.append(f"<p>By <b>{e(fairness['attribute'])}</b> on the held-out split.</p>")
        parts.append(_html_table(headers, rows))
        parts += [f"<p>{e(line)}</p>" for line in _gap_lines(report)]
        parts += [f"<p>{e(line)}</p>" for line in _mitigation_lines(fairness.get("mitigation"))]
    explained = _explain_parts(card.get("explanations"))
    parts.append("<h2>Explanations</h2>")
    parts += [f"<p>{e(line)}</p>" for line in explained["lines"]]
    if explained["bars"]:
        top = max(abs(v) for v in explained["bars"].values()) or 1.0
        parts.append(f"<p>Global importance (drop of {e(explained.get('metric', ''))}):</p><table>")
        for name, value in explained["bars"].items():
            width = int(300 * abs(value) / top)
            parts.append(
                f"<tr><td>{e(name)}</td><td><div class='bar' style='width:{width}px'>"
                f"</div></td><td>{value:+.4g}</td></tr>"
            )
        parts.append("</table>")
    parts += [f"<p class='muted'>{e(line)}</p>" for line in explained["items"]]
    parts += [f"<p>{e(line)}</p>" for line in explained.get("extras", [])]
    for image in explained["images"]:
        data = base64.b64encode(image.read_bytes()).decode()
        parts.append(f"<img alt='{e(image.name)}' src='data:image/png;base64,{data}'>")
    parts.append("<h2>Privacy</h2>")
    parts += [f"<p>{e(line)}</p>" for line in _privacy_lines(card.get("privacy", {}))]
    for name, section in (card.get("checks") or {}).items():
        parts.append(f"<h2>{e(_added_title(name, card))}</h2>")
        for kind, part in _added_parts(section):
            if kind == "line":
                parts.append(f"<p>{e(part)}</p>")
            elif kind == "table":
                parts.append(_html_table(*part))
            else:
                for image in part:
                    data = base64.b64encode(image.read_bytes()).decode()
                    parts.append(f"<img alt='{e(image.name)}' src='data:image/png;base64,{data}'>")
    write_text_atomic(path, "\n".join(parts) + "\n")
    return path


def _html_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], escape: bool = True) -> str:
    cell = html.escape if escape else str
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{cell(str(v))}</td>" for v in row) + "</tr>" for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


# -- PDF and PNG pages --------------------------------------------------------------------------


class _Pages:
    """Lays text, tables, bar charts and images down pages, top to bottom."""

    def __init__(self, plt: Any) -> None:
        self.plt, self.figures, self.y = plt, [], 0.0
        self._new()

    def _new(self) -> None:
        self.fig = self.plt.figure(figsize=PAGE_INCHES, dpi=DPI)
        self.figures.append(self.fig)
        self.y = 1 - MARGIN

    def _room(self, height: float) -> None:
        if self.y - height < MARGIN:
            self._new()

    def text(
        self,
        line: str,
        size: float = 9.5,
        colour: str = "#222",
        bold: bool = False,
        wrap: int = 100,
    ) -> None:
        import textwrap

        for piece in textwrap.wrap(line, wrap) or [""]:
            height = size / 72 / PAGE_INCHES[1] * 1.45
            self._room(height)
            self.fig.text(
                MARGIN,
                self.y - height,
                piece,
                fontsize=size,
                color=colour,
                fontweight="bold" if bold else "normal",
                family="DejaVu Sans",
            )
            self.y -= height

    def heading(self, title: str) -> None:
        self._room(0.08)
        self.y -= 0.012
        self.text(title, size=14, bold=True)
        self.y -= 0.004

    def table(self, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        if not rows:
            return
        widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) for i, h in enumerate(headers)]
        widths = [min(w, 48) for w in widths]

        def line(cells: Sequence[Any]) -> str:
            return "  ".join(str(c)[:w].ljust(w) for c, w in zip(cells, widths, strict=True))

        self.mono(line(headers), bold=True)
        for row in rows:
            self.mono(line(row))

    def mono(self, line: str, bold: bool = False) -> None:
        height = 8 / 72 / PAGE_INCHES[1] * 1.5
        self._room(height)
        self.fig.text(
            MARGIN,
            self.y - height,
            line[:118],
            fontsize=8,
            family="DejaVu Sans Mono",
            fontweight="bold" if bold else "normal",
        )
        self.y -= height

    def bars(self, values: Mapping[str, float], title: str) -> None:
        height = min(0.35, 0.04 + 0.022 * len(values))
        self._room(height + 0.02)
        ax = self.fig.add_axes((MARGIN + 0.22, self.y - height, 0.62, height - 0.03))
        names = list(values)[::-1]
        ax.barh(names, [values[n] for n in names], color="#3b6fb6")
        ax.set_title(title, fontsize=9, loc="left")
        ax.tick_params(labelsize=7.5)
        ax.axvline(0, color="#999", linewidth=0.6)
        self.y -= height + 0.01

    def images(self, paths: Sequence[Path]) -> None:
        import matplotlib.image as mpimg

        size = 0.26
        for k in range(0, len(paths), 3):
            self._room(size * PAGE_INCHES[0] / PAGE_INCHES[1] + 0.02)
            h = size * PAGE_INCHES[0] / PAGE_INCHES[1]
            for j, path in enumerate(paths[k : k + 3]):
                ax = self.fig.add_axes((MARGIN + j * (size + 0.03), self.y - h, size, h))
                ax.imshow(mpimg.imread(str(path)))
                ax.axis("off")
            self.y -= h + 0.02


def write_pdf(result: Any, path: Path, *, pages: Path | None = None) -> list[Path]:
    """The audit as a PDF (and, with ``pages``, one PNG per page there); the files written."""
    from abyssal.core.optional import require

    matplotlib = require("matplotlib", extra="govern", purpose="the audit's PDF")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.backends.backend_pdf import PdfPages

    card = result.card
    p = _Pages(plt)
    verdict = "PASSED" if result.passed else "FAILED"
    p.text(f"Model card and audit: {result.ref}", size=18, bold=True)
    p.text(
        f"{verdict} against policy {result.policy}",
        size=13,
        bold=True,
        colour=PASS if result.passed else FAIL,
    )
    p.text(f"audited {card.get('audit', {}).get('time')}", colour=MUTED)
    p.heading("Checks")
    for check in result.checks or []:
        p.text(
            f"{'pass' if check.passed else 'FAIL'}  {check.name}: {check.detail}",
            colour=PASS if check.passed else FAIL,
        )
    if not result.checks:
        p.text("the policy sets no rule", colour=MUTED)
    p.heading("Model")
    for key, value in _rows(card)["model"]:
        p.text(f"{key}: {_num(value)}")
    p.heading("Intended use")
    p.text(card.get("intended_use") or "not stated by the policy")
    p.text(f"Out of scope: {card.get('out_of_scope') or 'not stated'}", colour=MUTED)
    p.heading("Test metrics")
    p.table(["metric", "value", "95 % interval"], _rows(card)["metrics"])
    p.heading("Fairness")
    fairness = card.get("fairness")
    if not fairness:
        p.text("No sensitive attribute named by the policy.", colour=MUTED)
    else:
        report = fairness.get("report", {})
        p.text(f"By {fairness['attribute']} on the held-out split:")
        p.table(*_group_table(report))
        for line in _gap_lines(report) + _mitigation_lines(fairness.get("mitigation")):
            p.text(line)
    p.heading("Explanations")
    explained = _explain_parts(card.get("explanations"))
    for line in explained["lines"]:
        p.text(line)
    if explained["bars"]:
        p.bars(
            explained["bars"],
            f"global importance: drop of {explained.get('metric', '')}",
        )
    for line in explained["items"] + explained.get("extras", []):
        p.text(line, size=8.5, colour="#333")
    if explained["images"]:
        p.images(explained["images"])
    p.heading("Privacy")
    for line in _privacy_lines(card.get("privacy", {})):
        p.text(line)
    for name, section in (card.get("checks") or {}).items():
        p.heading(_added_title(name, card))
        for kind, part in _added_parts(section):
            if kind == "line":
                p.text(part)
            elif kind == "table":
                p.table(*part)
            elif part:
                p.images(part)
    written = []
    with atomic_path(path) as temporary, PdfPages(temporary) as pdf:
        for figure in p.figures:
            pdf.savefig(figure)
    written.append(path)
    if pages is not None:
        pages.mkdir(parents=True, exist_ok=True)
        for k, figure in enumerate(p.figures, 1):
            target = pages / f"page-{k}.png"
            with atomic_path(target) as temporary:
                figure.savefig(temporary, dpi=DPI, format="png")
            written.append(target)
    for figure in p.figures:
        plt.close(figure)
    return written
