"""Benchmark leaderboards as pages, read from ``$ABYSSAL_HOME/bench/<id>/leaderboard.json``
(schema 1, written by :mod:`abyssal.bench.report`).

Per task: its data and protocol, a bar chart of the primary metric with its confidence
interval as whiskers and published anchors as dashed reference lines, the leaderboard table
(rank, model linked to its version, the primary metric with ``[low, high]``, the other
metrics, the paired test against the leader), the anchors, and the perturbation and slice
tables.

Example:
    >>> html = bench_page(data, data.bench_run("20261130-011500-tabular"))  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from abyssal.bench.report import environment_line
from abyssal.pipeline.charts import esc, finite, num
from abyssal.ui.data import DashboardData, NotFound
from abyssal.ui.layout import facts, interval, link, muted, page, short_time, table
from abyssal.ui.pages import bench_table
from abyssal.ui.svg import svg_interval_bars


def bench_index_page(data: DashboardData) -> str:
    body = ["<h1>Benchmark runs</h1>", bench_table(data.bench_runs())]
    return page("Benchmarks", body, active="/bench")


def bench_page(data: DashboardData, board: Mapping[str, Any]) -> str:
    """One benchmark run: its environment, then each task's leaderboard."""
    bench_id = str(board.get("id"))
    own = [
        link(f"/bench/{bench_id}/{n}", n)
        for n in ("leaderboard.html", "leaderboard.md")
        if (data.home / "bench" / bench_id / n).is_file()
    ]
    models = _model_links(data, board)
    body = [
        f"<h1>{esc(board.get('title') or board.get('suite') or bench_id)}</h1>",
        facts(
            {
                "run": esc(bench_id),
                "suite": esc(board.get("suite")),
                "created": short_time(board.get("created")),
                "models": "<br>".join(_linked(models, str(m)) for m in board.get("models") or []),
                "environment": esc(environment_line(board)),
                "command": f"<code>{esc(board.get('command') or '-')}</code>",
                "files": " · ".join(own) or "-",
            },
            "bench-facts",
        ),
    ]
    if board.get("error"):
        body.append(f'<p class="fail">{esc(board["error"])}</p>')
    tasks = [t for t in board.get("tasks") or [] if isinstance(t, Mapping)]
    for k, task in enumerate(tasks):
        body += task_section(task, models, k)
    if not tasks:
        body.append(muted("This benchmark run has no task."))
    return page(str(board.get("title") or bench_id), body, active="/bench")


def _model_links(data: DashboardData, board: Mapping[str, Any]) -> dict[str, str]:
    """Each model ref of the run -> a link to its version page (text when not stored here)."""
    refs = {r for m in board.get("models") or [] for r in str(m).split(",")}
    for task in board.get("tasks") or []:
        for result in (task.get("results") or []) if isinstance(task, Mapping) else []:
            if isinstance(result, Mapping) and result.get("model"):
                refs.update(str(result["model"]).split(","))
    out = {}
    for ref in refs:
        name, _, selector = ref.partition(":")
        try:
            mv = data.version(name, selector or "latest")
        except NotFound:
            out[ref] = esc(ref)
            continue
        out[ref] = link(f"/models/{mv.name}/{mv.version}", ref, "bench-model-link")
    return out


def _linked(models: Mapping[str, str], label: str) -> str:
    """A model argument as links: one version, or pooled folds (``a:1,a:2,...``) each linked."""
    return ", ".join(models.get(ref, esc(ref)) for ref in label.split(","))


def task_section(task: Mapping[str, Any], models: Mapping[str, str], index: int = 0) -> list[str]:
    """One task: header, chart, leaderboard, anchors, perturbations and slices."""
    primary = str(task.get("primary") or "")
    results = sorted(
        [r for r in task.get("results") or [] if isinstance(r, Mapping)],
        key=lambda r: finite(r.get("rank")) or 1e9,
    )
    anchors = [a for a in task.get("anchors") or [] if isinstance(a, Mapping)]
    protocol = task.get("protocol") if isinstance(task.get("protocol"), Mapping) else {}
    confidence = finite(task.get("confidence"))
    level = f"{100 * confidence:g} %" if confidence is not None else "-"
    name = str(task.get("name") or f"task {index}")
    out = [
        f'<h2 id="task-{esc(name)}" data-testid="task">{esc(task.get("title") or name)}</h2>',
        f'<p class="muted">{esc(task.get("data") or "")} · solution {esc(task.get("solution"))}'
        f" · protocol {esc(', '.join(f'{k}={v}' for k, v in protocol.items()) or '-')}"
        f" · primary metric <b>{esc(primary)}</b> · {level} intervals</p>",
    ]
    if not results:
        return [*out, muted("No result for this task.")]
    bars = [(str(r.get("model")), *_metric(r, primary)) for r in results]
    marks = [
        (f"{a.get('name')}", a.get("value"))
        for a in anchors
        if a.get("metric") in (None, primary) and finite(a.get("value")) is not None
    ]
    out.append(
        svg_interval_bars(
            f"{name}: {primary}", bars, anchors=marks, testid=f"leaderboard-chart-{index}"
        )
    )
    out.append(_leaderboard_table(task, results, models, index))
    if anchors:
        out.append("<h3>Published references</h3>")
        out.append(_anchors_table(anchors))
    out += _perturbations(results, primary, models)
    out += _slices(results, primary, models)
    return out


def _metric(result: Mapping[str, Any], name: str) -> tuple[Any, Any, Any]:
    """``(value, low, high)`` of one metric of a result (``None`` for what is missing)."""
    found = (result.get("metrics") or {}).get(name)
    if isinstance(found, Mapping):
        return found.get("value"), found.get("low"), found.get("high")
    return found, None, None


def _leaderboard_table(
    task: Mapping[str, Any],
    results: Sequence[Mapping[str, Any]],
    models: Mapping[str, str],
    index: int,
) -> str:
    primary = str(task.get("primary") or "")
    others = [str(m) for m in task.get("metrics") or [] if m != primary]
    rows = []
    for r in results:
        model = str(r.get("model"))
        rows.append(
            [
                num(r.get("rank")),
                _linked(models, model),
                interval(*_metric(r, primary)),
                *(interval(*_metric(r, m)) for m in others),
                num(r.get("n")),
                _versus(r.get("versus")),
            ]
        )
    headers = [
        "rank",
        "model",
        f"{esc(primary)} [low, high]",
        *map(esc, others),
        "n",
        "paired test vs the leader",
    ]
    return table(
        headers,
        rows,
        numeric={0, 2, *range(3, 4 + len(others))},
        testid=f"leaderboard-{index}",
        row_ids=[str(r.get("model")) for r in results],
    )


def _versus(versus: Any) -> str:
    """The paired test against the leader: the difference, its interval and p-values."""
    if not isinstance(versus, Mapping):
        return '<span class="muted">leader</span>'
    p, adjusted = finite(versus.get("p_value")), finite(versus.get("p_adjusted"))
    significant = adjusted is not None and adjusted < 0.05
    verdict = (
        '<span class="fail">worse</span>'
        if significant
        else '<span class="muted">no significant difference</span>'
    )
    diff = interval(versus.get("difference"), versus.get("low"), versus.get("high"))
    return (
        f"{esc(versus.get('metric'))} Δ {diff} vs {esc(versus.get('model'))}; "
        f"p = {num(p, 3)}, adjusted {num(adjusted, 3)}: {verdict}"
    )


def _anchors_table(anchors: Sequence[Mapping[str, Any]]) -> str:
    rows = []
    for a in anchors:
        url = str(a.get("url") or "")
        source = esc(a.get("source") or "")
        if url.startswith(("https://", "http://")):
            source = f'{source} <a href="{esc(url)}" rel="noreferrer">link</a>'
        rows.append([esc(a.get("name")), esc(a.get("metric")), num(a.get("value")), source])
    return table(["reference", "metric", "value", "source"], rows, numeric={2}, testid="anchors")


def _perturbations(
    results: Sequence[Mapping[str, Any]], primary: str, models: Mapping[str, str]
) -> list[str]:
    rows = []
    for r in results:
        model = str(r.get("model"))
        for p in r.get("perturbations") or []:
            if isinstance(p, Mapping):
                rows.append(
                    [
                        _linked(models, model),
                        esc(p.get("name")),
                        interval(*_metric(p, primary)),
                        _drop(p.get("drop")),
                    ]
                )
    if not rows:
        return []
    return [
        "<h3>Robustness: perturbed inputs</h3>",
        table(
            ["model", "perturbation", f"{esc(primary)} [low, high]", "drop"],
            rows,
            numeric={2, 3},
            testid="perturbations",
        ),
    ]


def _drop(value: Any) -> str:
    """Clean minus perturbed (a paired comparison ``{difference, low, high, ...}``); marked
    when its interval lies above zero (a real drop)."""
    if not isinstance(value, Mapping):
        return "-"
    v, low = finite(value.get("difference")), finite(value.get("low"))
    if v is None:
        return "-"
    text = interval(v, value.get("low"), value.get("high"))
    return f'<span class="fail">{text}</span>' if low is not None and low > 0 else text


def _slices(
    results: Sequence[Mapping[str, Any]], primary: str, models: Mapping[str, str]
) -> list[str]:
    rows = []
    for r in results:
        model = str(r.get("model"))
        for s in r.get("slices") or []:
            if isinstance(s, Mapping):
                rows.append(
                    [
                        _linked(models, model),
                        esc(s.get("name")),
                        f"<code>{esc(s.get('where') or '')}</code>",
                        num(s.get("n")),
                        interval(*_metric(s, primary)),
                    ]
                )
    if not rows:
        return []
    return [
        "<h3>Slices</h3>",
        table(
            ["model", "slice", "where", "n", f"{esc(primary)} [low, high]"],
            rows,
            numeric={3, 4},
            testid="slices",
        ),
    ]
