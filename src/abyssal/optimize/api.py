"""``abyssal optimize``: build faster versions of a model, prove each on measurements, keep winners.

For a subject (a registered version, or any model a benchmark wraps) and a target device, every
requested method builds a candidate, loads it back from its files, checks that its outputs agree
with the eager model's, measures it against the eager parent in the same process (warm-up, many
calls on fresh inputs, p50 and p99 at each batch size), and scores it on the solution's own
validation data. The guard accepts a candidate only if it is faster than the parent at the target
batch size and its metric is within the tolerance; :func:`optimize_version` registers the best
accepted candidate (or every one, ``keep="all"``) as a child version whose base is the parent.
Nothing is registered until every candidate has been measured, so a failure midway leaves the
store as it was.

Example:
    >>> report = optimize_version("fraud:3", target="cpu", methods=["compile", "onnx"])
    ... # doctest: +SKIP
    >>> print(report.render())  # doctest: +SKIP
"""

from __future__ import annotations

import math
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from abyssal.core.display import fmt, table
from abyssal.core.errors import AbyssalError
from abyssal.core.logs import quiet_loggers
from abyssal.optimize.candidates import (
    BuildContext,
    Candidate,
    build_candidate,
    check_target,
    method_summary,
    parameter_bytes,
    resolve_methods,
)
from abyssal.optimize.measure import Timing, measure
from abyssal.optimize.subject import Subject, output_tensors, subject_from_version, to_device

Log = Callable[[str], None]

SHOWN = 10
"""Rows of the operator and placement tables that ``render`` prints (JSON has them all)."""


def _table_dict(headed: tuple[list[str], list[list[Any]]]) -> list[dict[str, Any]]:
    headers, rows = headed
    return [dict(zip(headers, row, strict=True)) for row in rows]


@dataclass
class CandidateResult:
    """What one method gave.

    ``status`` is ``reference`` (the eager parent), ``accepted``, ``rejected`` (built and
    measured, but slower or less accurate) or ``failed`` (could not be built or run; ``reason``
    says where).
    """

    method: str
    status: Literal["reference", "accepted", "rejected", "failed"]
    reason: str
    timings: dict[int, Timing] = field(default_factory=dict)
    size_bytes: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    metric_delta: float | None = None
    max_abs_diff: float | None = None
    note: str = ""
    candidate: Candidate | None = field(default=None, repr=False)
    registered: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "status": self.status,
            "reason": self.reason,
            "timings": {str(b): t.to_dict() for b, t in self.timings.items()},
            "size_bytes": self.size_bytes,
            "metric_delta": self.metric_delta,
            "max_abs_diff": self.max_abs_diff,
            "note": self.note,
            "registered": self.registered,
        }


@dataclass
class OptimizeReport:
    """Everything one run measured: the eager parent, each candidate, the graph and the plan."""

    subject: str
    target: str
    target_batch: int
    batch_sizes: list[int]
    metric: str | None
    tolerance: float
    baseline: CandidateResult
    results: list[CandidateResult]
    mode: Literal["max", "min"] = "max"
    min_gain: float = 0.05
    graph: Any = None
    plan: Any = None
    graph_note: str = ""
    picture: Path | None = None

    @property
    def accepted(self) -> list[CandidateResult]:
        """Accepted candidates, fastest first at the target batch size."""
        ok = [r for r in self.results if r.status == "accepted"]
        return sorted(ok, key=lambda r: r.timings[self.target_batch].p50_ms)

    def rows(self) -> tuple[list[str], list[list[Any]]]:
        """The comparison table: one row per method, the eager parent first."""
        headers = ["method", "status"]
        for b in self.batch_sizes:
            headers += [f"p50 ms @{b}", f"p99 ms @{b}", f"items/s @{b}"]
        headers += ["size MB", f"Δ {self.metric or 'metric'}", "max |Δ out|", "why"]
        rows = []
        for r in [self.baseline, *self.results]:
            row: list[Any] = [r.method, r.status]
            for b in self.batch_sizes:
                t = r.timings.get(b)
                row += (
                    [f"{t.p50_ms:.3f}", f"{t.p99_ms:.3f}", f"{t.throughput:,.0f}"]
                    if t
                    else ["-", "-", "-"]
                )
            row += [
                f"{r.size_bytes / 1e6:.2f}" if r.size_bytes is not None else "-",
                f"{r.metric_delta:+.4f}" if r.metric_delta is not None else "-",
                f"{r.max_abs_diff:.1e}" if r.max_abs_diff is not None else "-",
                r.reason,
            ]
            rows.append(row)
        return headers, rows

    def render(self) -> str:
        """The table, the plan's summary and what was registered, as text."""
        headers, rows = self.rows()
        lines = [
            f"{self.subject} on {self.target}, guard at batch {self.target_batch}"
            f" (metric {self.metric or 'none'}, tolerance {fmt(self.tolerance)})",
            table(headers, rows),
        ]
        notes = [f"  {r.method}: {r.note}" for r in self.results if r.note]
        if notes:
            lines += ["notes:", *notes]
        if self.graph is not None:
            headers, rows = self.graph.table(top=SHOWN)
            lines += [f"operators (the {len(rows)} slowest of {len(self.graph.operators())}):"]
            lines.append(table(headers, rows))
        if self.plan is not None and self.graph is not None:
            headers, rows = self.plan.table(self.graph)
            more = f" (first {SHOWN} of {len(rows)})" if len(rows) > SHOWN else ""
            lines += [f"placement by module{more}:", table(headers, rows[:SHOWN])]
        if self.plan is not None:
            lines.append(f"placement {self.plan.summary()}")
        if self.graph_note:
            lines.append(f"graph: {self.graph_note}")
        if self.picture is not None:
            lines.append(f"graph picture: {self.picture}")
        registered = [f"{r.method} -> {r.registered}" for r in self.results if r.registered]
        lines.append(
            "registered: " + ", ".join(registered) if registered else "registered: nothing"
        )
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "subject": self.subject,
            "target": self.target,
            "target_batch": self.target_batch,
            "batch_sizes": self.batch_sizes,
            "metric": self.metric,
            "tolerance": self.tolerance,
            "min_gain": self.min_gain,
            "baseline": self.baseline.to_dict(),
            "results": [r.to_dict() for r in self.results],
            "plan": self.plan.summary() if self.plan is not None else None,
            "operators": _table_dict(self.graph.table()) if self.graph is not None else None,
            "placement": (
                _table_dict(self.plan.table(self.graph))
                if self.plan is not None and self.graph is not None
                else None
            ),
            "graph_note": self.graph_note,
        }


def optimize_subject(
    subject: Subject,
    target: str = "cpu",
    methods: Sequence[str] | None = None,
    *,
    batch_sizes: Sequence[int] = (1, 32),
    target_batch: int = 1,
    tolerance: float = 0.01,
    min_gain: float = 0.05,
    reps: int = 100,
    warmup: int = 5,
    budget_s: float = 20.0,
    analyse_graph: bool = True,
    picture: Path | None = None,
    workdir: Path | None = None,
    log: Log | None = None,
) -> OptimizeReport:
    """Build, check, measure and judge every method's candidate for ``subject``.

    Args:
        subject: the model and how to feed and score it.
        target: ``cpu`` or ``cuda``.
        methods: method or group names (``compile``, ``int8``, ``onnx``, ...); all by default.
        batch_sizes: measured sizes (only the first when the subject has no batch axis).
        target_batch: the size the guard compares at (must be among ``batch_sizes``).
        tolerance: the largest allowed loss of ``subject.metric`` (in its own units).
        min_gain: a candidate must be at least this fraction faster (p50) than eager (5% by
            default: run-to-run noise of a busy CPU is a few percent).
        reps, warmup, budget_s: per measurement (see :func:`~abyssal.optimize.measure.measure`).
        analyse_graph: capture and analyse the graph and plan placement (needed by the
            ``placement`` method).
        picture: write the coloured graph here (SVG).
        workdir: where candidates' files are built (a temporary folder by default; the caller
            keeps it alive while it registers candidates).
        log: progress lines.

    Returns:
        The report; ``candidate`` of each accepted result holds its files for registration.

    Raises:
        OptimizeError: an unknown method or target; ``cuda`` without a GPU.
    """
    say = log or (lambda _line: None)
    device = check_target(target)
    _check_options(batch_sizes, reps, warmup, tolerance, budget_s)
    chosen = resolve_methods(list(methods) if methods else None, target)
    sizes = list(dict.fromkeys(batch_sizes)) if subject.batched else [1]
    if not subject.batched:
        target_batch = 1
    if target_batch not in sizes:
        raise AbyssalError(f"target batch {target_batch} is not among the batch sizes {sizes}")
    workdir = Path(workdir or tempfile.mkdtemp(prefix="abyssal-optimize-"))
    subject.model.to(device).eval()

    def inputs_for(batch: int) -> Callable[[int], tuple]:
        return lambda seed: to_device(subject.make_inputs(batch, seed), device)

    def timings(run: Callable[..., Any], label: str) -> dict[int, Timing]:
        out = {}
        for b in sizes:
            out[b] = measure(
                run, inputs_for(b), b, device=device, warmup=warmup, reps=reps, budget_s=budget_s
            )
            say(f"  {label} @{b}: p50 {out[b].p50_ms:.3f} ms, p99 {out[b].p99_ms:.3f} ms")
        return out

    say(f"eager reference on {target}")
    base_metrics = _evaluate(subject, subject.model)
    baseline = CandidateResult(
        "eager",
        "reference",
        "the parent, as it runs today",
        timings(subject.model, "eager"),
        parameter_bytes(subject.model),
        base_metrics,
    )
    report = OptimizeReport(
        subject.name,
        target,
        target_batch,
        sizes,
        subject.metric,
        tolerance,
        baseline,
        [],
        mode=subject.mode,
        min_gain=min_gain,
    )
    assignment = None
    if analyse_graph:
        assignment = _analyse(subject, report, device, picture, say)
    load_context = _load_context(subject, device)
    reference = [output_tensors(subject.model(*inputs_for(sizes[-1])(seed))) for seed in (101, 102)]
    ctx = BuildContext(subject, device, workdir, load_context, assignment)
    for i, method in enumerate(chosen, 1):
        say(f"[{i}/{len(chosen)}] {method}: {method_summary(method)}")
        result = _try_candidate(
            method, ctx, report, reference, inputs_for(sizes[-1]), timings, min_gain
        )
        say(f"  -> {result.status}: {result.reason}")
        report.results.append(result)
    return report


def _check_options(
    batch_sizes: Sequence[int], reps: int, warmup: int, tolerance: float, budget_s: float
) -> None:
    """Refuse measurement settings that cannot give a result, naming the setting."""
    if not batch_sizes or any(not isinstance(b, int) or b < 1 for b in batch_sizes):
        raise AbyssalError(f"batch sizes must be whole numbers >= 1, got {list(batch_sizes)}")
    for name, value, low in (("reps", reps, 1), ("warmup", warmup, 0)):
        if not isinstance(value, int) or value < low:
            raise AbyssalError(f"{name} must be a whole number >= {low}, got {value!r}")
    for name, value in (("tolerance", tolerance), ("budget_s", budget_s)):
        if not math.isfinite(value) or value < 0:
            raise AbyssalError(f"{name} must be a finite number >= 0, got {value!r}")


def _try_candidate(
    method: str,
    ctx: BuildContext,
    report: OptimizeReport,
    reference: list[list[torch.Tensor]],
    reference_inputs: Callable[[int], tuple],
    timings: Callable[[Callable[..., Any], str], dict[int, Timing]],
    min_gain: float,
) -> CandidateResult:
    step = "build"
    try:
        started = time.perf_counter()
        cand = build_candidate(method, ctx)
        result = CandidateResult(
            method, "rejected", "", size_bytes=cand.size_bytes, note=cand.note, candidate=cand
        )
        ctx_time = time.perf_counter() - started
        step = "check outputs"
        with torch.inference_mode():
            got = [output_tensors(cand.module(*reference_inputs(seed))) for seed in (101, 102)]
        result.max_abs_diff = _max_diff(reference, got, method)
        step = "measure"
        result.timings = timings(cand.module, method)
        step = "evaluate"
        result.metrics = _evaluate(ctx.subject, cand.module, quiet=True)
    except Exception as exc:  # a failed candidate is reported, never fatal
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return CandidateResult(method, "failed", f"{step} failed: {message}"[:300])
    result.note = (result.note + f"; built in {ctx_time:.1f} s").lstrip("; ")
    _judge(result, report, min_gain)
    return result


def _judge(result: CandidateResult, report: OptimizeReport, min_gain: float) -> None:
    """Accept only what is faster at the target batch and within the metric tolerance."""
    b = report.target_batch
    parent, mine = report.baseline.timings[b].p50_ms, result.timings[b].p50_ms
    speedup = parent / mine if mine > 0 else math.inf
    faster = mine < parent * (1 - min_gain)
    metric = report.metric
    if metric and metric in result.metrics and metric in report.baseline.metrics:
        delta = result.metrics[metric] - report.baseline.metrics[metric]
        result.metric_delta = delta
        worse = -delta if report.mode == "max" else delta
        accurate = worse <= report.tolerance
    else:
        accurate = True
    if not faster:
        result.reason = f"{speedup:.2f}x eager p50 at batch {b}: not faster"
    elif not accurate:
        result.reason = (
            f"{metric} changed by {result.metric_delta:+.4f} (tolerance {report.tolerance})"
        )
    else:
        result.status = "accepted"
        result.reason = f"{speedup:.2f}x faster than eager at batch {b}"


def _max_diff(
    reference: list[list[torch.Tensor]], got: list[list[torch.Tensor]], method: str
) -> float:
    worst = 0.0
    for ref, out in zip(reference, got, strict=True):
        if len(ref) != len(out) or any(r.shape != o.shape for r, o in zip(ref, out, strict=True)):
            raise AbyssalError(
                f"{method} returns outputs of shapes {[tuple(o.shape) for o in out]}, "
                f"the model {[tuple(r.shape) for r in ref]}"
            )
        for r, o in zip(ref, out, strict=True):
            if not torch.isfinite(o).all():
                raise AbyssalError(f"{method} returns non-finite outputs")
            if r.numel():
                worst = max(worst, float((r - o).abs().max()))
    return worst


def _evaluate(subject: Subject, model: torch.nn.Module, quiet: bool = False) -> dict[str, float]:
    """The subject's metrics of ``model``; ``quiet``: without abyssal's warnings about the data,
    which the parent's evaluation has already shown."""
    if subject.evaluate is None:
        return {}
    with quiet_loggers(*(["abyssal"] if quiet else [])), torch.inference_mode():
        return dict(subject.evaluate(model))


def _load_context(subject: Subject, device: torch.device) -> Any:
    from abyssal.nn.variants import LoadContext

    example = subject.make_inputs(2 if subject.batched else 1, 0)
    return LoadContext(
        device=device,
        example_inputs=lambda: to_device(example, device),
        input_axes=subject.input_axes,
    )


def _analyse(
    subject: Subject, report: OptimizeReport, device: torch.device, picture: Path | None, say: Log
) -> dict[str, str] | None:
    """Capture and analyse the graph; plan placement where an accelerator exists."""
    from abyssal.nn.capture import CaptureError, capture
    from abyssal.optimize.graph import analyse, transfer_cost
    from abyssal.optimize.placement import CostGraph, cpu_only_plan, plan_placement

    # two items: export specialises an axis of size 1, which would fix the batch size
    inputs = to_device(subject.make_inputs(2 if subject.batched else 1, 0), "cpu")
    cpu_model = subject.model.to("cpu")
    try:
        try:
            captured = capture(cpu_model, inputs, subject.input_axes)
        except CaptureError as exc:
            report.graph_note = f"not captured, eager only: {exc}"
            say(f"graph: {report.graph_note}")
            return None
        devices = ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]
        say(f"graph: captured with {captured.method}; timing each operator on {', '.join(devices)}")
        try:
            graph = analyse(captured, inputs, devices)
        except Exception as exc:  # analysis is a report: a failure must not stop the methods
            report.graph_note = f"captured with {captured.method}; analysis failed: {exc}"[:300]
            say(f"graph: {report.graph_note}")
            return None
        report.graph = graph
        count = len(graph.operators())
        report.graph_note = f"captured with {captured.method} ({count} operators)" + (
            f"; {captured.note}" if captured.note else ""
        )
        if "cuda" in devices:
            plan = plan_placement(CostGraph.from_report(graph, transfer_cost(devices)))
        else:
            plan = cpu_only_plan(graph)
        report.plan = plan
        say(f"placement {plan.summary()}")
        if picture is not None:
            from abyssal.optimize.render import graph_svg

            report.picture = graph_svg(graph, plan, picture)
        return plan.assignment if "cuda" in devices else None
    finally:
        subject.model.to(device)


def optimize_version(
    ref: str,
    target: str = "cpu",
    methods: Sequence[str] | None = None,
    *,
    keep: Literal["best", "all"] = "best",
    store: Any = None,
    overrides: list[str] | None = None,
    picture: Path | None = None,
    log: Log | None = None,
    **options: Any,
) -> OptimizeReport:
    """Optimize the registered version ``ref`` and register what wins as child versions.

    Args:
        ref: the parent version.
        target: ``cpu`` or ``cuda``.
        methods: method or group names; all that apply to the target by default.
        keep: register the fastest accepted candidate, or every accepted one.
        store: the model store.
        overrides: ``key=value`` changes to the stored config (e.g. a moved ``data.path``).
        picture: write the graph coloured by device here (SVG).
        log: progress lines.
        options: passed to :func:`optimize_subject` (batch_sizes, target_batch, tolerance, ...).

    Returns:
        The report; registered results name their new version.

    Raises:
        OptimizeError: an unknown method or target, or ``cuda`` without a GPU (before anything
            is loaded).
    """
    from abyssal.core.store import ModelStore

    check_target(target)
    resolve_methods(list(methods) if methods else None, target)
    store = store or ModelStore()
    store.check_writable()
    subject, loaded = subject_from_version(ref, store=store, overrides=overrides)
    workdir = Path(tempfile.mkdtemp(prefix="abyssal-optimize-"))
    try:
        report = optimize_subject(
            subject, target, methods, picture=picture, workdir=workdir, log=log, **options
        )
        winners = report.accepted if keep == "all" else report.accepted[:1]
        for result in winners:
            result.registered = _register(store, loaded, report, result).ref
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return report


def _register(store: Any, loaded: Any, report: OptimizeReport, result: CandidateResult) -> Any:
    """Register an accepted candidate as a child version of the loaded parent."""
    parent = loaded.version
    cand = result.candidate
    assert cand is not None
    b = report.target_batch
    measurements = {
        "parent": {str(k): t.to_dict() for k, t in report.baseline.timings.items()},
        "candidate": {str(k): t.to_dict() for k, t in result.timings.items()},
        "parent_size_bytes": report.baseline.size_bytes,
        "size_bytes": result.size_bytes,
        "max_abs_diff": result.max_abs_diff,
        "metric": report.metric,
        "metric_delta": result.metric_delta,
    }
    config = {key: value for key, value in parent.config.items() if key != "optimization"}
    config["optimization"] = {
        "method": result.method,
        "variant": cand.variant,
        "recipe": cand.recipe,
        "target": report.target,
        "target_batch": b,
        "parent": parent.ref,
        "tolerance": report.tolerance,
        "measurements": measurements,
        "note": result.note,
    }
    plugin = _plugin_of(result.method)
    if plugin is not None:
        config["optimization"]["plugin"] = plugin
    metrics = dict(result.metrics)
    for size, t in result.timings.items():
        metrics[f"p50_ms@{size}"] = t.p50_ms
        metrics[f"p99_ms@{size}"] = t.p99_ms
    metrics["size_bytes"] = result.size_bytes
    lineage = {
        "parent": parent.ref,
        "method": result.method,
        "target": report.target,
        "device": _device_name(report.target),
    }
    return store.register(
        parent.name,
        artifacts=cand.artifacts,
        base=parent.ref,
        solution=parent.solution,
        config=config,
        metrics=metrics,
        lineage=lineage,
    )


def _plugin_of(method: str) -> dict[str, str] | None:
    """``{"package", "version"}`` of the plugin that provides ``method``; ``None`` for abyssal's."""
    from abyssal.nn.variants import VARIANTS

    origin = VARIANTS.origin(method)
    return None if origin is None else {"package": origin.package, "version": origin.version}


def _device_name(target: str) -> str:
    if target == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    import platform

    return platform.processor() or platform.machine()
