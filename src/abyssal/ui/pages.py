"""The dashboard's pages over the model store, runs, pipeline runs and audits (benchmarks are
in :mod:`abyssal.ui.leaderboard`, services in :mod:`abyssal.ui.services`). Each function takes
:class:`~abyssal.ui.data.DashboardData` and returns one HTML page; every value from a record is
escaped.

Example:
    >>> html = overview_page(DashboardData(tmp_home))  # doctest: +SKIP
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from abyssal.core.runs import Run
from abyssal.core.store import ModelVersion
from abyssal.pipeline.charts import esc, finite, num, svg_gate_chart
from abyssal.ui.data import DashboardData, headline, parent_of, version_href
from abyssal.ui.layout import (
    alias_badge,
    badge,
    facts,
    interval,
    link,
    muted,
    page,
    short_time,
    table,
    value,
)
from abyssal.ui.svg import svg_curve, svg_lineage

CURVE_SKIP = ("epoch", "step", "time")
"""Metric-row columns that are counters, not curves."""


# -- overview ---------------------------------------------------------------------------------


def overview_page(data: DashboardData, latest: int = 6) -> str:
    """Counts, the newest versions, runs, pipeline runs and benchmark runs."""
    counts = data.counts()
    cards = "".join(
        f'<div class="card" data-testid="count-{k.replace(" ", "-")}"><b>{v}</b>{esc(k)}</div>'
        for k, v in counts.items()
    )
    body = [
        "<h1>abyssal</h1>",
        f'<p class="muted">home: {esc(data.home)}</p>',
        f'<div class="cards">{cards}</div>',
        "<h2>Latest model versions</h2>",
        versions_table(data.versions()[:latest]),
        "<h2>Latest runs</h2>",
        runs_table(data.runs()[:latest]),
        "<h2>Latest pipeline runs</h2>",
        pipelines_table(data.pipeline_runs()[:latest]),
        "<h2>Latest benchmark runs</h2>",
        bench_table(data.bench_runs()[:latest]),
    ]
    return page("Overview", body, active="/")


def bench_table(boards: list[dict[str, Any]]) -> str:
    """Benchmark runs: id (linked), suite, tasks, models, created."""
    if not boards:
        return muted("No benchmark run yet ($ABYSSAL_HOME/bench/<id>/leaderboard.json).")
    rows = [
        [
            link(f"/bench/{b['id']}", b["id"], "bench-link"),
            esc(b.get("suite")),
            esc(b.get("title") or ""),
            str(len(b.get("tasks") or [])),
            esc(", ".join(str(m) for m in b.get("models") or [])),
            short_time(b.get("created")),
        ]
        for b in boards
    ]
    headers = ["benchmark run", "suite", "title", "tasks", "models", "created"]
    return table(headers, rows, numeric={3}, testid="bench-table")


# -- models -----------------------------------------------------------------------------------


def versions_table(versions: list[ModelVersion], testid: str = "versions-table") -> str:
    """Versions: ref (linked), solution, headline metric, aliases, parent, created."""
    if not versions:
        return muted("No model version.")
    rows = []
    for mv in versions:
        metric, v = headline(mv)
        parent = parent_of(mv)
        rows.append(
            [
                link(version_href(mv.ref), mv.ref, "version-link"),
                esc(mv.solution),
                f"{esc(metric)} {value(v)}" if metric else "-",
                " ".join(alias_badge(a) for a in mv.aliases) or "",
                _ref_link(parent[0]) if parent else "",
                short_time(mv.created_at),
            ]
        )
    headers = ["version", "solution", "headline metric", "aliases", "made from", "created"]
    return table(headers, rows, testid=testid, row_ids=[mv.ref for mv in versions])


def models_page(data: DashboardData, query: str = "") -> str:
    """Every version, with a filter box (``?q=``: words that the ref, solution or aliases
    contain)."""
    found = data.versions(query)
    form = (
        '<form class="inline" method="get" action="/models" data-testid="model-filter-form">'
        f'<input name="q" value="{esc(query)}" placeholder="filter: name, solution, alias" '
        'data-testid="model-filter" size="32"><button type="submit">Filter</button>'
        + (' <a href="/models">clear</a>' if query else "")
        + "</form>"
    )
    shown = f"{len(found)} version(s)" + (f" matching {query!r}" if query else "")
    body = ["<h1>Model versions</h1>", form, muted(shown), versions_table(found)]
    return page("Models", body, active="/models")


def _ref_link(ref: str) -> str:
    """A link to a stored version's page; an external base as text."""
    number = ref.partition(":")[2]
    if number.isdigit():
        return link(version_href(ref), ref)
    return esc(ref)


def version_page(
    data: DashboardData, mv: ModelVersion, *, can_write: bool, message: str = ""
) -> str:
    """One version: facts, lineage graph, metrics, artifacts, config, audit, aliases."""
    graph = data.lineage(mv)
    parent = parent_of(mv)
    audit = data.audit(mv.name, str(mv.version))
    body = [
        f"<h1>{esc(mv.ref)} {' '.join(alias_badge(a) for a in mv.aliases)}</h1>",
        f'<p class="note" data-testid="message">{esc(message)}</p>' if message else "",
        facts(_version_facts(mv, parent, audit), "version-facts"),
        "<h2>Lineage</h2>",
        svg_lineage(graph.nodes, graph.edges, mv.ref),
        _children_line(data, mv),
        "<h2>Metrics</h2>",
        _metrics_table(mv.metrics),
        "<h2>Artifacts</h2>",
        _artifacts_table(mv),
        "<h2>Config</h2>",
        _config_section(mv.config),
        "<h2>Aliases</h2>",
        _alias_section(data, mv, can_write),
    ]
    return page(mv.ref, body, active="/models")


def _version_facts(
    mv: ModelVersion, parent: tuple[str, str] | None, audit: Mapping[str, Any] | None
) -> dict[str, str]:
    lineage = mv.lineage if isinstance(mv.lineage, dict) else {}
    metric, v = headline(mv)
    rows = {
        "solution": esc(mv.solution),
        "created": short_time(mv.created_at),
        "headline metric": f"{esc(metric)} {interval(v, *_bounds(mv.metrics, metric))}",
        "made from": (
            f"{parent[1]}: "
            + (
                link(version_href(parent[0]), parent[0], "parent-link")
                if parent[0].partition(":")[2].isdigit()
                else esc(parent[0])
            )
            if parent
            else '<span class="muted">nothing (a root version)</span>'
        ),
        "run": link(f"/runs/{mv.run_id}", mv.run_id, "run-link") if mv.run_id else "-",
        "data": esc(lineage.get("data") or "-"),
        "data fingerprint": f"<code>{esc(lineage.get('data_fingerprint') or '-')}</code>",
        "code": esc(
            f"abyssal {lineage.get('package_version', '?')}, commit "
            f"{str(lineage.get('git_commit') or '-')[:12]}"
            + (" (with local changes)" if lineage.get("git_dirty") else "")
        ),
    }
    if audit is not None:
        record = audit["record"]
        verdict = badge("passed" if record.get("passed") else "FAILED")
        rows["audit"] = f"{verdict} against policy {esc(record.get('policy'))} · " + link(
            f"/audits/{mv.name}/{mv.version}", "open the audit report", "audit-link"
        )
    else:
        rows["audit"] = '<span class="muted">not audited (abyssal audit)</span>'
    return rows


def _bounds(metrics: Mapping[str, Any], name: str) -> tuple[Any, Any]:
    return metrics.get(f"{name}_low"), metrics.get(f"{name}_high")


def _children_line(data: DashboardData, mv: ModelVersion) -> str:
    kids = data.children(mv)
    if not kids:
        return muted("No version was made from this one.")
    made = ", ".join(link(version_href(k.ref), k.ref, "child-link") for k in kids)
    return f"<p>Made from this version: {made}</p>"


def _metrics_table(metrics: Mapping[str, Any]) -> str:
    """Each metric once, with its interval when ``NAME_low`` / ``NAME_high`` were recorded."""
    bounds = {
        k for k in metrics if k.endswith(("_low", "_high")) and k.rsplit("_", 1)[0] in metrics
    }
    rows, ids = [], []
    for name in sorted(k for k in metrics if k not in bounds):
        rows.append([esc(name), interval(metrics[name], *_bounds(metrics, name))])
        ids.append(name)
    if not rows:
        return muted("No metric recorded.")
    return table(["metric", "value"], rows, numeric={1}, testid="metrics-table", row_ids=ids)


def _artifacts_table(mv: ModelVersion) -> str:
    rows = [
        [esc(a.name), esc(a.role), esc(a.format), num(a.size), f"<code>{esc(a.sha256[:16])}</code>"]
        for a in mv.artifacts
    ]
    if mv.base is not None:
        rows.append([esc("(base)"), "base", "-", "-", _ref_link(str(mv.base))])
    if not rows:
        return muted("No artifact.")
    return table(["artifact", "role", "format", "bytes", "sha256"], rows, numeric={3})


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings as ``dotted.key -> value`` (lists kept whole).

    Example:
        >>> flatten({"a": {"b": 1}, "c": [1, 2]})
        {'a.b': 1, 'c': [1, 2]}
    """
    if not isinstance(value, Mapping):
        return {prefix: value}
    out: dict[str, Any] = {}
    for key, inner in value.items():
        out.update(flatten(inner, f"{prefix}.{key}" if prefix else str(key)))
    return out


def _config_section(config: Mapping[str, Any]) -> str:
    """The solution's config: its model and data sections shown, the rest folded."""
    solution = config.get("solution_config") if isinstance(config, Mapping) else None
    flat = flatten(solution if isinstance(solution, Mapping) else config or {})
    shown = {k: v for k, v in flat.items() if k.split(".")[0] in ("model", "data")}
    rest = {k: v for k, v in flat.items() if k not in shown}

    def rows(items: Mapping[str, Any]) -> list[list[str]]:
        return [
            [f"<code>{esc(k)}</code>", esc(json.dumps(v, default=str))] for k, v in items.items()
        ]

    out = [table(["key", "value"], rows(shown), testid="config-table")] if shown else []
    if rest:
        out.append(
            f"<details><summary>the rest of the config ({len(rest)} keys)</summary>"
            f"{table(['key', 'value'], rows(rest))}</details>"
        )
    if isinstance(config, Mapping) and isinstance(config.get("optimization"), Mapping):
        opt = config["optimization"]
        out.append(
            f"<p>Optimized from {_ref_link(str(opt.get('parent')))} with "
            f"{esc(opt.get('method'))} for {esc(opt.get('target'))}.</p>"
        )
    return "\n".join(out) or muted("No config recorded.")


def _alias_section(data: DashboardData, mv: ModelVersion, can_write: bool) -> str:
    moves = [m for m in data.alias_history(mv.name)][:20]
    rows = [
        [
            alias_badge(m.alias),
            _number_link(mv.name, m.old_version),
            _number_link(mv.name, m.new_version),
            short_time(m.changed_at),
            esc(m.changed_by),
        ]
        for m in moves
    ]
    out = [
        table(["alias", "from", "to", "when", "by"], rows, testid="alias-history")
        if rows
        else muted(f"No alias of {mv.name} was ever set.")
    ]
    if not can_write:
        out.append(muted("Read only: start `abyssal ui --keys FILE` to move aliases here."))
        return "\n".join(out)
    out.append(
        f'<form class="inline" method="post" action="/models/{esc(mv.name)}/aliases" '
        'data-testid="alias-form">'
        f'<input type="hidden" name="version" value="{mv.version}">'
        f'<label>point alias <input name="alias" value="production" size="14" '
        f'data-testid="alias-name"></label> at <b>{esc(mv.ref)}</b> '
        '<label>API key <input type="password" name="key" autocomplete="off" size="24" '
        'data-testid="alias-key"></label><button type="submit">Move alias</button></form>'
    )
    return "\n".join(out)


def _number_link(name: str, number: int | None) -> str:
    return "-" if number is None else link(f"/models/{name}/{number}", f"{name}:{number}")


# -- runs -------------------------------------------------------------------------------------


def runs_table(runs: list[Run]) -> str:
    """Runs: id (linked), kind, solution, status, outputs, created."""
    if not runs:
        return muted("No run yet.")
    rows = [
        [
            link(f"/runs/{r.id}", r.id, "run-link"),
            esc(r.info.get("kind")),
            esc(r.info.get("solution")),
            badge(r.status),
            " ".join(_ref_link(str(o)) for o in r.info.get("outputs") or []),
            short_time(r.info.get("created")),
        ]
        for r in runs
    ]
    headers = ["run", "kind", "solution", "status", "outputs", "created"]
    return table(headers, rows, testid="runs-table", row_ids=[r.id for r in runs])


def runs_page(data: DashboardData, kind: str | None = None) -> str:
    """Every run, newest first (``?kind=`` keeps one kind)."""
    runs = data.runs(kind)
    kinds = sorted({str(r.info.get("kind")) for r in data.runs()})
    choices = " ".join(link(f"/runs?kind={k}", k) for k in kinds)
    body = ["<h1>Runs</h1>", f"<p>kinds: {choices} · {link('/runs', 'all')}</p>", runs_table(runs)]
    return page("Runs", body, active="/runs")


def curves(rows: list[dict[str, Any]]) -> str:
    """One chart per numeric column of a run's metric rows, against its step (or epoch)."""
    if not rows:
        return muted("No metric row was logged.")
    axis = (
        "step"
        if any("step" in r for r in rows)
        else "epoch"
        if any("epoch" in r for r in rows)
        else ""
    )
    names = list(dict.fromkeys(k for r in rows for k, v in r.items() if finite(v) is not None))
    names = [n for n in names if n not in CURVE_SKIP and not n.endswith(("_rows", "_positives"))]
    charts = []
    for name in names:
        pts = [(r[axis] if axis else k, r[name]) for k, r in enumerate(rows) if name in r]
        charts.append(svg_curve(name, pts, x_label=axis or "row"))
    return f'<div class="grid" data-testid="curves">{"".join(charts)}</div>'


def run_page(data: DashboardData, run: Run) -> str:
    """One run: status, outputs, final metrics, curves of its metric rows, its log's tail."""
    info = run.info
    rows = run.metrics_history()
    outputs = " ".join(_ref_link(str(o)) for o in info.get("outputs") or []) or "-"
    fact_rows = {
        "kind": esc(info.get("kind")),
        "solution": esc(info.get("solution")),
        "status": badge(run.status),
        "created": short_time(info.get("created")),
        "updated": short_time(info.get("updated")),
        "outputs": outputs,
    }
    if info.get("error"):
        fact_rows["error"] = f'<span class="fail">{esc(info["error"])}</span>'
    if info.get("kind") == "pipeline":
        found = next((p for p in data.pipeline_runs() if p["run"].id == run.id), None)
        if found and found["summary"]:
            href = f"/pipelines/{found['pipeline']}/{run.id}"
            fact_rows["pipeline"] = link(href, f"{found['pipeline']}: steps and gate")
    final = info.get("metrics") or {}
    log = data.run_log(run)
    body = [
        f"<h1>Run {esc(run.id)} {badge(run.status)}</h1>",
        facts(fact_rows, "run-facts"),
        f"<h2>Metric curves ({len(rows)} rows)</h2>",
        curves(rows),
        "<h2>Final metrics</h2>",
        _metrics_table(final) if final else muted("No final metric recorded."),
        "<h2>Log</h2>",
        f'<pre data-testid="run-log">{esc(chr(10).join(log))}</pre>' if log else muted("No log."),
    ]
    return page(f"Run {run.id}", body, active="/runs")


# -- pipelines --------------------------------------------------------------------------------


def pipelines_table(found: list[dict[str, Any]]) -> str:
    """Pipeline runs: pipeline, run (linked), outcome, reason, deployed, created."""
    if not found:
        return muted("No pipeline run yet (abyssal pipeline run FILE).")
    rows = []
    for p in found:
        run, summary = p["run"], p["summary"]
        href = f"/pipelines/{p['pipeline']}/{run.id}"
        rows.append(
            [
                esc(p["pipeline"]),
                link(href, run.id, "pipeline-link") if summary else esc(run.id),
                badge(summary.get("status") or run.status),
                esc(summary.get("reason") or ""),
                _ref_link(str(summary["deployed"])) if summary.get("deployed") else "-",
                short_time(run.info.get("created")),
            ]
        )
    headers = ["pipeline", "run", "outcome", "why", "deployed", "started"]
    return table(headers, rows, testid="pipelines-table", row_ids=[p["run"].id for p in found])


def pipelines_page(data: DashboardData) -> str:
    body = ["<h1>Pipeline runs</h1>", pipelines_table(data.pipeline_runs())]
    return page("Pipelines", body, active="/pipelines")


def pipeline_page(data: DashboardData, name: str, run_id: str) -> str:
    """One pipeline run: outcome, each attempt's steps, and each gate's decisions with reasons."""
    record, report = data.pipeline_run(name, run_id)
    report_link = (
        link(f"/pipelines/{name}/{run_id}/report", "the full HTML report", "report-link")
        if report
        else "no HTML report"
    )
    body = [
        f"<h1>Pipeline {esc(name)} {badge(record.status)}</h1>",
        f'<p data-testid="pipeline-reason"><b>{esc(record.reason or "no reason recorded")}</b></p>',
        facts(
            {
                "run": link(f"/runs/{run_id}", run_id),
                "deployed": _ref_link(str(record.deployed)) if record.deployed else "nothing",
                "finished": esc(record.finished or "-"),
                "took": f"{num(record.seconds, 3)} s",
                "report": report_link,
            },
            "pipeline-facts",
        ),
    ]
    for a in record.attempts:
        body.append(f"<h2>Attempt {a.index} {badge(a.status)}</h2>")
        steps = [
            [
                esc(s["name"]),
                badge(s["status"]),
                f"{num(finite(s['seconds']), 3)} s",
                esc(s["reason"] or ""),
            ]
            for s in a.steps
        ]
        body.append(table(["step", "status", "took", "why"], steps, testid="steps-table"))
        if a.train.get("ref"):
            body.append(f"<p>trained {_ref_link(str(a.train['ref']))}</p>")
        body += _gate_part(a)
    if not record.attempts:
        body.append(muted("No attempt was recorded."))
    return page(f"Pipeline {name}", body, active="/pipelines")


def _gate_part(attempt: Any) -> list[str]:
    if not attempt.gate:
        return [muted("No gate decision in this attempt.")]
    against = f" against production {esc(attempt.production)}" if attempt.production else ""
    rows = [
        [
            esc(c.get("metric")),
            value(c.get("value")),
            value(c.get("production")),
            '<span class="pass">pass</span>'
            if c.get("passed")
            else '<span class="fail">FAIL</span>',
            esc(c.get("why") or ""),
        ]
        for c in attempt.gate
    ]
    title = f"Gate of attempt {attempt.index}{against}"
    return [
        f"<h3>{title}</h3>",
        table(
            ["rule", "value", "production", "decision", "why"],
            rows,
            numeric={1, 2},
            testid="gate-table",
        ),
        svg_gate_chart(attempt.gate, title=title),
    ]


# -- audits -----------------------------------------------------------------------------------


def audits_page(data: DashboardData) -> str:
    """The newest audit of every audited version."""
    found = data.audits()
    rows = [
        [
            _ref_link(a["ref"]),
            badge("passed" if a["record"].get("passed") else "FAILED"),
            esc(a["record"].get("policy")),
            esc(
                ", ".join(
                    c.get("name", "?")
                    for c in a["record"].get("checks") or []
                    if not c.get("passed")
                )
                or "-"
            ),
            link(f"/audits/{a['ref'].replace(':', '/')}", "report", "audit-report-link"),
        ]
        for a in found
    ]
    body = [
        "<h1>Audits</h1>",
        table(["version", "verdict", "policy", "failed checks", ""], rows, testid="audits-table")
        if rows
        else muted("No audit yet (abyssal audit MODEL --policy FILE)."),
    ]
    return page("Audits", body, active="/audits")


def audit_summary_page(ref: str, record: Mapping[str, Any]) -> str:
    """An audit recorded without its HTML page (``render=False``): its checks."""
    rows = [
        [esc(c.get("name")), badge("pass" if c.get("passed") else "fail"), esc(c.get("detail"))]
        for c in record.get("checks") or []
    ]
    body = [
        f"<h1>Audit of {esc(ref)} {badge('passed' if record.get('passed') else 'FAILED')}</h1>",
        muted(f"policy {record.get('policy')}; no HTML report was rendered"),
        table(["check", "result", "detail"], rows),
    ]
    return page(f"Audit of {ref}", body, active="/audits")
