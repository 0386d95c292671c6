"""The steps of ``abyssal pipeline``: validate the data, train, test performance, gate, deploy.

Each function here builds one :class:`~abyssal.pipeline.dag.Step` of a :class:`PipelineConfig`;
:func:`~abyssal.pipeline.run.run_pipeline` chains them and retries a refused version with the
next retraining attempt. Validation and the gate end a run on purpose
(:class:`~abyssal.pipeline.dag.StepStopped`), with a report naming what failed.

:data:`STEPS` holds the step factories by the names a pipeline's ``steps`` list uses: the five
built in here, and those installed packages declare in the entry-point group
``abyssal.pipeline_steps`` (a bank's model-risk sign-off, a factory's golden-sample check). A
factory is called as ``factory(cfg, attempt, home)`` and returns a :class:`Step` named ``NAME``
(once for every attempt, like ``validate``) or ``NAME-ATTEMPT`` (once per trained candidate,
like ``gate-0``). It reads the built-in steps' outputs by their step names (``train-0``'s
``ref`` and ``metrics``, ``perf-0``, ``gate-0``) through ``needs``; it refuses the candidate by
raising :class:`~abyssal.pipeline.dag.StepStopped`, as the gate does.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from abyssal.core.config import load_config, resolve_paths
from abyssal.core.errors import AbyssalError, ConfigError, DataError, StoreError
from abyssal.core.home import using_home
from abyssal.core.registry import Registry
from abyssal.core.store import ModelStore
from abyssal.data.checks import TableSchema, check_table, infer_schema
from abyssal.data.drift import embedding_drift, table_drift
from abyssal.data.tables import is_table, read_table, trained_table
from abyssal.pipeline.dag import Step, StepContext, StepStopped
from abyssal.pipeline.spec import GateRule, PipelineConfig

PERF_METRICS = ("p50_ms", "p99_ms", "throughput", "size_mb", "cost_per_1000")
"""What the performance test measures (gate rules may name them)."""

StepFactory = Callable[[PipelineConfig, int, "str | Path | None"], Step]
"""``(cfg, attempt, home) -> Step``: builds one step of attempt ``attempt`` (0 first)."""

STEPS: Registry[StepFactory] = Registry("pipeline step", group="abyssal.pipeline_steps")
"""The steps a pipeline's ``steps`` list may name: the built-ins and installed plugins."""

BUILTIN_STEPS = ("validate", "train", "perf", "gate", "deploy")
"""The built-in steps, in their order (the default ``steps``)."""


def training_config(cfg: PipelineConfig, attempt: list[str]) -> Any:
    """The solution's resolved training config for an attempt's extra overrides."""
    from abyssal.solutions import get_solution

    solution = get_solution(cfg.solution)
    typed = load_config(solution.config_cls, cfg.config, [*cfg.overrides, *attempt])
    return resolve_paths(typed)


def _dotted(cfg: Any, key: str) -> Any:
    value = cfg
    for part in key.split("."):
        if not hasattr(value, part):
            raise ConfigError(f"validate.table: the training config has no key '{key}'")
        value = getattr(value, part)
    return value


def production(store: ModelStore, cfg: PipelineConfig) -> Any:
    """The version the deploy alias points at, or ``None`` (no model or no alias yet)."""
    try:
        if cfg.deploy.alias not in store.aliases(cfg.model):
            return None
        return store.resolve(f"{cfg.model}:{cfg.deploy.alias}")
    except StoreError:
        return None


# -- validate --------------------------------------------------------------------------------


def validate_step(cfg: PipelineConfig, attempt: int, home: str | Path | None) -> Step:
    """Check the training table (:func:`abyssal.data.checks.check_table`) against what the
    pipeline asks and, when a production version exists, against the table it was trained on
    (schema and drift). One step for every attempt (``attempt`` is not used): the data does not
    change between them."""
    train_cfg = training_config(cfg, [])
    table = _dotted(train_cfg, cfg.validate.table)

    def run(ctx: StepContext) -> dict[str, Any]:
        with using_home(home):
            current = production(ModelStore(), cfg)
        source = Path(str(table)) if table else None
        out: dict[str, Any] = {"table": str(table), "checked": False, "why": "not a table file"}
        problems: list[str] = []
        payload: dict[str, Any] = {}
        if source is not None and source.is_file() and is_table(source):
            out, problems, payload = check(ctx, source, current)
        if cfg.validate.embedding and current is not None and source and source.exists():
            embedded = _embedding_drift(cfg, current, source, ctx.folder, home)
            if embedded is not None:
                out["embedding_drift"] = embedded
                if embedded.get("drifted"):
                    problems.append(
                        f"the embeddings drifted from the production version's data (MMD² "
                        f"{embedded['mmd2']:.3g}, p {embedded['p_value']:.3g} < "
                        f"{cfg.validate.embedding_alpha})"
                    )
        if problems:
            shown = "; ".join(problems[:4]) + ("; ..." if len(problems) > 4 else "")
            raise StepStopped(f"{len(problems)} problem(s) in {source.name}: {shown}",
                              payload)  # fmt: skip
        return out

    def check(
        ctx: StepContext, path: Path, current: Any
    ) -> tuple[dict[str, Any], list[str], dict[str, Any]]:
        """The table's checks and drift: ``(outputs, problems, what a stop reports)``."""
        frame = read_table(path)
        reference = _reference_table(current, cfg)
        schema = _schema(frame if reference is None else reference, cfg)
        report = check_table(frame, schema, source=str(path))
        out: dict[str, Any] = {
            "table": str(path),
            "checked": True,
            "rows": report.rows,
            "errors": len(report.errors),
            "warnings": len(report.warnings),
            "reference": None if current is None else current.ref,
        }
        (ctx.folder / "checks.json").write_text(json.dumps(report.to_dict(), indent=1))
        (ctx.folder / "checks.txt").write_text(report.summary() + "\n")
        drifted: list[str] = []
        if reference is not None and cfg.validate.drift:
            try:  # cells the checks refused are left out of the comparison
                ignored = [c for c in cfg.validate.ignore if c in frame.columns]
                drift = table_drift(reference.drop(columns=ignored, errors="ignore"),
                                    _readable(frame, report, schema).drop(columns=ignored),
                                    psi_threshold=cfg.validate.psi)  # fmt: skip
            except DataError as e:
                out["drift_error"] = str(e)
            else:
                (ctx.folder / "drift.json").write_text(json.dumps(drift.to_dict(), indent=1))
                (ctx.folder / "drift.txt").write_text(drift.summary() + "\n")
                drifted = list(drift.drifted)
                compared = max(1, len(drift.features))
                out.update(drifted=drifted, drifted_share=round(len(drifted) / compared, 4))
        problems = [f"{f.column or 'table'}: {f.message}" for f in report.errors]
        if drifted and out["drifted_share"] > cfg.validate.max_drifted:
            problems.append(
                f"{len(drifted)} feature(s) drifted from the production version's data "
                f"({out['drifted_share']:.0%} > {cfg.validate.max_drifted:.0%}): "
                + ", ".join(drifted[:5])
            )
        if cfg.validate.pii != "off":
            found = _pii(frame, ctx.folder)
            out["pii"] = found
            if found and cfg.validate.pii == "stop":
                problems.append("personal data in " + "; ".join(found))
        return out, problems, {"checks": report.to_dict(), "drifted": drifted}

    files = (str(table),) if table and Path(str(table)).exists() else ()
    inputs = {"validate": _plain(cfg.validate), "production": _production_ref(cfg, home)}
    return Step("validate", run, inputs=inputs, files=files)


def _pii(frame: Any, folder: Path) -> list[str]:
    """Columns holding personal data, as ``"column (KINDS) in N rows, e.g. rows ..."``; the scan
    (kinds, columns, row numbers, never values) is kept in ``pii.json``."""
    from abyssal.data.pii import column_kinds, scan_table

    scan = scan_table(frame).to_dict()
    (folder / "pii.json").write_text(json.dumps(scan, indent=1))
    return [
        f"{c['column']} ({', '.join(column_kinds(c))}) in {c['rows']} rows, e.g. rows "
        + ", ".join(str(r) for r in c["examples"][:3])
        for c in scan["columns"]
    ]


def _embedding_drift(
    cfg: PipelineConfig, current: Any, source: Path, folder: Path, home: str | Path | None
) -> dict[str, Any] | None:
    """Embedding drift (:func:`abyssal.data.drift.embedding_drift`) between the data the
    production version was trained on and ``source``, both embedded by that version (a sample
    of ``validate.embedding_rows`` each), for solutions whose predictor can embed (text,
    images); ``None`` for the others or when the production data is gone."""
    from abyssal.solutions.loading import load_model

    value: Any = current.config.get("solution_config", current.config)
    for part in cfg.validate.table.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if not value or not Path(str(value)).exists():
        return None
    with using_home(home):
        loaded = load_model(current.ref, device="cpu")
    predictor = loaded.solution.predictor(loaded)
    if not hasattr(predictor, "embed_source"):
        return None
    rows = cfg.validate.embedding_rows
    try:
        before = predictor.embed_source(Path(str(value)), rows, seed=0)
        now = predictor.embed_source(source, rows, seed=0)
        drift = embedding_drift(before, now, alpha=cfg.validate.embedding_alpha)
    except AbyssalError as e:
        return {"error": str(e), "drifted": False}
    (folder / "embedding_drift.txt").write_text(drift.summary() + "\n")
    return {**drift.to_dict(), "reference": current.ref}


def _production_ref(cfg: PipelineConfig, home: str | Path | None) -> str | None:
    """The deployed version's ref now: validation and the gate compare with it, so a new
    production version makes them run again."""
    with using_home(home):
        current = production(ModelStore(), cfg)
    return None if current is None else current.ref


def _readable(frame: Any, report: Any, schema: TableSchema) -> Any:
    """``frame`` with the cells of number columns that do not read as numbers made missing
    (the checks named them), so that drift compares what can be compared."""
    import pandas as pd

    wrong = {f.column for f in report.errors if f.check == "dtype"}
    out = frame.copy()
    for column in schema.columns:
        if column.name in wrong and column.kind in ("number", "integer"):
            out[column.name] = pd.to_numeric(out[column.name], errors="coerce")
    return out


def _reference_table(version: Any, cfg: PipelineConfig) -> Any:
    """The table ``version`` was trained on, if its config names one that is still there."""
    path = None if version is None else trained_table(version.config, cfg.validate.table)
    return None if path is None else read_table(path)


def _schema(reference: Any, cfg: PipelineConfig) -> TableSchema:
    """Expectations learnt from ``reference``, with the pipeline's own limits."""
    v = cfg.validate
    learnt = infer_schema(reference, label=v.label, keys=v.keys, margin=0.5, missing_margin=0.05)
    columns = tuple(
        replace(c, max_missing=min(c.max_missing, v.max_missing)) for c in learnt.columns
    )
    return TableSchema(
        columns,
        keys=learnt.keys,
        label=learnt.label,
        label_classes=learnt.label_classes,
        min_label_share=max(learnt.min_label_share, v.min_label_share),
        min_rows=v.min_rows,
        severity=dict(learnt.severity),
    )


# -- train, performance test -------------------------------------------------------------------


def train_step(cfg: PipelineConfig, attempt: int, home: str | Path | None) -> Step:
    """Train with the attempt's overrides (attempt 0: the pipeline's config as it is) and
    register the version under the pipeline's model name."""
    extra = [] if attempt == 0 else list(cfg.retrain.attempts[attempt - 1])

    def run(ctx: StepContext) -> dict[str, Any]:
        from abyssal.train.api import train

        out = train(cfg.solution, cfg.config, [*cfg.overrides, *extra], model_name=cfg.model,
                    home=home)  # fmt: skip
        if out is None:
            raise AbyssalError("training returned no version (not the main process)")
        metrics = {k: float(v) for k, v in out.metrics.items() if _number(v)}
        return {"ref": out.version.ref, "overrides": extra, "metrics": metrics}

    inputs = {"config": cfg.config, "overrides": [*cfg.overrides, *extra], "model": cfg.model}
    table = _dotted(training_config(cfg, extra), cfg.validate.table)
    files = tuple(str(f) for f in (cfg.config, table) if f and Path(str(f)).exists())
    # after validation, but defined by the config and the data alone (not by what it compared)
    after = ("validate",) if "validate" in cfg.steps else ()
    return Step(f"train-{attempt}", run, after=after, inputs=inputs, files=files)


def perf_step(cfg: PipelineConfig, attempt: int, home: str | Path | None) -> Step:
    """Latency and throughput at the serving batch size, size on disk, cost per 1,000."""

    def run(ctx: StepContext) -> dict[str, Any]:
        ref = ctx.outputs[f"train-{attempt}"]["ref"]
        return performance(ref, cfg, home)

    inputs = {"perf": _plain(cfg.perf)}
    return Step(f"perf-{attempt}", run, needs=(f"train-{attempt}",), inputs=inputs)


def performance(ref: str, cfg: PipelineConfig, home: str | Path | None) -> dict[str, float]:
    """Time the version's network on real inputs from its data (``perf.batch`` items per
    call), and price it: ``cost_per_1000 = price_per_hour / 3600 / throughput x 1000``."""
    from abyssal.optimize.measure import SPREAD, measure
    from abyssal.solutions.loading import load_model

    with using_home(home):
        loaded = load_model(ref, device=cfg.perf.device)
    data = loaded.solution.prepare(loaded.cfg)
    model = loaded.model.eval()

    def inputs(seed: int) -> tuple[Any, ...]:
        got = loaded.solution.model_inputs(loaded.cfg, data, cfg.perf.batch, seed)
        return tuple(x.to(cfg.perf.device) if hasattr(x, "to") else x for x in got)

    timing = measure(model, inputs, cfg.perf.batch, device=cfg.perf.device, reps=cfg.perf.reps,
                     budget_s=10.0)  # fmt: skip
    size = sum(a.size or 0 for a in loaded.version.artifacts) / 1e6
    cost = cfg.perf.price_per_hour / 3600 / timing.throughput * 1000
    return {
        "p50_ms": round(timing.p50_ms, 4),
        "p99_ms": round(timing.p99_ms, 4),
        "throughput": round(timing.throughput, 2),
        "size_mb": round(size, 3),
        "cost_per_1000": round(cost, 6),
        "batch": cfg.perf.batch,
        "calls": timing.calls,
        "spread_ms": {f"p{q}": round(v, 4) for q, v in zip(SPREAD, timing.spread_ms, strict=True)},
    }


# -- gate, deploy ------------------------------------------------------------------------------


def gate_step(cfg: PipelineConfig, attempt: int, home: str | Path | None) -> Step:
    """Every rule of ``gate.rules`` on the trained version's metrics and its performance, and
    against the production version's metrics; a failed rule stops the run (and leads to the
    next retraining attempt). Without a ``perf`` step, a rule on a performance figure fails
    (not measured)."""
    train, perf = f"train-{attempt}", f"perf-{attempt}"
    timed = "perf" in cfg.steps

    def run(ctx: StepContext) -> dict[str, Any]:
        measured = {**ctx.outputs[train]["metrics"], **(ctx.outputs[perf] if timed else {})}
        with using_home(home):
            current = production(ModelStore(), cfg)
        baseline = {} if current is None else {
            **{k: float(v) for k, v in current.metrics.items() if _number(v)},
            **_recorded_perf(ctx, current.ref),
        }  # fmt: skip
        checks = [judge(rule, measured, baseline) for rule in cfg.gate.rules]
        if cfg.gate.audit:
            checks.append(_audit_check(ctx.outputs[train]["ref"], cfg.gate.audit, home))
        failed = [c for c in checks if not c["passed"]]
        (ctx.folder / "gate.json").write_text(json.dumps(checks, indent=1))
        report = {"checks": checks, "production": None if current is None else current.ref}
        if failed:
            raise StepStopped(
                f"{ctx.outputs[train]['ref']} failed {len(failed)} of {len(checks)} gate rule(s): "
                + "; ".join(c["why"] for c in failed),
                report,
            )
        return {"ref": ctx.outputs[train]["ref"], **report}

    inputs = {
        "rules": [_plain(r) for r in cfg.gate.rules],
        "audit": cfg.gate.audit,
        "alias": cfg.deploy.alias,
        "production": _production_ref(cfg, home),
    }
    files = (cfg.gate.audit,) if cfg.gate.audit and Path(cfg.gate.audit).is_file() else ()
    needs = (train, perf) if timed else (train,)
    return Step(f"gate-{attempt}", run, needs=needs, inputs=inputs, files=files)


def _audit_check(ref: str, policy_file: str, home: str | Path | None) -> dict[str, Any]:
    """The audit of ``ref`` against the policy, as a gate check (stored with the version)."""
    from abyssal.govern.audit import audit_version
    from abyssal.govern.policy import load_policy

    result = audit_version(ref, load_policy(policy_file), home=home)
    failed = [f"{c.name} ({c.detail})" for c in result.checks if not c.passed]
    why = "" if result.passed else f"the audit ({result.policy}) failed: " + "; ".join(failed)
    share = sum(c.passed for c in result.checks) / max(1, len(result.checks))
    return {"metric": "audit (share of checks passed)", "value": round(share, 4),
            "passed": result.passed, "why": why, "report": str(result.folder)}  # fmt: skip


def _recorded_perf(ctx: StepContext, ref: str) -> dict[str, float]:
    """Production's performance figures, when an earlier run of this pipeline measured them
    (kept beside the state: perf/<ref>.json)."""
    path = ctx.folder.parent.parent / "perf" / f"{ref.replace(':', '@')}.json"
    try:
        return {k: float(v) for k, v in json.loads(path.read_text()).items() if _number(v)}
    except (OSError, ValueError):
        return {}


def judge(rule: GateRule, measured: dict[str, float], baseline: dict[str, float]) -> dict:
    """One rule on the measured metrics: ``{metric, value, passed, why, ...}``; a metric the
    version does not have fails the rule (named, with the metrics it has)."""
    value = measured.get(rule.metric)
    out: dict[str, Any] = {"metric": rule.metric, "value": value, "passed": True, "why": ""}
    if value is None or not math.isfinite(value):
        have = ", ".join(sorted(measured)[:12])
        out.update(passed=False, why=f"{rule.metric}: not measured (measured: {have})")
        return out
    problems = []
    if rule.min is not None and value < rule.min:
        problems.append(f"{rule.metric} {value:.4g} < min {rule.min:g}")
    if rule.max is not None and value > rule.max:
        problems.append(f"{rule.metric} {value:.4g} > max {rule.max:g}")
    before = baseline.get(rule.metric)
    if before is not None:
        out["production"] = before
        if rule.max_drop is not None and value < before - rule.max_drop:
            problems.append(
                f"{rule.metric} {value:.4g} is {before - value:.4g} below production's "
                f"{before:.4g} (max drop {rule.max_drop:g})"
            )
        if rule.max_rise is not None and value > before + rule.max_rise:
            problems.append(
                f"{rule.metric} {value:.4g} is {value - before:.4g} above production's "
                f"{before:.4g} (max rise {rule.max_rise:g})"
            )
    if problems:
        out.update(passed=False, why="; ".join(problems))
    return out


def deploy_step(cfg: PipelineConfig, attempt: int, home: str | Path | None) -> Step:
    """Point the deploy alias at the version that passed (services following it swap): the
    gate's, or the trained one in a pipeline without a gate. It runs last, after every other
    step of the attempt: any of them refusing the version keeps it from here."""
    source = f"gate-{attempt}" if "gate" in cfg.steps else f"train-{attempt}"
    perf = f"perf-{attempt}" if "perf" in cfg.steps else None

    def run(ctx: StepContext) -> dict[str, Any]:
        ref = ctx.outputs[source]["ref"]
        with using_home(home):
            store = ModelStore()
            before = production(store, cfg)
            version = store.resolve(ref)
            store.set_alias(cfg.model, cfg.deploy.alias, version.version)
        if perf is not None:
            folder = ctx.folder.parent.parent / "perf"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{ref.replace(':', '@')}.json").write_text(json.dumps(ctx.outputs[perf]))
        return {"ref": ref, "alias": cfg.deploy.alias,
                "previous": None if before is None else before.ref}  # fmt: skip

    needs = (source, perf) if perf is not None else (source,)
    return Step("deploy", run, needs=needs, inputs={"alias": cfg.deploy.alias})


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _plain(section: Any) -> Any:
    """A config section as plain data (for fingerprints)."""
    from abyssal.core.config import config_to_dict

    return config_to_dict(section)


STEPS.add(
    "validate",
    validate_step,
    summary="check the training table: schema, missing values, drift, personal data",
)
STEPS.add("train", train_step, summary="train a version with the attempt's overrides")
STEPS.add("perf", perf_step, summary="latency, throughput, size and cost at the serving batch")
STEPS.add("gate", gate_step, summary="the gate's rules (and audit) on the trained version")
STEPS.add("deploy", deploy_step, summary="point the deploy alias at the version that passed")


def build_steps(
    cfg: PipelineConfig,
    attempt: int,
    home: str | Path | None,
    factories: list[tuple[str, StepFactory]] | None = None,
) -> list[Step]:
    """The steps of attempt ``attempt``, in the order of ``cfg.steps``: each runs after the one
    listed before it, so ``deploy`` (last) runs only when every other step passed.

    Args:
        factories: ``(name, factory)`` for each of ``cfg.steps`` (default: looked up in
            :data:`STEPS`, importing plugins).

    Raises:
        RegistryError: a plugin step that fails to import (naming its package).
        ConfigError: a factory that returns something else than a :class:`Step`, a step named
            neither ``NAME`` nor ``NAME-ATTEMPT``, or one reading a step listed after it.
        AbyssalError: a plugin's factory raised (naming the step and its package).
    """
    if factories is None:
        factories = [(name, STEPS.get(name)) for name in cfg.steps]
    out: list[Step] = []
    for name, factory in factories:
        plugin = STEPS.origin(name)
        who = f"pipeline step {name!r}" + (
            f" (plugin package {plugin.package} {plugin.version})" if plugin else ""
        )
        try:
            step = factory(cfg, attempt, home)
        except AbyssalError:
            raise
        except Exception as e:
            if plugin is None:
                raise
            raise AbyssalError(f"{who} could not be built: {type(e).__name__}: {e}") from e
        if not isinstance(step, Step):
            raise ConfigError(f"{who} built {type(step).__name__}, not a pipeline Step")
        if step.name not in (name, f"{name}-{attempt}"):
            raise ConfigError(
                f"{who} built a step named {step.name!r}; name it {name!r} (once for every "
                f"attempt) or {f'{name}-{attempt}'!r} (once per attempt)"
            )
        known = {s.name for s in out}
        later = [n for n in (*step.needs, *step.after) if n not in known]
        if later:
            raise ConfigError(
                f"{who} reads {later}, which are not listed before it in steps "
                f"({', '.join(cfg.steps)}) for attempt {attempt}"
            )
        if out and out[-1].name not in step.after:
            step = replace(step, after=(*step.after, out[-1].name))
        out.append(step)
    return out
