"""The dashboard's page frame and small HTML pieces: the navigation bar, tables of escaped
cells, badges, numbers, and the 404 page. Inline CSS (the pipeline report's, plus the
navigation), nothing fetched from elsewhere.

Example:
    >>> "<nav" in page("Models", ["<p>hi</p>"], active="/models")
    True
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from abyssal.pipeline.charts import esc, finite, num
from abyssal.pipeline.report import CSS as REPORT_CSS
from abyssal.pipeline.report import STATUS_COLOURS

NAV = (
    ("/", "Overview"),
    ("/models", "Models"),
    ("/runs", "Runs"),
    ("/pipelines", "Pipelines"),
    ("/bench", "Benchmarks"),
    ("/audits", "Audits"),
    ("/services", "Services"),
)
"""The navigation bar: path, label."""

BADGE_COLOURS = {
    **STATUS_COLOURS,
    "completed": "#2e7d32",
    "passed": "#2e7d32",
    "pass": "#2e7d32",
    "up": "#2e7d32",
    "running": "#1565c0",
    "trained": "#1565c0",
    "interrupted": "#b26a00",
    "damaged": "#b71c1c",
    "failed": "#b71c1c",
    "FAILED": "#b71c1c",
    "fail": "#b71c1c",
    "down": "#b71c1c",
}

CSS = (
    REPORT_CSS.replace("max-width:980px", "max-width:1220px")
    + """
nav{display:flex;gap:4px;flex-wrap:wrap;border-bottom:2px solid #3b6fb6;margin:-8px 0 18px;
padding-bottom:6px}nav a{padding:4px 10px;border-radius:4px;color:#3b6fb6;text-decoration:none;
font-weight:600}nav a.on{background:#3b6fb6;color:#fff}nav .brand{color:#222;margin-right:12px}
a{color:#2a5ea8}.cards{display:flex;gap:10px;flex-wrap:wrap;margin:12px 0}.card{border:1px solid
#ddd;border-radius:6px;padding:8px 14px;min-width:120px}.card b{display:block;font-size:24px}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(440px,1fr));gap:8px}
form.inline{display:flex;gap:6px;align-items:center;flex-wrap:wrap;margin:8px 0}
input,select,button{font:inherit;padding:3px 6px}code{background:#f5f5f5;padding:0 3px}
.badge{white-space:nowrap}.alias{background:#6a4c93}
.note{background:#fff8e1;border:1px solid #f0d890;padding:6px 10px;border-radius:4px}
"""
)


def page(title: str, body: Sequence[str], *, active: str = "", script: str = "") -> str:
    """A whole HTML page: the navigation, ``body`` (already-escaped HTML) and an optional
    inline script.

    Args:
        title: the page's title (escaped here).
        body: HTML fragments.
        active: the navigation entry to highlight (its path).
        script: inline JavaScript (trusted: written by this package, never from data).
    """
    links = "".join(
        f'<a href="{href}"{" class=on" if href == active else ""} data-testid="nav-'
        f'{label.lower()}">{label}</a>'
        for href, label in NAV
    )
    return (
        "\n".join(
            [
                "<!DOCTYPE html>",
                '<html lang="en"><head><meta charset="utf-8">',
                '<meta name="viewport" content="width=device-width, initial-scale=1">',
                f"<title>{esc(title)} · abyssal</title><style>{CSS}</style></head><body>",
                f'<nav><span class="brand">abyssal</span>{links}</nav>',
                *body,
                f"<script>{script}</script>" if script else "",
                "</body></html>",
            ]
        )
        + "\n"
    )


def table(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    numeric: set[int] = frozenset(),  # type: ignore[assignment]
    testid: str = "",
    row_ids: Sequence[str] = (),
) -> str:
    """A table of already-escaped cells; the columns in ``numeric`` align right; ``row_ids``
    become each row's ``data-row`` (for tests and scripts)."""
    head = "".join(f"<th>{h}</th>" for h in headers)
    body = []
    for k, row in enumerate(rows):
        mark = f' data-row="{esc(row_ids[k])}"' if k < len(row_ids) else ""
        cells = "".join(
            f"<td{' class=n' if i in numeric else ''}>{c}</td>" for i, c in enumerate(row)
        )
        body.append(f"<tr{mark}>{cells}</tr>")
    tid = f' data-testid="{esc(testid)}"' if testid else ""
    return f"<table{tid}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def badge(status: Any) -> str:
    """A coloured label for a status (grey when unknown)."""
    colour = BADGE_COLOURS.get(str(status), "#757575")
    return f'<span class="badge" style="background:{colour}">{esc(status)}</span>'


def alias_badge(alias: Any) -> str:
    """An alias (``production``) as a label."""
    return f'<span class="badge alias">{esc(alias)}</span>'


def link(href: str, text: Any, testid: str = "") -> str:
    """``<a>`` with an escaped address and text."""
    tid = f' data-testid="{esc(testid)}"' if testid else ""
    return f'<a href="{esc(href)}"{tid}>{esc(text)}</a>'


def value(v: Any, digits: int = 4) -> str:
    """A metric value for people: numbers to ``digits`` significant digits, text escaped."""
    if finite(v) is not None or v is None:
        return num(v, digits)
    return esc(v)


def interval(v: Any, low: Any, high: Any) -> str:
    """``value [low, high]`` (the interval muted), or the value alone without bounds."""
    span = ""
    if finite(low) is not None and finite(high) is not None:
        span = f' <span class="muted">[{num(low, 3)}, {num(high, 3)}]</span>'
    return value(v) + span


def facts(rows: Mapping[str, str], testid: str = "facts") -> str:
    """A two-column table of label and already-escaped value."""
    body = "".join(f"<tr><th>{esc(k)}</th><td>{v}</td></tr>" for k, v in rows.items())
    return f'<table data-testid="{esc(testid)}">{body}</table>'


def muted(text: str) -> str:
    return f'<p class="muted">{esc(text)}</p>'


def not_found_page(message: str) -> str:
    """The 404 page, naming what was not found."""
    return page(
        "Not found",
        [
            "<h1>Not found</h1>",
            f'<p data-testid="not-found">{esc(message)}</p>',
            '<p><a href="/">Back to the overview</a></p>',
        ],
    )


def short_time(stamp: Any) -> str:
    """An ISO time as ``YYYY-MM-DD HH:MM:SS`` (escaped)."""
    return esc(str(stamp or "-")[:19].replace("T", " "))
