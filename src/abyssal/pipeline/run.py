"""Run a pipeline file: validate -> train -> performance test -> gate -> deploy, and on a
refusal, retrain with the next attempt's overrides.

Attempt k is the chain ``validate, train-k, perf-k, gate-k, deploy`` (the pipeline's ``steps``:
steps from plugins run where the list puts them, named ``NAME`` or ``NAME-k``). They share one
state folder, so a rerun skips what finished unchanged (validation runs once for all attempts),
and a run stopped by a crash resumes where it stopped. The run ends at the first attempt that
reaches ``deploy`` (deployed), when validation (or any step listed before ``train``) stops it,
when a step fails, or when every attempt was refused (the gate, or any step listed after
``train``, stopped it); ``summary.json`` in the state folder says which and why, and ``report.html``
(:mod:`abyssal.pipeline.report`) shows it with charts. Each run is also a run record in the store
(``abyssal runs list`` shows it, kind ``pipeline``): its log has one line per step, its metrics
the deployed version's, its output the version deployed, and its status ``completed`` whatever
the gate decided (``failed`` only when a step raised an error or the run was interrupted), and
its folder keeps that run's ``summary.json`` and ``report.html`` (the state folder's are the
last run's).

Example:
    >>> result = run_pipeline(load_pipeline("pipelines/fraud.yaml"))  # doctest: +SKIP
    >>> result.status, result.deployed  # doctest: +SKIP
    ('deployed', 'fraud:4')
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from abyssal.core.atomic import write_text_atomic
from abyssal.core.home import abyssal_home
from abyssal.core.runs import Run
from abyssal.pipeline.dag import Pipeline, PipelineResult, StepResult
from abyssal.pipeline.report import step_kind, write_report
from abyssal.pipeline.spec import PipelineConfig
from abyssal.pipeline.steps import STEPS, StepFactory, build_steps


@dataclass
class PipelineRun:
    """How a pipeline run ended.

    Attributes:
        status: ``deployed``, ``stopped`` (validation, or another step listed before
            ``train``, refused the data), ``refused`` (the gate, or another step listed after
            ``train``, refused every attempt's version), or ``failed`` (a step raised an error).
        attempts: each attempt's result, in order.
        deployed: the version the alias now points at, when deployed.
        reason: one line on why it ended.
        state: the state folder.
        report: the HTML report of the run (``report.html`` in the state folder).
    """

    status: str
    attempts: list[PipelineResult] = field(default_factory=list)
    deployed: str | None = None
    reason: str = ""
    state: Path | None = None
    report: Path | None = None
    run_id: str | None = None

    def summary(self) -> str:
        """What ran, attempt by attempt, and how it ended."""
        lines = []
        for k, attempt in enumerate(self.attempts):
            lines.append(f"attempt {k}: {attempt.status}")
            lines += [f"  {line}" for line in attempt.summary().splitlines()]
        lines.append(f"{self.status}: {self.reason}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "deployed": self.deployed,
            "reason": self.reason,
            "attempts": [
                {"status": a.status, "ended_by": a.ended_by,
                 "steps": [_step_dict(s) for s in a.steps]}
                for a in self.attempts
            ],
        }  # fmt: skip


def _step_dict(step: StepResult) -> dict[str, Any]:
    return {"name": step.name, "status": step.status, "seconds": round(step.seconds, 3),
            "reason": step.reason, "outputs": step.outputs}  # fmt: skip


def state_folder(cfg: PipelineConfig, home: str | Path | None = None) -> Path:
    """Where a pipeline keeps its records: ``$ABYSSAL_HOME/pipelines/<name>``."""
    return abyssal_home(home) / "pipelines" / cfg.name


def run_pipeline(
    cfg: PipelineConfig,
    *,
    home: str | Path | None = None,
    state: str | Path | None = None,
    progress: Callable[[int, int, StepResult], None] | None = None,
) -> PipelineRun:
    """Run ``cfg`` (see the module's docstring); its records go to ``state`` (default
    :func:`state_folder`).

    Raises:
        RegistryError: a step from a plugin that fails to import, naming its package (before
            anything runs).
    """
    factories = [(name, STEPS.get(name)) for name in cfg.steps]  # plugins imported here
    folder = Path(state) if state is not None else state_folder(cfg, home)
    record = Run.create("pipeline", cfg.solution, _plain_config(cfg), root=home)
    record.log(f"pipeline {cfg.name}: records in {folder}")

    def logged(k: int, n: int, result: StepResult) -> None:
        if result.status != "running":
            why = f": {result.reason}" if result.reason else ""
            record.log(f"{result.name}: {result.status} in {result.seconds:.1f} s{why}")
        if progress is not None:
            progress(k, n, result)

    try:
        out = _attempts(cfg, folder, home, logged, record.id, factories)
    except BaseException as e:
        interrupted = isinstance(e, KeyboardInterrupt)
        record.set_status("interrupted" if interrupted else "failed", f"{type(e).__name__}: {e}")
        raise
    for kept in ("summary.json", "report.html"):  # the state folder's are the last run's only
        write_text_atomic(record.path / kept, (folder / kept).read_text())
    record.log(f"{out.status}: {out.reason}")
    if out.deployed:
        record.add_output(out.deployed)
        trained = out.attempts[-1].outputs.get(f"train-{len(out.attempts) - 1}", {})
        record.set_metrics(trained.get("metrics", {}))
    record.set_status("failed" if out.status == "failed" else "completed",
                      out.reason if out.status == "failed" else None)  # fmt: skip
    return out


def _attempts(
    cfg: PipelineConfig,
    folder: Path,
    home: str | Path | None,
    progress: Callable[[int, int, StepResult], None],
    run_id: str,
    factories: list[tuple[str, StepFactory]],
) -> PipelineRun:
    out = PipelineRun("refused", state=folder, run_id=run_id)
    started = time.time()
    for attempt in range(1 + len(cfg.retrain.attempts)):
        steps = build_steps(cfg, attempt, home, factories)
        result = Pipeline(steps).run(folder, progress=progress)
        out.attempts.append(result)
        if result.status == "done":
            out.status, out.deployed = "deployed", result.outputs["deploy"]["ref"]
            out.reason = f"{out.deployed} passed the gate and is now {cfg.deploy.alias}"
            break
        ended = next(s for s in result.steps if s.name == result.ended_by)
        if result.status == "failed":
            out.status, out.reason = "failed", f"{ended.name} failed: {ended.reason}"
            break
        names = [s.name for s in result.steps]
        if names.index(ended.name) < names.index(f"train-{attempt}"):  # the data was refused
            what = "validation" if ended.name == "validate" else ended.name
            out.status, out.reason = "stopped", f"{what} stopped the run: {ended.reason}"
            break
        by = "" if step_kind(ended.name) == "gate" else f" by {ended.name}"
        out.reason = f"every attempt was refused; the last{by}: {ended.reason}"
    seconds = time.time() - started
    record = {**out.to_dict(), "pipeline": cfg.name, "run": run_id, "started": started,
              "seconds": seconds}  # fmt: skip
    write_text_atomic(folder / "summary.json", json.dumps(record, indent=1) + "\n")
    out.report = write_report(folder)
    return out


def _plain_config(cfg: PipelineConfig) -> dict[str, Any]:
    """The pipeline's settings as plain data, for the run record's ``config.yaml``."""
    from dataclasses import asdict

    return json.loads(json.dumps(asdict(cfg), default=str))
