"""Leaderboards: the JSON a bench run returns, written as ``leaderboard.json``,
``leaderboard.md`` (the tables the README shows) and ``leaderboard.html`` (tables and charts),
kept under ``$ABYSSAL_HOME/bench/<id>/`` and optionally copied to another folder.

A finished folder appears whole (written in a temporary folder, then renamed), so a reader
(``abyssal ui``) never sees a half-written leaderboard.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from abyssal.core.atomic import write_text_atomic
from abyssal.core.errors import AbyssalError
from abyssal.core.home import abyssal_home
from abyssal.pipeline.charts import SERIES_COLOURS, esc, svg_interval_chart
from abyssal.pipeline.report import CSS

FILES = ("leaderboard.json", "leaderboard.md", "leaderboard.html")


def bench_root(home: str | os.PathLike[str] | None = None) -> Path:
    """Where bench runs are kept: ``$ABYSSAL_HOME/bench``."""
    return abyssal_home(home) / "bench"


def _num(value: Any, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _with_ci(m: Mapping[str, Any] | None, digits: int = 4) -> str:
    if not m or m.get("value") is None:
        return "-"
    if m.get("low") is None or m.get("high") is None:
        return _num(m["value"], digits)
    return f"{m['value']:.{digits}f} [{m['low']:.{digits}f}, {m['high']:.{digits}f}]"


def _signed(c: Mapping[str, Any] | None, digits: int = 4) -> str:
    if not c or c.get("difference") is None:
        return "-"
    out = f"{c['difference']:+.{digits}f}"
    if c.get("low") is not None:
        out += f" [{c['low']:+.{digits}f}, {c['high']:+.{digits}f}]"
    return out


def _p(value: Any) -> str:
    if value is None:
        return "-"
    return "< 0.001" if value < 0.001 else f"{value:.3f}"


def _code(text: str) -> str:
    """Inline code in markdown, also when ``text`` holds backticks (quoted column names)."""
    return f"`` {text} ``" if "`" in text else f"`{text}`"


def md_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A markdown table's lines (a ``|`` inside a cell becomes ``/``)."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    return lines + ["| " + " | ".join(str(c).replace("|", "/") for c in r) + " |" for r in rows]


def task_tables(task: Mapping[str, Any]) -> dict[str, tuple[list[str], list[list[str]]]]:
    """The task's tables as (headers, rows) of plain text: ``leaderboard``, ``anchors``,
    ``perturbations`` and ``slices`` (those it has)."""
    titles, primary = task["titles"], task["primary"]
    level = f"{task['confidence']:.0%}"
    heads = ["rank", "model", "items"] + [f"{titles[m]} [{level} CI]" for m in task["metrics"]]
    heads.append(f"{titles[primary]} minus the leader's [CI], p (Holm)")
    board = []
    for r in task["results"]:
        n = f"{r['n']:,}" + (
            f" ({r['positives']:,} pos.)" if r.get("positives") is not None else ""
        )
        cells = [str(r["rank"]), short_label(r["model"]), n]
        cells += [_with_ci(r["metrics"].get(m)) for m in task["metrics"]]
        v = r.get("versus")
        cells.append("leader" if v is None else f"{_signed(v)}, p {_p(v.get('p_adjusted'))}")
        board.append(cells)
    tables = {"leaderboard": (heads, board)}
    if task["anchors"]:
        tables["anchors"] = (
            ["published", "metric", "value", "source", "differs from this task"],
            [[a["name"], titles.get(a["metric"], a["metric"]), _num(a["value"], 3),
              a["source"] + (f" <{a['url']}>" if a.get("url") else ""), a.get("note") or "-"]
             for a in task["anchors"]],
        )  # fmt: skip
    pert = [
        [
            short_label(r["model"]),
            p["name"],
            _with_ci(p["metrics"].get(primary)),
            _signed(p["drop"]),
        ]
        for r in task["results"]
        for p in r["perturbations"]
    ]
    if pert:
        clean = [[short_label(r["model"]), "none (clean)", _with_ci(r["metrics"].get(primary)), "-"]
                 for r in task["results"]]  # fmt: skip
        tables["perturbations"] = (
            ["model", "perturbation", f"{titles[primary]} [CI]", "drop from clean [CI]"],
            [row for r in clean for row in [r] + [p for p in pert if p[0] == r[0]]],
        )
    slices = [
        [short_label(r["model"]), s["name"], _code(s["where"]), f"{s['n']:,}"]
        + [_with_ci(s["metrics"].get(m)) for m in task["metrics"]]
        for r in task["results"]
        for s in r["slices"]
    ]
    if slices:
        tables["slices"] = (
            ["model", "slice", "where", "items"] + [titles[m] for m in task["metrics"]],
            slices,
        )
    return tables


def environment_line(board: Mapping[str, Any]) -> str:
    """One sentence: when, on which machine and GPU, with which versions and commit."""
    env = board.get("environment") or {}
    m, v = env.get("machine", {}), env.get("versions", {})
    gpu = f", GPU {m['gpu']}" if m.get("gpu") else ", no GPU"
    versions = ", ".join(f"{k} {val}" for k, val in v.items() if val)
    commit = env.get("git_commit")
    return (
        f"Measured {env.get('date', '?')} on {m.get('cpu', '?')} ({m.get('cores', '?')} cores)"
        f"{gpu}; {versions}"
        + (f"; commit {commit[:10]}" if commit else "")
        + (" with uncommitted changes" if env.get("git_dirty") else "")
        + "."
    )


def render_markdown(board: Mapping[str, Any]) -> str:
    """The leaderboard as markdown: one section per task."""
    out = [f"# {board['title'] or board['suite']}", ""]
    if board.get("description"):
        out += [board["description"].strip(), ""]
    out += [environment_line(board)]
    if board.get("command"):
        out += ["", f"Command: `{board['command']}`"]
    for task in board["tasks"]:
        out += ["", f"## {task['title'] or task['name']}", ""]
        p = task["protocol"]
        proto = p["kind"] + (f" (folds pooled by {p['key']})" if p["kind"] == "kfold" else "")
        if p.get("group"):
            proto += f", items resampled by {p['group']}"
        out += [
            f"Data: {task['data']}. Protocol: {proto}. {task['resamples']:,} bootstrap "
            f"resamples; ranked by {task['titles'][task['primary']]}.",
            "",
        ]
        for name, (heads, rows) in task_tables(task).items():
            if name != "leaderboard":
                out += ["", f"### {name.capitalize()}", ""]
            out += md_table(heads, rows)
        notes = sorted({n for r in task["results"] for n in r.get("notes", [])})
        if notes:
            out += ["", *[f"- {n}" for n in notes]]
    return "\n".join(out) + "\n"


def short_label(model: str) -> str:
    """A model argument as charts and tables name it: pooled versions of one model
    (``a:5,a:2,a:3``) as ``a:5,2,3``; anything else as given."""
    refs = model.split(",")
    names = {r.partition(":")[0] for r in refs}
    if len(refs) == 1 or len(names) != 1:
        return model
    return f"{names.pop()}:{','.join(r.partition(':')[2] for r in refs)}"


def task_charts(task: Mapping[str, Any]) -> list[str]:
    """SVG charts of a task: the primary metric (and every metric with a published anchor) per
    model with its interval and the anchors as dashed lines; the primary metric under each
    perturbation; per slice."""
    primary, title = task["primary"], task["titles"][task["primary"]]

    def row(label: str, m: Mapping[str, Any] | None) -> tuple[str, Any, Any, Any]:
        m = m or {}
        return (label, m.get("value"), m.get("low"), m.get("high"))

    anchored = {a["metric"] for a in task["anchors"]}
    shown = [primary] + [m for m in task["metrics"] if m != primary and m in anchored]
    charts = []
    for m in shown:
        label = task["titles"][m]
        charts.append(
            svg_interval_chart(
                [row(short_label(r["model"]), r["metrics"].get(m)) for r in task["results"]],
                title=f"{task['title'] or task['name']}: {label}",
                axis=f"{label} ({task['confidence']:.0%} bootstrap interval; dashed: published)",
                references=[(a["name"], a["value"]) for a in task["anchors"] if a["metric"] == m],
            )
        )
    for kind, entries in (
        (
            "perturbations",
            lambda r: [{"name": "clean", "metrics": r["metrics"]}, *r["perturbations"]],
        ),
        ("slices", lambda r: r["slices"]),
    ):
        rows, colours = [], []
        for k, r in enumerate(task["results"]):
            if not r[kind]:
                continue
            for e in entries(r):
                n = f" (n={e['n']})" if "n" in e else ""
                rows.append(
                    row(f"{e['name']}{n} · {short_label(r['model'])}", e["metrics"].get(primary))
                )
                colours.append(SERIES_COLOURS[k % len(SERIES_COLOURS)])
        if rows:
            what = "under perturbations" if kind == "perturbations" else "by slice"
            charts.append(
                svg_interval_chart(rows, title=f"{title} {what}", axis=title, colours=colours)
            )
    return charts


def _html_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def render_html(board: Mapping[str, Any]) -> str:
    """The leaderboard as one self-contained HTML page (tables and SVG charts, no scripts)."""
    body = [f"<h1>{esc(board['title'] or board['suite'])}</h1>"]
    if board.get("description"):
        body.append(f"<p>{esc(board['description'])}</p>")
    body.append(f'<p class="muted">{esc(environment_line(board))}</p>')
    for task in board["tasks"]:
        body.append(f'<h2 id="task-{esc(task["name"])}">{esc(task["title"] or task["name"])}</h2>')
        body.append(f'<p class="muted">{esc(task["data"])}</p>')
        body += task_charts(task)
        for name, (heads, rows) in task_tables(task).items():
            body.append(f"<h3>{esc(name.capitalize())}</h3>{_html_table(heads, rows)}")
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(board['suite'])} leaderboard</title><style>{CSS}</style></head><body>",
        *body, "</body></html>",
    ]) + "\n"  # fmt: skip


def write_leaderboard(
    board: Mapping[str, Any],
    *,
    home: str | os.PathLike[str] | None = None,
    out: str | os.PathLike[str] | None = None,
) -> Path:
    """Keep the leaderboard under ``$ABYSSAL_HOME/bench/<id>/`` (whole or not at all) and, with
    ``out``, write the same three files into that folder too. Returns the kept folder."""
    root = bench_root(home)
    root.mkdir(parents=True, exist_ok=True)
    texts = {
        "leaderboard.json": json.dumps(board, indent=2, allow_nan=False) + "\n",
        "leaderboard.md": render_markdown(board),
        "leaderboard.html": render_html(board),
    }
    final = root / board["id"]
    k = 1
    while final.exists():
        k += 1
        final = root / f"{board['id']}-{k}"
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=root))
    try:
        for name, text in texts.items():
            (staging / name).write_text(text, encoding="utf-8")
        staging.rename(final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if out is not None:
        folder = Path(out)
        folder.mkdir(parents=True, exist_ok=True)
        for name, text in texts.items():
            write_text_atomic(folder / name, text)
    return final


def list_boards(home: str | os.PathLike[str] | None = None) -> list[dict[str, Any]]:
    """Every kept leaderboard, newest first (its JSON, plus ``folder``)."""
    root = bench_root(home)
    boards = []
    for folder in sorted(root.glob("*/leaderboard.json"), reverse=True):
        try:
            board = json.loads(folder.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        board["folder"] = str(folder.parent)
        boards.append(board)
    return sorted(boards, key=lambda b: b.get("created", ""), reverse=True)


def read_board(run_id: str, home: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """One kept leaderboard by its id; an unknown id is an error listing the kept ones."""
    path = bench_root(home) / run_id / "leaderboard.json"
    if "/" in run_id or not path.is_file():
        known = [b["id"] for b in list_boards(home)][:10]
        raise AbyssalError(f"no bench run '{run_id}'; recent: {', '.join(known) or 'none'}")
    return json.loads(path.read_text(encoding="utf-8"))
