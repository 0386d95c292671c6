"""Train a solution into a new model version: config -> data -> trainer -> metrics -> store."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from abyssal.contracts.solution import Solution
from abyssal.core.config import load_config
from abyssal.core.errors import AbyssalError
from abyssal.core.runs import Run
from abyssal.core.store import ModelStore, ModelVersion
from abyssal.solutions import get_solution
from abyssal.solutions.loading import version_config
from abyssal.train.optim import check_names, trainable_parameters
from abyssal.train.trainer import FitResult, Trainer


@dataclass
class TrainOutcome:
    """What :func:`train` produced: the run record, the new model version and its metrics."""

    run: Run
    version: ModelVersion
    metrics: dict[str, float]
    fit: FitResult | None


def train(
    solution_name: str,
    config_path: str | Path | None = None,
    overrides: list[str] | None = None,
    *,
    resume: str | None = None,
    model_name: str | None = None,
    home: str | Path | None = None,
) -> TrainOutcome:
    """Train ``solution_name`` and register the best model as a new version.

    The data is read and validated before the run is created, so bad input leaves nothing behind.
    Baseline metrics (``gbdt_*`` for the fraud solution) come from the same data and splits.

    Args:
        solution_name: a registered solution (``"fraud"``).
        config_path: a YAML file mirroring the solution's config; defaults when ``None``.
        overrides: ``key=value`` strings applied over the file.
        resume: a run id (or ``"latest"``) to continue from its last checkpoint, with its
            saved config; ``config_path`` and ``overrides`` must then be empty.
        model_name: name of the model in the store; the solution name by default.
        home: the abyssal home (store and runs); ``$ABYSSAL_HOME`` or ``~/.abyssal`` by default.

    Returns:
        The run, the registered version and its metrics.

    Example:
        >>> out = train("fraud", overrides=["train.epochs=5"])  # doctest: +SKIP
        >>> out.version.ref  # doctest: +SKIP
        'fraud:1'
    """
    solution = get_solution(solution_name)
    store = ModelStore(home)
    if resume is not None:
        if config_path is not None or overrides:
            raise AbyssalError(
                "--resume continues with the run's saved config: drop --config/overrides"
            )
        run = Run.open(resume, root=home)
        if run.solution != solution.name:
            raise AbyssalError(f"run {run.id} trained '{run.solution}', not '{solution.name}'")
        if run.info.get("outputs"):
            return _finished(run, store)
        cfg = load_config(solution.config_cls, run.config_path)
    else:
        cfg = load_config(solution.config_cls, config_path, overrides or [])
    data = solution.prepare(cfg)
    if resume is None:
        return train_prepared(solution, cfg, data, model_name=model_name, home=home)
    task = solution.task(cfg, data)
    return _fit_and_register(solution, cfg, data, task, run, model_name, home, resume=True)


def train_prepared(
    solution: Solution,
    cfg: Any,
    data: Any,
    *,
    model_name: str | None = None,
    home: str | Path | None = None,
) -> TrainOutcome:
    """Train on data already prepared (e.g. a ``torch_geometric`` graph) and register the model.

    Example:
        >>> from abyssal.solutions.fraud.dataset import prepare_pyg_data
        >>> sol = get_solution("fraud")  # doctest: +SKIP
        >>> out = train_prepared(sol, sol.config_cls(), prepare_pyg_data(graph))  # doctest: +SKIP
    """
    task = solution.task(cfg, data)  # checks the data against the config before a run exists
    check_names(cfg.train)
    if cfg.train.trainable is not None or cfg.train.frozen:  # patterns are checked up front too
        trainable_parameters(task.build_model(), cfg.train.trainable, cfg.train.frozen)
    run = Run.create("train", solution.name, cfg, root=home)
    return _fit_and_register(solution, cfg, data, task, run, model_name, home, resume=False)


def _fit_and_register(
    solution: Solution,
    cfg: Any,
    data: Any,
    task: Any,
    run: Run,
    model_name: str | None,
    home: str | Path | None,
    *,
    resume: bool,
) -> TrainOutcome:
    metric, mode = solution.monitor(cfg, data)
    fit = Trainer(task, cfg.train, run, metric=metric, mode=mode).fit(resume=resume)
    metrics = _final_metrics(solution, cfg, data, fit)
    version = ModelStore(home).register(
        model_name or solution.name,
        fit.model.state_dict(),
        solution=solution.name,
        config={
            **version_config(solution, cfg, solution.model_spec(cfg, data)),
            "headline_metric": solution.headline_metric(cfg, data),
        },
        metrics=metrics,
        lineage={"data_fingerprint": data.fingerprint, "data": getattr(data, "description", "")},
        run_id=run.id,
    )
    run.set_metrics(metrics)
    run.add_output(version.ref)
    return TrainOutcome(run, version, metrics, fit)


def _final_metrics(solution: Any, cfg: Any, data: Any, fit: FitResult) -> dict[str, float]:
    # on the training device: a model trained on a GPU is evaluated there too
    metrics = dict(solution.evaluate(cfg, fit.model, data))
    metrics.update(solution.baselines(cfg, data))
    metrics["best_epoch"] = -1 if fit.best_epoch is None else fit.best_epoch
    metrics["best_step"] = -1 if fit.best_step is None else fit.best_step
    metrics["epochs_run"] = fit.epochs_run
    return metrics


def _finished(run: Run, store: ModelStore) -> TrainOutcome:
    version = store.resolve(run.info["outputs"][-1])
    return TrainOutcome(run, version, dict(version.metrics), None)
