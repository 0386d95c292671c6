"""The HTML report of a pipeline run: one self-contained page a person reads instead of logs.

:func:`write_report` reads a pipeline's state folder (``summary.json``, the step records under
``steps/``, validation's ``checks.json`` and ``drift.json``, each gate's ``gate.json``, the
production version's ``perf/<ref>.json``) and writes ``report.html`` beside them: the outcome,
each attempt's steps, the data checks and drift, each trained version's test metrics next to
production's, the gate's rules, what the steps added by plugins recorded (their outputs, or the
report of one that refused), and the performance test. Inline CSS and hand-written SVG
(escaped with :func:`xml.sax.saxutils.escape`): no JavaScript, no external file, no matplotlib.
Pieces a run did not reach (validation stopped it, a step failed) are left out with a note, and
a value that is missing or not a number shows as ``-``.

The charts live in :mod:`abyssal.pipeline.charts`; :func:`write_chart` saves one as a standalone
``.svg`` picture.

Example:
    >>> write_report("~/.abyssal/pipelines/fraud")  # doctest: +SKIP
    PosixPath('/root/.abyssal/pipelines/fraud/report.html')
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from abyssal.core.atomic import write_text_atomic
from abyssal.core.errors import AbyssalError
from abyssal.pipeline.charts import (
    PRODUCTION_COLOUR,
    PSI_MAJOR,
    SERIES_COLOURS,
    esc,
    finite,
    num,
    svg_drift_chart,
    svg_gate_chart,
    svg_grouped_bars,
)

REPORT_NAME = "report.html"
"""The report's file name in the state folder."""

CHARTS = ("drift", "gate", "metrics", "latency")
"""The charts :func:`write_chart` can save."""

PERF_COLUMNS = (
    ("p50_ms", "p50 (ms)"),
    ("p99_ms", "p99 (ms)"),
    ("throughput", "items/s"),
    ("size_mb", "size (MB)"),
    ("cost_per_1000", "cost per 1,000"),
)
"""The performance test's figures, as the report's table shows them."""

STATUS_COLOURS = {
    "deployed": "#2e7d32",
    "done": "#2e7d32",
    "skipped": "#607d8b",
    "stopped": "#b26a00",
    "refused": "#d84315",
    "failed": "#b71c1c",
    "not_run": "#9e9e9e",
}
"""Badge colours by status; any other status is grey."""


# -- what a run recorded ---------------------------------------------------------------------


@dataclass
class Attempt:
    """One attempt of a run (``validate, train-k, perf-k, gate-k, deploy``).

    Attributes:
        index: ``k``.
        status: ``done``, ``stopped`` or ``failed``.
        steps: each step's ``name, status, seconds, reason, outputs, report`` (the report of a
            stopped or failed step: its findings, failed checks or traceback).
        train: the training step's outputs (``ref, overrides, metrics``); ``{}`` if it did not run.
        perf: the performance test's outputs; ``{}`` if it did not run.
        gate: the gate's rule checks (``metric, value, passed, why, production``).
        production: the production version the gate compared with, if any.
    """

    index: int
    status: str
    steps: list[dict[str, Any]]
    train: dict[str, Any] = field(default_factory=dict)
    perf: dict[str, Any] = field(default_factory=dict)
    gate: list[dict[str, Any]] = field(default_factory=list)
    production: str | None = None


@dataclass
class PipelineRecord:
    """Everything the report shows, read from a state folder by :func:`read_run`.

    Attributes:
        state: the state folder.
        name: the pipeline's name.
        status: ``deployed``, ``stopped``, ``refused`` or ``failed``.
        reason: one line on why it ended.
        deployed: the version deployed, if any; ``previous``: the one it replaced.
        finished: when the run ended (local time), if known; ``seconds``: how long it took.
        attempts: in order.
        validation: the validate step's outputs; ``checks``, ``drift``: its reports, if any.
        production: the production version the last gate compared with, if any.
        production_perf: its performance figures, if an earlier run recorded them.
    """

    state: Path
    name: str
    status: str
    reason: str
    deployed: str | None = None
    previous: str | None = None
    finished: str | None = None
    seconds: float | None = None
    attempts: list[Attempt] = field(default_factory=list)
    validation: dict[str, Any] = field(default_factory=dict)
    checks: dict[str, Any] | None = None
    drift: dict[str, Any] | None = None
    production: str | None = None
    production_perf: dict[str, Any] = field(default_factory=dict)


def read_run(state: str | Path) -> PipelineRecord:
    """Read what a pipeline run recorded in ``state``.

    Args:
        state: a pipeline's state folder.

    Returns:
        The run's record.

    Raises:
        AbyssalError: ``state`` has no ``summary.json``, or it is not a JSON object.
    """
    root = Path(state).expanduser()
    summary = _read_json(root / "summary.json", required=True)
    if summary is None:
        raise AbyssalError(
            f"{root}: no summary.json (a pipeline run writes it when it ends); is this a "
            "pipeline's state folder, and did its run end?"
        )
    if not isinstance(summary, dict):
        raise AbyssalError(f"{root / 'summary.json'}: expected a JSON object, not {summary!r:.60}")
    attempts = [_attempt(root, k, a) for k, a in enumerate(_dicts(summary.get("attempts")))]
    run = PipelineRecord(
        state=root,
        name=str(summary.get("pipeline") or root.name),
        status=str(summary.get("status") or "unknown"),
        reason=str(summary.get("reason") or ""),
        deployed=summary.get("deployed"),
        attempts=attempts,
        seconds=finite(summary.get("seconds")),
        finished=_finished(root, summary),
    )
    deploy = _record(root, "deploy")
    if run.deployed and deploy.get("status") == "done":
        run.previous = (deploy.get("outputs") or {}).get("previous")
    _read_validation(root, run)
    run.production = next((a.production for a in reversed(attempts) if a.production), None)
    if run.production:
        perf = _read_json(root / "perf" / f"{str(run.production).replace(':', '@')}.json")
        run.production_perf = perf if isinstance(perf, dict) else {}
    return run


def _read_json(path: Path, *, required: bool = False) -> Any:
    """The file's JSON, or ``None`` if it is missing (or unreadable, unless ``required``)."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        if required:
            raise AbyssalError(f"{path}: not readable JSON ({e})") from e
        return None


def _dicts(value: Any) -> list[dict[str, Any]]:
    """The mappings in a JSON list (anything else is left out)."""
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _record(root: Path, name: str) -> dict[str, Any]:
    record = _read_json(root / "steps" / f"{name}.json")
    return record if isinstance(record, dict) else {}


def _finished(root: Path, summary: Mapping[str, Any]) -> str | None:
    """When the run ended: its start plus its duration, else the last step record's time."""
    started, seconds = finite(summary.get("started")), finite(summary.get("seconds"))
    if started is not None and seconds is not None:
        return time.strftime("%Y-%m-%d %H:%M:%S %z", time.localtime(started + seconds))
    names = [s.get("name") for a in _dicts(summary.get("attempts")) for s in _dicts(a.get("steps"))]
    times = [str(_record(root, str(n)).get("finished") or "") for n in names]
    return max(times, default="") or None


BUILTIN_KINDS = ("validate", "train", "perf", "gate", "deploy")
"""The built-in steps; any other step was added to the pipeline (a plugin's)."""


def step_kind(name: str) -> str:
    """The step a recorded name is of: ``gate-1`` -> ``gate``, ``backtest-0`` -> ``backtest``,
    ``validate`` -> ``validate``."""
    base, _, suffix = name.rpartition("-")
    return base if base and suffix.isdigit() else name


def _attempt(root: Path, k: int, attempt: Mapping[str, Any]) -> Attempt:
    steps = [_step(root, s) for s in _dicts(attempt.get("steps"))]
    out = Attempt(k, str(attempt.get("status") or "unknown"), steps)
    for step in steps:
        kind, outputs = step_kind(step["name"]), step["outputs"]
        if kind == "train" and outputs:
            out.train = outputs
        elif kind == "perf" and outputs:
            out.perf = outputs
        elif kind == "gate" and step["status"] in ("done", "skipped", "stopped"):
            found = outputs or step["report"]
            checks = found.get("checks") or _read_json(root / "steps" / step["name"] / "gate.json")
            out.gate, out.production = _dicts(checks), found.get("production")
    return out


def _step(root: Path, step: Mapping[str, Any]) -> dict[str, Any]:
    """A summary's step, with the outputs and report of its record when that record is the
    same run's (a step that did not run may have an older record)."""
    name, status = str(step.get("name") or "?"), str(step.get("status") or "?")
    record = _record(root, name)
    same = record.get("status") == status or (
        status == "skipped" and record.get("status") == "done"
    )
    outputs = step.get("outputs") or (record.get("outputs") if same else None)
    report = record.get("report") if same and status in ("stopped", "failed") else None
    return {
        "name": name,
        "status": status,
        "seconds": step.get("seconds", record.get("seconds") if same else None),
        "reason": step.get("reason"),
        "outputs": outputs if isinstance(outputs, dict) else {},
        "report": report if isinstance(report, dict) else {},
    }


def _read_validation(root: Path, run: PipelineRecord) -> None:
    """Validation's outputs and reports; a drift report is kept only if this run compared."""
    step = next((s for a in run.attempts for s in a.steps if s["name"] == "validate"), None)
    if step is None:
        return
    run.validation = step["outputs"]
    folder = root / "steps" / "validate"
    checks = step["report"].get("checks") or _read_json(folder / "checks.json")
    run.checks = checks if isinstance(checks, dict) else None
    v = run.validation
    compared = not v or "drifted" in v or "drift_error" in v
    drift = _read_json(folder / "drift.json") if compared else None
    run.drift = drift if isinstance(drift, dict) else None


# -- values ----------------------------------------------------------------------------------


def _badge(status: Any) -> str:
    colour = STATUS_COLOURS.get(str(status), "#757575")
    return f'<span class="badge" style="background:{colour}">{esc(status)}</span>'


# -- charts ----------------------------------------------------------------------------------


def _test_metrics(run: PipelineRecord) -> list[str]:
    """The metrics to compare: each attempt's ``test_*`` (not interval bounds or counts), then
    the other metrics the gate checked (not performance figures)."""
    names: list[str] = []
    perf = {k for k, _ in PERF_COLUMNS}
    for a in run.attempts:
        for k in a.train.get("metrics") or {}:
            if k.startswith("test_") and not k.endswith(("_low", "_high", "_positives")):
                names.append(k)
        names += [str(c.get("metric")) for c in a.gate if c.get("metric") not in perf]
    return list(dict.fromkeys(names))


def _production_values(run: PipelineRecord) -> dict[str, Any]:
    """Production's values as the last gate that compared with it recorded them."""
    out: dict[str, Any] = {}
    for a in run.attempts:
        out.update({str(c.get("metric")): c["production"] for c in a.gate if "production" in c})
    return out


def metrics_chart(run: PipelineRecord) -> str:
    """Each trained version's test metrics next to production's (:func:`svg_grouped_bars`)."""
    trained = [a for a in run.attempts if a.train]
    names = _test_metrics(run)
    production = _production_values(run)
    series = [f"attempt {a.index}: {a.train.get('ref', '?')}" for a in trained]
    rows = [[(a.train.get("metrics") or {}).get(n) for a in trained] for n in names]
    if run.production and any(n in production for n in names):
        series.append(f"production: {run.production}")
        rows = [[*row, production.get(n)] for row, n in zip(rows, names, strict=True)]
    colours = [*SERIES_COLOURS[: len(trained)], PRODUCTION_COLOUR]
    return svg_grouped_bars(names, series, rows, title="Test metrics", colours=colours)


def latency_chart(run: PipelineRecord) -> str:
    """The latency distribution of each attempt and of production: per-call milliseconds at
    the fastest call, p10, p25, p50, p75, p90, p99 and the slowest (:func:`svg_grouped_bars`;
    a record without the spread shows p50 and p99 only)."""
    groups, records = [], []
    for a in run.attempts:
        if a.perf:
            groups.append(f"attempt {a.index}: {a.train.get('ref', '?')}")
            records.append(a.perf)
    production = _production_perf(run)
    if production:
        groups.append(f"production: {production['ref']}")
        records.append(production)
    spread = all(isinstance(r.get("spread_ms"), dict) for r in records) and records
    keys = list(records[0]["spread_ms"]) if spread else ["p50", "p99"]
    names = [{"p0": "fastest", "p100": "slowest"}.get(k, k) for k in keys]
    rows = [
        [(r["spread_ms"] if spread else {"p50": r.get("p50_ms"), "p99": r.get("p99_ms")}).get(k)
         for k in keys]
        for r in records
    ]  # fmt: skip
    shades = SPREAD_SHADES[-len(keys) :] if spread else ("#3b6fb6", "#e08a2c")
    title = "Latency per call: its distribution over the timed calls"
    labels = [f"{n} (ms)" for n in names]
    return svg_grouped_bars(groups, labels, rows, colours=shades, title=title)


SPREAD_SHADES = ("#c6dbef", "#9ecae1", "#6baed6", "#4292c6", "#2171b5", "#08519c", "#08306b",
                 "#041c40")  # fmt: skip
"""Light (fastest call) to dark (slowest), one per latency percentile."""


def _production_perf(run: PipelineRecord) -> dict[str, Any]:
    """Production's performance figures (its perf record, else the gate's values), with
    ``ref``; ``{}`` when neither has one."""
    gated = {k: v for k, v in _production_values(run).items() if k in dict(PERF_COLUMNS)}
    figures = {**gated, **run.production_perf}
    return {"ref": run.production, **figures} if run.production and figures else {}


def write_chart(state: str | Path, out: str | Path, chart: str = "drift") -> Path:
    """Save one chart of a run as a standalone SVG picture (for a README).

    Args:
        state: the pipeline's state folder.
        out: the ``.svg`` file to write (atomically).
        chart: one of :data:`CHARTS`; ``gate`` draws the last gate that ran.

    Returns:
        ``out``.

    Raises:
        AbyssalError: an unknown chart, or one the run has no data for.

    Example:
        >>> write_chart("~/.abyssal/pipelines/fraud", "drift.svg")  # doctest: +SKIP
        PosixPath('drift.svg')
    """
    if chart not in CHARTS:
        raise AbyssalError(f"chart {chart!r}: choose one of {', '.join(CHARTS)}")
    run = read_run(state)
    gated = [a for a in run.attempts if a.gate]
    missing = {
        "drift": run.drift is None and "no drift report (steps/validate/drift.json)",
        "gate": not gated and "no gate checks (no gate ran)",
        "metrics": not any(a.train for a in run.attempts) and "no trained version",
        "latency": not (any(a.perf for a in run.attempts) or _production_perf(run))
        and "no performance test",
    }[chart]
    if missing:
        raise AbyssalError(f"{run.state}: cannot draw the {chart} chart: {missing}")
    if chart == "drift":
        svg = _drift_svg(run)
    elif chart == "gate":
        svg = svg_gate_chart(gated[-1].gate, title=_gate_title(gated[-1]))
    else:
        svg = metrics_chart(run) if chart == "metrics" else latency_chart(run)
    return write_text_atomic(Path(out), '<?xml version="1.0" encoding="UTF-8"?>\n' + svg + "\n")


def _drift_svg(run: PipelineRecord) -> str:
    drift = run.drift or {}
    threshold = finite((drift.get("thresholds") or {}).get("psi"))
    return svg_drift_chart(_dicts(drift.get("features")), threshold or PSI_MAJOR)


def _gate_title(a: Attempt) -> str:
    against = f" against production {a.production}" if a.production else ""
    return f"Gate of attempt {a.index}: {a.train.get('ref', '?')}{against}"


# -- the page --------------------------------------------------------------------------------

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;max-width:980px;
margin:24px auto;padding:0 12px;color:#222;line-height:1.45}
h1{font-size:24px;margin:0 0 8px}h2{font-size:19px;border-bottom:1px solid #ddd;padding-bottom:4px;
margin-top:32px}h3{font-size:15px;margin:18px 0 4px}
table{border-collapse:collapse;width:100%;margin:8px 0;font-size:13px}
th,td{border-bottom:1px solid #e6e6e6;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f5f5f5}td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td,p{overflow-wrap:anywhere}.muted{color:#666}.fail{color:#c62828;font-weight:600}
.pass{color:#2e7d32}.badge{display:inline-block;padding:1px 10px;border-radius:10px;color:#fff;
font-weight:600;font-size:13px}h1 .badge{font-size:16px;vertical-align:middle}
.time{display:inline-block;height:10px;background:#90a4ae;margin-right:6px}
pre{background:#f5f5f5;padding:8px;overflow-x:auto;font-size:12px;white-space:pre-wrap}
svg{max-width:100%;height:auto;display:block;margin:8px 0}
"""


def render_report(state: str | Path) -> str:
    """The HTML report of the run recorded in ``state`` (see the module's docstring).

    Args:
        state: the pipeline's state folder.

    Returns:
        One self-contained HTML page.

    Raises:
        AbyssalError: ``state`` is not a pipeline's state folder (see :func:`read_run`).
    """
    run = read_run(state)
    body = [
        *_headline(run),
        *_steps_section(run),
        *_validation_section(run),
        *_metrics_section(run),
        *_gate_section(run),
        *_added_section(run),
        *_perf_section(run),
    ]
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(run.name)}: {esc(run.status)}</title><style>{CSS}</style></head><body>",
        *body, "</body></html>",
    ]) + "\n"  # fmt: skip


def write_report(state: str | Path) -> Path:
    """Write :func:`render_report`'s page to ``report.html`` in ``state``, atomically.

    Args:
        state: the pipeline's state folder.

    Returns:
        The report's path.

    Example:
        >>> write_report("~/.abyssal/pipelines/fraud")  # doctest: +SKIP
        PosixPath('/root/.abyssal/pipelines/fraud/report.html')
    """
    html = render_report(state)
    return write_text_atomic(Path(state).expanduser() / REPORT_NAME, html)


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], numeric: set[int]) -> str:
    """A table of already-escaped cells; the columns in ``numeric`` align right."""
    head = "".join(f"<th>{h}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f'<td{" class=n" if i in numeric else ""}>{c}</td>'
                         for i, c in enumerate(row)) + "</tr>"
        for row in rows
    )  # fmt: skip
    return f"<table><tr>{head}</tr>{body}</table>"


def _headline(run: PipelineRecord) -> list[str]:
    facts = []
    if run.deployed:
        replaced = f" (replacing {esc(run.previous)})" if run.previous else ""
        facts.append(f"deployed <b>{esc(run.deployed)}</b>{replaced}")
    else:
        facts.append("nothing deployed")
    facts.append(f"finished {esc(run.finished or 'at an unknown time')}")
    if run.seconds is not None:
        facts.append(f"took {num(run.seconds, 3)} s")
    facts.append(f"{len(run.attempts)} attempt(s)")
    return [
        f"<h1>Pipeline {esc(run.name)} {_badge(run.status)}</h1>",
        f'<p class="reason"><b>{esc(run.reason or "no reason recorded")}</b></p>',
        f'<p class="muted">{" · ".join(facts)} · records: {esc(run.state)}</p>',
    ]


def _steps_section(run: PipelineRecord) -> list[str]:
    out = ["<h2>Steps</h2>"]
    longest = max((finite(s["seconds"]) or 0.0 for a in run.attempts for s in a.steps), default=0)
    for a in run.attempts:
        out.append(f"<h3>Attempt {a.index} {_badge(a.status)}</h3>")
        rows = []
        for s in a.steps:
            seconds = None if s["status"] == "not_run" else finite(s["seconds"])
            width = 0 if not seconds or not longest else max(1, round(120 * seconds / longest))
            bar = f'<span class="time" style="width:{width}px"></span>' if width else ""
            took = "-" if seconds is None else f"{bar}{num(seconds, 3)} s"
            rows.append([esc(s["name"]), _badge(s["status"]), took, esc(s["reason"] or "")])
        out.append(_table(["step", "status", "seconds", "reason"], rows, set()))
        for s in a.steps:
            if s["status"] == "failed" and s["report"]:
                error = esc(s["report"].get("error") or "error")
                trace = esc(s["report"].get("traceback") or "no traceback recorded")
                out.append(f"<details open><summary>{esc(s['name'])} failed: {error}"
                           f"</summary><pre>{trace}</pre></details>")  # fmt: skip
    if not run.attempts:
        out.append('<p class="muted">No attempt was recorded.</p>')
    return out


def _validation_section(run: PipelineRecord) -> list[str]:
    out = ["<h2>Data validation</h2>"]
    v, checks = run.validation, run.checks or {}
    if v.get("checked") is False:
        out.append(f'<p class="muted">Not checked: {esc(v.get("table"))}: {esc(v.get("why"))}</p>')
    source = checks.get("source") or v.get("table")
    rows, columns = checks.get("rows", v.get("rows")), checks.get("columns")
    errors, warnings = (
        checks.get("errors", v.get("errors")),
        checks.get("warnings", v.get("warnings")),
    )
    if checks or v.get("checked"):
        out.append(f"<p>{esc(source)}: {num(rows)} rows, {num(columns)} columns, "
                   f"{num(errors)} error(s), {num(warnings)} warning(s).</p>")  # fmt: skip
    findings = _dicts(checks.get("findings"))
    table_rows = [
        [f'<span class="{"fail" if f.get("severity") == "error" else ""}">'
         f"{esc(f.get('severity'))}</span>", esc(f.get("check")), esc(f.get("column")),
         num(f.get("count")), esc(", ".join(str(r) for r in f.get("rows") or []) or "-"),
         esc(f.get("message"))]
        for f in findings
    ]  # fmt: skip
    if table_rows:
        headers = ["severity", "check", "column", "count", "example rows", "message"]
        out.append(_table(headers, table_rows, {3}))
    elif checks:
        out.append('<p class="pass">Every check passed.</p>')
    out += _drift_part(run)
    return out


def _drift_part(run: PipelineRecord) -> list[str]:
    reference = run.validation.get("reference")
    if run.validation.get("drift_error"):
        return [f"<p class=fail>Drift not measured: {esc(run.validation['drift_error'])}</p>"]
    if run.drift is None:
        checked = run.validation.get("checked") and not reference
        why = "no production version's data to compare with" if checked else "not measured"
        return [f'<p class="muted">Drift: no report ({why}).</p>']
    drifted = [str(d) for d in run.drift.get("drifted") or []]
    against = f" against {esc(reference)}'s training data" if reference else ""
    out = [f"<h3>Drift{against}</h3>",
           f"<p>{len(drifted)} feature(s) drifted: {esc(', '.join(drifted) or 'none')}.</p>",
           _drift_svg(run)]  # fmt: skip
    skipped = run.drift.get("skipped") or {}
    if isinstance(skipped, dict) and skipped:
        items = "; ".join(f"{esc(k)} ({esc(v)})" for k, v in skipped.items())
        out.append(f'<p class="muted">Not compared: {items}</p>')
    return out


def _metrics_section(run: PipelineRecord) -> list[str]:
    out = ["<h2>Trained versions</h2>"]
    trained = [a for a in run.attempts if a.train]
    if not trained:
        return [*out, '<p class="muted">No version was trained in this run.</p>']
    production, names = _production_values(run), _test_metrics(run)
    prod_ref = run.production
    headers = ["metric", *(f"attempt {a.index}: {esc(a.train.get('ref'))}" for a in trained)]
    if prod_ref:
        headers.append(f"production: {esc(prod_ref)}")
    rows = []
    for n in names:
        cells = [_with_interval(a.train.get("metrics") or {}, n) for a in trained]
        rows.append([esc(n), *cells, *([num(production.get(n))] if prod_ref else [])])
    out.append(_table(headers, rows, set(range(1, len(headers)))))
    for a in trained:
        if a.train.get("overrides"):
            extra = " ".join(str(o) for o in a.train["overrides"])
            out.append(f'<p class="muted">attempt {a.index} trained with {esc(extra)}</p>')
    if names:
        out.append(metrics_chart(run))
    return out


def _with_interval(metrics: Mapping[str, Any], name: str) -> str:
    """A metric with its confidence interval when recorded (``name_low``, ``name_high``)."""
    low, high = metrics.get(f"{name}_low"), metrics.get(f"{name}_high")
    span = f" [{num(low, 3)}, {num(high, 3)}]" if finite(low) is not None else ""
    return num(metrics.get(name)) + (f'<span class="muted">{span}</span>' if span else "")


def _gate_section(run: PipelineRecord) -> list[str]:
    out = ["<h2>Gate</h2>"]
    gated = [a for a in run.attempts if a.gate]
    for a in gated:
        out.append(f"<h3>{esc(_gate_title(a))}</h3>")
        rows = [
            [esc(c.get("metric")), num(c.get("value")), num(c.get("production")),
             '<span class="pass">pass</span>' if c.get("passed") else '<span class="fail">FAIL'
             "</span>", esc(c.get("why") or "")]
            for c in a.gate
        ]  # fmt: skip
        out.append(_table(["metric", "value", "production", "result", "why"], rows, {1, 2}))
        out.append(svg_gate_chart(a.gate, title=_gate_title(a)))
    if not gated:
        out.append('<p class="muted">No gate checked a version in this run.</p>')
    return out


def _added_section(run: PipelineRecord) -> list[str]:
    """What the steps a pipeline added (plugins) recorded: the outputs of each that passed, the
    report of each that refused the version (a failed one's traceback is in the steps)."""
    added = [(a, s) for a in run.attempts for s in a.steps
             if step_kind(s["name"]) not in BUILTIN_KINDS]  # fmt: skip
    if not added:
        return []
    out = ["<h2>Added steps</h2>"]
    for a, s in added:
        shown = s["outputs"] if s["status"] in ("done", "skipped") else s["report"]
        if s["status"] == "failed":
            shown = {}
        out.append(f"<h3>{esc(s['name'])} (attempt {a.index}) {_badge(s['status'])}</h3>")
        if s["reason"]:
            out.append(f'<p class="reason">{esc(s["reason"])}</p>')
        rows = [[esc(k), _cell(v)] for k, v in shown.items()]
        if rows:
            out.append(_table(["", "recorded"], rows, set()))
        elif s["status"] in ("done", "skipped"):
            out.append('<p class="muted">No outputs recorded.</p>')
    return out


def _cell(value: Any) -> str:
    """A recorded value, escaped: a number as :func:`num`, text as it is, anything else as
    JSON (cut at 400 characters)."""
    if finite(value) is not None or value is None:
        return num(value)
    if isinstance(value, str | bool):
        return esc(value)
    text = json.dumps(value, default=str)
    return esc(text if len(text) <= 400 else text[:399] + "…")


def _perf_section(run: PipelineRecord) -> list[str]:
    out = ["<h2>Performance</h2>"]
    rows = []
    for a in run.attempts:
        if a.perf:
            label = f"attempt {a.index}: {esc(a.train.get('ref', '?'))}"
            rows.append([label, num(a.perf.get("batch")),
                         *(num(a.perf.get(k)) for k, _ in PERF_COLUMNS)])  # fmt: skip
    production = _production_perf(run)
    if production:
        label = f"production: {esc(production['ref'])}"
        rows.append([label, num(production.get("batch")),
                     *(num(production.get(k)) for k, _ in PERF_COLUMNS)])  # fmt: skip
    if not rows:
        return [*out, '<p class="muted">No performance test ran in this run.</p>']
    headers = ["version", "batch", *(label for _, label in PERF_COLUMNS)]
    out.append(_table(headers, rows, set(range(1, len(headers)))))
    out.append(latency_chart(run))
    return out
