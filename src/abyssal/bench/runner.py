"""``abyssal bench run``: score model versions on a suite's tasks, with bootstrap intervals,
paired tests, perturbations and slices, and write the leaderboard.

Per task, each model argument is one version (``tabular:3``) or, under a ``kfold`` protocol, one
version per fold joined by commas (``nodule:1,nodule:2,...``: their held-out folds pooled). Every
model is scored through its solution's :meth:`~abyssal.contracts.solution.Solution.held_out`
on the data the task's overrides give; all models of a task must score the same items, so one set
of resamples (:mod:`abyssal.bench.stats`) gives every interval and every paired comparison.
"""

from __future__ import annotations

import datetime as dt
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from abyssal.bench.metrics import Scored, metric
from abyssal.bench.stats import Estimate, Resamples, compare, estimate, holm
from abyssal.bench.suite import Suite, TaskSpec, resolve_overrides
from abyssal.core.errors import AbyssalError, ConfigError, DataError
from abyssal.core.store import ModelStore

SCHEMA = 1
"""The leaderboard JSON's schema version."""

Log = Callable[[str], None]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass
class ModelScores:
    """What one model argument gave on one task: clean and perturbed predictions, item
    attributes, and notes for the reader."""

    label: str
    refs: list[str]
    clean: Scored
    perturbed: dict[str, Scored] = field(default_factory=dict)
    attributes: Any = None  # pandas.DataFrame indexed by id, or None
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    data: str = ""


def parse_model_args(models: Sequence[str]) -> list[list[str]]:
    """``["a:1", "b:1,b:2"]`` -> ``[["a:1"], ["b:1", "b:2"]]``; empty parts are errors."""
    out = []
    for arg in models:
        refs = [r.strip() for r in str(arg).split(",")]
        if not all(refs):
            raise ConfigError(f"model argument '{arg}': an empty reference between commas")
        out.append(refs)
    if not out:
        raise ConfigError("name at least one model version to benchmark")
    return out


def _frame_of(solution: Any, cfg: Any, model: Any, data: Any, where: str) -> Any:
    try:
        return solution.held_out(cfg, model, data)
    except AbyssalError as exc:
        raise type(exc)(f"{where}: {exc}") from None


def score_version(
    ref: str,
    task: TaskSpec,
    *,
    store: ModelStore | None,
    datasets: str | Path | None,
    variables: dict[str, str] | None,
    device: str | None,
    need_attributes: bool,
    log: Log,
) -> ModelScores:
    """One version on one task: its clean and perturbed held-out predictions, its attributes."""
    from abyssal.solutions.loading import check_data_paths, load_model

    overrides = resolve_overrides(task.data, datasets, variables)
    if task.protocol.kind == "kfold":
        key = task.protocol.key
        overrides = [o for o in overrides if o.split("=", 1)[0].strip() != key]
    start = time.perf_counter()
    loaded = load_model(ref, store, overrides, device)
    version = loaded.version
    if version.solution != task.solution:
        raise ConfigError(
            f"task '{task.name}' scores {task.solution} models; {version.ref} is a "
            f"{version.solution} model"
        )
    check_data_paths(loaded, overrides)
    solution, cfg, model = loaded.solution, loaded.cfg, loaded.model
    data = solution.prepare(cfg)
    where = f"{task.name}: {version.ref}"
    clean = Scored.from_frame(
        _frame_of(solution, cfg, model, data, where), threshold=task.threshold, where=where
    )
    scores = ModelScores(version.ref, [version.ref], clean, data=getattr(data, "description", ""))
    if version.lineage.get("data_fingerprint") == data.fingerprint:
        scores.notes.append(f"{version.ref} was trained on this data and split")
    else:
        scores.notes.append(
            f"{version.ref} was trained on other data or another split than this task's: its "
            "test items may overlap what it was trained on"
        )
    for p in task.parsed_perturbations:
        t0 = time.perf_counter()
        moved = solution.perturb(cfg, data, p)
        frame = _frame_of(solution, cfg, model, moved, f"{where} ({p.label})")
        got = Scored.from_frame(frame, threshold=task.threshold, where=f"{where} ({p.label})")
        if not np.array_equal(got.ids, clean.ids) or not np.array_equal(got.labels, clean.labels):
            raise DataError(f"{where}: {p.label} changed which items are scored or their labels")
        scores.perturbed[p.label] = got
        log(f"  {version.ref}: {p.label} in {time.perf_counter() - t0:.1f} s")
    if need_attributes:
        attributes = solution.item_attributes(cfg, data)
        if "id" not in attributes.columns:
            raise DataError(f"{where}: item attributes have no 'id' column")
        attributes = attributes.assign(id=attributes["id"].astype(str)).set_index("id")
        missing = set(clean.ids.tolist()) - set(attributes.index)
        if missing:
            raise DataError(f"{where}: {len(missing)} scored items have no attributes")
        scores.attributes = attributes
    scores.seconds = time.perf_counter() - start
    log(f"  {version.ref}: {clean.n} items in {scores.seconds:.1f} s")
    return scores


def _concat(parts: list[Scored]) -> Scored:
    first = parts[0]
    if any(p.classes != first.classes or p.is_binary != first.is_binary for p in parts):
        raise DataError("pooled folds have different classes")

    def cat(name: str) -> np.ndarray | None:
        if getattr(first, name) is None:
            return None
        return np.concatenate([getattr(p, name) for p in parts])

    return Scored(
        cat("ids"), cat("labels"), cat("scores"), cat("predictions"), first.classes, first.threshold
    )


def stored_value(config: dict[str, Any], key: str) -> Any:
    """A dotted config key of a stored version's config (``None`` when absent)."""
    value: Any = config.get("solution_config", config)
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def check_model_arg(refs: list[str], task: TaskSpec, store: ModelStore) -> None:
    """Refuse, before any scoring, a pooled argument the task's protocol cannot pool: pooling
    under a fixed split, the wrong number of folds, or two versions holding out one fold."""
    if len(refs) == 1:
        return
    if task.protocol.kind != "kfold":
        raise ConfigError(
            f"task '{task.name}' has a fixed split: pooling versions ({', '.join(refs)}) needs "
            "a kfold protocol"
        )
    if task.protocol.folds and len(refs) != task.protocol.folds:
        raise ConfigError(
            f"task '{task.name}' pools {task.protocol.folds} folds; got {len(refs)} versions "
            f"({', '.join(refs)})"
        )
    folds = [stored_value(store.resolve(r).config, task.protocol.key) for r in refs]
    if len({str(f) for f in folds}) != len(folds):
        raise ConfigError(
            f"task '{task.name}': pooled versions must hold out different folds "
            f"({task.protocol.key}: {dict(zip(refs, folds, strict=True))})"
        )


def score_model(refs: list[str], task: TaskSpec, **kw: Any) -> ModelScores:
    """A model argument on a task: one version, or pooled folds (checked by
    :func:`check_model_arg` first)."""
    parts = [score_version(ref, task, **kw) for ref in refs]
    if len(parts) == 1:
        return parts[0]
    ids = np.concatenate([s.clean.ids for s in parts])
    if len(set(ids.tolist())) != len(ids):
        raise DataError(f"task '{task.name}': the pooled folds' held-out items overlap")
    scores = parts
    pooled = ModelScores(
        label=",".join(s.label for s in scores),
        refs=[s.label for s in scores],
        clean=_concat([s.clean for s in scores]),
        perturbed={k: _concat([s.perturbed[k] for s in scores]) for k in scores[0].perturbed},
        notes=[n for s in scores for n in s.notes],
        seconds=sum(s.seconds for s in scores),
        data=scores[0].data,
    )
    if any(s.attributes is not None for s in scores):
        import pandas as pd

        pooled.attributes = pd.concat([s.attributes for s in scores])
    return pooled


def _aligned(models: list[ModelScores], task: TaskSpec) -> list[ModelScores]:
    """Every model's predictions in the first model's item order; different item sets are an
    error (the models were not scored on the same test split)."""
    order = models[0].clean.ids
    position = {item: i for i, item in enumerate(order.tolist())}
    for m in models[1:]:
        if set(m.clean.ids.tolist()) != set(position):
            raise DataError(
                f"task '{task.name}': {m.label} scored {m.clean.n} items, {models[0].label} "
                f"{models[0].clean.n}, and not the same ones: compare models on one test split "
                "(or pool every fold of a kfold protocol)"
            )
        rows = np.argsort([position[i] for i in m.clean.ids.tolist()])
        m.clean = m.clean.take(rows)
        m.perturbed = {k: v.take(rows) for k, v in m.perturbed.items()}
        if not np.array_equal(m.clean.labels, models[0].clean.labels):
            raise DataError(f"task '{task.name}': {m.label} gives other labels to the same items")
    return models


def _slice_rows(task: TaskSpec, model: ModelScores) -> dict[str, np.ndarray]:
    out = {}
    if not task.slices:
        return out
    frame = model.attributes.loc[model.clean.ids.tolist()].reset_index(drop=True)
    if "label" in frame.columns:
        raise DataError(f"task '{task.name}': item attributes may not use the name 'label'")
    frame["label"] = model.clean.labels
    for s in task.slices:
        try:
            picked = frame.query(s.where)
        except Exception as exc:  # pandas raises many kinds for a bad expression
            raise ConfigError(
                f"task '{task.name}', slice '{s.name}': cannot evaluate '{s.where}' ({exc}); "
                f"attributes: {sorted(frame.columns)}"
            ) from None
        out[s.name] = picked.index.to_numpy()
    return out


def evaluate_task(
    task: TaskSpec,
    models: list[ModelScores],
    *,
    resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """The task's leaderboard section: each model's metrics with intervals, its rank, the
    paired test against the leader, perturbations and slices."""
    models = _aligned(models, task)
    n = models[0].clean.n
    groups = None
    if task.protocol.group:
        attrs = models[0].attributes
        if attrs is None or task.protocol.group not in attrs.columns:
            raise ConfigError(
                f"task '{task.name}': group '{task.protocol.group}' is not an item attribute"
            )
        groups = attrs.loc[models[0].clean.ids.tolist(), task.protocol.group].tolist()
    draws = Resamples.draw(n, resamples=resamples, seed=seed, groups=groups)
    metrics = [metric(name) for name in task.metrics]
    primary = metric(task.primary)

    def estimates(s: Scored, rs: Resamples, rows: np.ndarray | None = None) -> dict[str, Estimate]:
        def fn_for(m: Any) -> Callable[[np.ndarray], float]:
            if rows is None:
                return lambda r: m.compute(s, r)
            return lambda r: m.compute(s, rows[r])

        size = n if rows is None else len(rows)
        return {m.name: estimate(fn_for(m), size, rs, confidence=confidence) for m in metrics}

    clean = {m.label: estimates(m.clean, draws) for m in models}
    sign = 1 if primary.higher_is_better else -1
    ranked = sorted(
        models,
        key=lambda m: -sign * np.nan_to_num(clean[m.label][task.primary].value, nan=-np.inf * sign),
    )
    leader = ranked[0].label
    versus = {}
    for m in ranked[1:]:
        versus[m.label] = compare(
            clean[m.label][task.primary], clean[leader][task.primary], confidence=confidence
        )
    adjusted = holm([c.p_value for c in versus.values()])
    results = []
    for rank, m in enumerate(ranked, 1):
        row: dict[str, Any] = {
            "model": m.label,
            "refs": m.refs,
            "rank": rank,
            "n": m.clean.n,
            "positives": int(m.clean.labels.sum()) if m.clean.is_binary else None,
            "seconds": round(m.seconds, 3),
            "notes": m.notes,
            "metrics": {k: e.as_dict() for k, e in clean[m.label].items()},
            "versus": None,
            "perturbations": [],
            "slices": [],
        }
        if m.label in versus:
            c = versus[m.label]
            c = type(c)(c.difference, c.low, c.high, c.p_value, adjusted[rank - 2])
            row["versus"] = {"model": leader, "metric": task.primary, **c.as_dict()}
        for label, s in m.perturbed.items():
            moved = estimates(s, draws)
            drop = compare(clean[m.label][task.primary], moved[task.primary], confidence=confidence)
            row["perturbations"].append(
                {
                    "name": label,
                    "metrics": {k: e.as_dict() for k, e in moved.items()},
                    "drop": drop.as_dict(),
                }
            )
        for k, (name, rows) in enumerate(_slice_rows(task, m).items()):
            spec = next(s for s in task.slices if s.name == name)
            sub = Resamples.draw(len(rows), resamples=resamples, seed=seed + 1 + k)
            values = estimates(m.clean, sub, rows) if len(rows) else {}
            row["slices"].append(
                {
                    "name": name,
                    "where": spec.where,
                    "n": len(rows),
                    "positives": int(m.clean.labels[rows].sum()) if m.clean.is_binary else None,
                    "metrics": {k2: e.as_dict() for k2, e in values.items()},
                }
            )
        results.append(row)
    return {
        "name": task.name,
        "title": task.title,
        "solution": task.solution,
        "data": models[0].data,
        "protocol": {
            "kind": task.protocol.kind,
            "key": task.protocol.key or None,
            "folds": task.protocol.folds or None,
            "group": task.protocol.group or None,
        },
        "primary": task.primary,
        "higher_is_better": {m.name: m.higher_is_better for m in metrics},
        "metrics": list(task.metrics),
        "titles": {m.name: m.title for m in metrics},
        "confidence": confidence,
        "resamples": resamples,
        "threshold": task.threshold,
        "anchors": [
            {k: getattr(a, k) for k in ("name", "metric", "value", "source", "url", "note")}
            for a in task.anchors
        ],
        "results": results,
    }


def run_suite(
    suite: Suite,
    models: Sequence[str],
    *,
    tasks: Sequence[str] | None = None,
    store: ModelStore | None = None,
    datasets: str | Path | None = None,
    variables: dict[str, str] | None = None,
    device: str | None = None,
    resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    command: str = "",
    log: Log = _stderr,
) -> dict[str, Any]:
    """Score ``models`` on the suite's tasks (all, or those named in ``tasks``) and return the
    leaderboard (the JSON :func:`abyssal.bench.report.write_leaderboard` writes).

    A model is scored on every task of its solution; a task none of the models fits is an
    error, as is a model that fits no task.
    """
    from abyssal.bench.environment import environment

    if not 0 < confidence < 1:
        raise ConfigError(f"confidence must be in (0, 1), not {confidence}")
    chosen = [suite.task(t) for t in tasks] if tasks else list(suite.tasks)
    args = parse_model_args(models)
    store = store or ModelStore()
    solutions = {}
    for refs in args:
        for ref in refs:
            solutions[ref] = store.resolve(ref).solution
    used: set[str] = set()
    sections = []
    for task in chosen:
        fitting = [refs for refs in args if all(solutions[r] == task.solution for r in refs)]
        if not fitting:
            raise ConfigError(
                f"task '{task.name}' scores {task.solution} models; none of "
                f"{', '.join(models)} is one"
            )
        for refs in fitting:
            check_model_arg(refs, task, store)
        log(f"task {task.name}: {len(fitting)} model(s)")
        need_attributes = bool(task.slices or task.protocol.group)
        scored = [
            score_model(
                refs,
                task,
                store=store,
                datasets=datasets,
                variables=variables,
                device=device,
                need_attributes=need_attributes,
                log=log,
            )
            for refs in fitting
        ]
        used.update(r for refs in fitting for r in refs)
        sections.append(
            evaluate_task(task, scored, resamples=resamples, confidence=confidence, seed=seed)
        )
    unused = sorted({r for refs in args for r in refs} - used)
    if unused:
        raise ConfigError(f"no task of suite '{suite.name}' scores {', '.join(unused)}")
    now = dt.datetime.now(dt.UTC)
    return {
        "schema": SCHEMA,
        "id": f"{now:%Y%m%d-%H%M%S}-{suite.name}",
        "suite": suite.name,
        "title": suite.title,
        "description": suite.description,
        "created": now.isoformat(timespec="seconds"),
        "models": list(models),
        "command": command,
        "environment": environment(),
        "tasks": sections,
    }
