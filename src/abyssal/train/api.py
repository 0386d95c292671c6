"""Train a solution into a new model version: config -> data -> trainer -> metrics -> store.

Everything that can be checked is checked before a run exists, so that a mistake costs seconds,
not a training: the model name and alias, the store (a folder, writable, not damaged), the device,
the data, the task, the optimizer, the trainable patterns and, with ``train.privacy``, whether the
task can be trained privately (:func:`~abyssal.train.privacy.plan_privacy`). Paths in the config
are made absolute first (:func:`~abyssal.core.config.resolve_paths`), so the stored run and
version find their data from any working directory.

A run's status tells how far it got: the trainer leaves it ``trained``, and only once its model
version is registered is it ``completed``. Resuming a run that was killed in between registers its
model without training again; resuming a run that already registered one returns that version.

Under a distributed strategy (``train.strategy=ddp`` and a ``torchrun`` launch) every process
calls :func:`train`: each prepares the data and trains its shard; only the main process creates
the run (the others open it by the id it broadcasts), writes checkpoints and registers the model
version, and only it gets a :class:`TrainOutcome` (the others get ``None``). Parameter-server
processes serve the workers and return ``None``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from abyssal.contracts.solution import Solution
from abyssal.contracts.task import TrainTask
from abyssal.contracts.train_config import TrainConfig
from abyssal.core.atomic import write_text_atomic
from abyssal.core.config import load_config, path_values, resolve_paths
from abyssal.core.devices import autocast_dtype, resolve_device
from abyssal.core.errors import AbyssalError
from abyssal.core.home import check_writable, using_home
from abyssal.core.runs import Run, runs_dir
from abyssal.core.store import ModelStore, ModelVersion
from abyssal.core.versions import check_alias, check_name
from abyssal.solutions import get_solution
from abyssal.solutions.loading import version_config
from abyssal.train.checkpoint import TrainState
from abyssal.train.optim import check_names, trainable_parameters
from abyssal.train.privacy import plan_privacy
from abyssal.train.strategy import Strategy, check_strategy_name, make_strategy
from abyssal.train.trainer import FitResult, Trainer
from abyssal.train.warm import check_warm, warm_state


@dataclass
class TrainOutcome:
    """What :func:`train` produced: the run record, the new model version and its metrics."""

    run: Run
    version: ModelVersion
    metrics: dict[str, float]
    fit: FitResult | None


@dataclass
class _Destination:
    """Where the model goes: the store, the model name and the alias to point at it."""

    store: ModelStore
    name: str
    alias: str | None
    home: str | Path | None
    typed_paths: dict[str, str] | None = None  # config paths as the user typed them


def train(
    solution_name: str,
    config_path: str | Path | None = None,
    overrides: list[str] | None = None,
    *,
    resume: str | None = None,
    model_name: str | None = None,
    alias: str | None = None,
    home: str | Path | None = None,
) -> TrainOutcome | None:
    """Train ``solution_name`` and register the best model as a new version.

    The data is read and validated before the run is created, so bad input leaves nothing behind.
    Baseline metrics (``gbdt_*`` for the fraud solution) come from the same data and splits.

    Args:
        solution_name: a registered solution (``"fraud"``).
        config_path: a YAML file mirroring the solution's config; defaults when ``None``.
        overrides: ``key=value`` strings applied over the file.
        resume: a run id (or ``"latest"``) to continue from its last checkpoint, with its
            saved config; ``config_path`` and ``overrides`` must then be empty. A run another
            process is executing is refused at once.
        model_name: name of the model in the store; the solution name by default.
        alias: an alias (e.g. ``candidate``) to point at the new version.
        home: the abyssal home (store and runs); ``$ABYSSAL_HOME`` or ``~/.abyssal`` by default.

    Returns:
        The run, the registered version and its metrics; ``None`` on every process but the main
        one of a distributed launch.

    Raises:
        RunLockedError: ``resume`` names a run another process is executing (its pid is named).
        AbyssalError: a bad name or alias, an unusable store or home, an unavailable device, bad
            config or data; all before a run is created or resumed.

    Example:
        >>> out = train("fraud", overrides=["train.epochs=5"], alias="candidate")  # doctest: +SKIP
        >>> out.version.ref, out.run.status  # doctest: +SKIP
        ('fraud:1', 'completed')
    """
    with using_home(home):
        return _train(solution_name, config_path, overrides, model_name, alias, home, resume)


def _train(
    solution_name: str,
    config_path: str | Path | None,
    overrides: list[str] | None,
    model_name: str | None,
    alias: str | None,
    home: str | Path | None,
    resume: str | None,
) -> TrainOutcome | None:
    solution = get_solution(solution_name)
    dest = _checked_destination(solution, model_name, alias, home)
    if resume is None:
        typed = load_config(solution.config_cls, config_path, overrides or [])
        cfg = resolve_paths(typed)
        dest.typed_paths = _typed_paths(typed, cfg)
        _check_device(cfg)
        with _joined(cfg.train) as strategy:
            return _train_new(solution, cfg, solution.prepare(cfg), dest, strategy)
    if config_path is not None or overrides:
        raise AbyssalError(
            "--resume continues with the run's saved config: drop --config/overrides"
        )
    run = Run.open(resume, root=home)
    if run.solution != solution.name:
        raise AbyssalError(f"run {run.id} trained '{run.solution}', not '{solution.name}'")
    cfg = resolve_paths(load_config(solution.config_cls, run.config_path))
    _check_device(cfg)
    with _joined(cfg.train) as strategy:
        if strategy.is_main:
            run.lock()  # refused at once while another process executes the run
        produced = dest.store.versions_of_run(run.id)
        if produced:
            return _already_registered(run, produced[-1], dest) if strategy.is_main else None
        data = solution.prepare(cfg)
        task = solution.task(cfg, data)
        return _fit_and_register(solution, cfg, data, task, run, dest, strategy, resume=True)


def train_prepared(
    solution: Solution,
    cfg: Any,
    data: Any,
    *,
    model_name: str | None = None,
    alias: str | None = None,
    home: str | Path | None = None,
) -> TrainOutcome | None:
    """Train on data already prepared (e.g. a ``torch_geometric`` graph) and register the model.

    The same checks as :func:`train` run before the run is created. Under a distributed launch
    every process calls it and only the main one gets the outcome.

    Example:
        >>> from abyssal.solutions.fraud.dataset import prepare_pyg_data
        >>> sol = get_solution("fraud")  # doctest: +SKIP
        >>> out = train_prepared(sol, sol.config_cls(), prepare_pyg_data(graph))  # doctest: +SKIP
    """
    with using_home(home):
        dest = _checked_destination(solution, model_name, alias, home)
        cfg = resolve_paths(cfg)
        _check_device(cfg)
        with _joined(cfg.train) as strategy:
            return _train_new(solution, cfg, data, dest, strategy)


def fit_task(
    task: TrainTask,
    cfg: TrainConfig,
    *,
    metric: str,
    mode: Literal["max", "min"] = "max",
    home: str | Path | None = None,
    on_step: Callable[[TrainState], None] | None = None,
    label: str = "task",
    resume: str | None = None,
) -> FitResult | None:
    """Train any :class:`~abyssal.contracts.task.TrainTask` under ``cfg.strategy`` in a new run
    (no solution, no model version): what benchmarks and custom loops use.

    Args:
        task: the task.
        cfg: the ``train`` config (strategy, precision, steps, ...).
        metric: the validation metric to watch; ``mode`` whether larger is better.
        home: the abyssal home for the run record and checkpoints.
        on_step: called after every optimizer step on every training process.
        label: the run's solution label.
        resume: a run id to continue from its last checkpoint (on any number of processes).

    Returns:
        The fit result on training processes; ``None`` on parameter-server processes.

    Example:
        >>> cfg = TrainConfig(max_steps=100)
        >>> fit = fit_task(task, cfg, metric="val_loss", mode="min")  # doctest: +SKIP
    """
    check_names(cfg)
    check_strategy_name(cfg.strategy)
    with _joined(cfg) as strategy:
        if resume is None:
            run = _shared_run(strategy, lambda: Run.create("train", label, cfg, root=home), home)
        else:
            run = Run.open(resume, root=home)
        if not strategy.trains:
            strategy.serve(_builder(task, cfg), cfg)
            return None
        trainer = Trainer(task, cfg, run, metric=metric, mode=mode, strategy=strategy)
        trainer.on_step = on_step
        fit = trainer.fit(resume=resume is not None)
        strategy.close(ok=True)
        return fit


class _joined:
    """``with _joined(cfg) as strategy``: the strategy (joining the process group), closed at
    the end: cleanly after success, at once after an error."""

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg
        self.strategy: Strategy | None = None

    def __enter__(self) -> Strategy:
        check_strategy_name(self.cfg.strategy)
        self.strategy = make_strategy(self.cfg)
        return self.strategy

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> None:
        if self.strategy is not None:
            self.strategy.close(ok=kind is None)


def write_run_files(run: Run, data: Any) -> None:
    """Write what prepared data asks to keep with the run (``data.run_files()``: name -> text,
    e.g. the split), atomically, into the run folder."""
    files = getattr(data, "run_files", None)
    if not callable(files):
        return
    for name, text in files().items():
        write_text_atomic(run.path / name, text)


def _shared_run(strategy: Strategy, create: Callable[[], Run], home: str | Path | None) -> Run:
    """The new run: created by the main process, opened by the others with the id it sends."""
    run, error = None, None
    if strategy.is_main:
        try:
            run = create()
        except Exception as exc:  # the others wait for the id: send them word first
            error = exc
    ident = strategy.broadcast(None if run is None else run.id)
    if error is not None:
        raise error
    if ident is None:
        raise AbyssalError("the main process could not create the run (see its error)")
    return run if run is not None else Run.open(ident, root=home)


def _builder(task: TrainTask, cfg: TrainConfig) -> Callable[[], Any]:
    """How a serving process builds the model: as the trainer does (seeded, frozen set)."""

    def build() -> Any:
        from abyssal.core.devices import seed_everything

        seed_everything(cfg.seed)
        model = task.build_model()
        trainable_parameters(model, cfg.trainable, cfg.frozen)
        return model

    return build


def _checked_destination(
    solution: Solution, model_name: str | None, alias: str | None, home: str | Path | None
) -> _Destination:
    """The model name, alias, store and runs folder, checked before any data is read."""
    name = model_name or solution.name
    check_name(name)
    if alias is not None:
        check_alias(alias)
    store = ModelStore(home)
    store.check_writable()
    check_writable(runs_dir(home), "runs folder")
    return _Destination(store, name, alias, home)


def _typed_paths(typed: Any, resolved: Any) -> dict[str, str]:
    """Config paths that resolving changed, as typed and where: ``{"data.path": "t.csv (in
    /home/ana)"}``, kept in the lineage so that a moved file can be reported with both paths."""
    after = path_values(resolved)
    where = Path.cwd()
    return {k: f"{v} (in {where})" for k, v in path_values(typed).items() if after.get(k) != v}


def _check_device(cfg: Any) -> None:
    """The strategy is known; for one process, the device exists here and the precision suits
    it (distributed strategies check their devices when they start)."""
    check_strategy_name(cfg.train.strategy)
    if cfg.train.strategy == "local":
        autocast_dtype(cfg.train.precision, resolve_device(cfg.train.device))


def _train_new(
    solution: Solution, cfg: Any, data: Any, dest: _Destination, strategy: Strategy
) -> TrainOutcome | None:
    task = solution.task(cfg, data)  # checks the data against the config before a run exists
    check_names(cfg.train)
    if cfg.train.init_from:  # pinned and checked against the model before a run exists
        ref, state = warm_state(cfg.train.init_from)
        check_warm(task.build_model(), state, ref)
        cfg.train.init_from = ref
    if cfg.train.trainable is not None or cfg.train.frozen:  # patterns are checked up front too
        trainable_parameters(task.build_model(), cfg.train.trainable, cfg.train.frozen)
    if cfg.train.privacy.enabled:  # e.g. whole-graph batches are refused before a run exists
        plan_privacy(
            cfg.train,
            task,
            strategy_name=strategy.name,
            world_size=strategy.world_size,
            shard=strategy.shard,
            build_model=_builder(task, cfg.train),
        )
    run = _shared_run(
        strategy, lambda: Run.create("train", solution.name, cfg, root=dest.home), dest.home
    )
    if strategy.is_main:
        write_run_files(run, data)
    return _fit_and_register(solution, cfg, data, task, run, dest, strategy, resume=False)


def _fit_and_register(
    solution: Solution,
    cfg: Any,
    data: Any,
    task: Any,
    run: Run,
    dest: _Destination,
    strategy: Strategy,
    *,
    resume: bool,
) -> TrainOutcome | None:
    if not strategy.trains:
        strategy.serve(_builder(task, cfg.train), cfg.train)
        return None
    metric, mode = solution.monitor(cfg, data)
    trainer = Trainer(
        task, cfg.train, run, metric=metric, mode=mode, end_status="trained", strategy=strategy
    )
    fit = trainer.fit(resume=resume)
    # Leave the process group before the final evaluation and registration, which only the
    # main process does and which may take longer than train.timeout_s on a large graph: the
    # others must not wait for it in a collective that would time out and fail the job.
    strategy.close(ok=True)
    if not strategy.is_main:
        return None
    try:
        metrics = _final_metrics(solution, cfg, data, fit)
        version = _register(solution, cfg, data, fit, run, metrics, dest)
    except KeyboardInterrupt:
        run.set_status("interrupted", "interrupted before the model was registered")
        raise
    except BaseException as exc:
        why = f"trained, but registering the model failed ({type(exc).__name__}: {exc})"
        run.set_status("failed", f"{why}; resume the run to register it")
        raise
    run.set_metrics(metrics)
    run.add_output(version.ref)
    run.set_status("completed")
    return TrainOutcome(run, version, metrics, fit)


def _register(
    solution: Solution,
    cfg: Any,
    data: Any,
    fit: FitResult,
    run: Run,
    metrics: dict[str, float],
    dest: _Destination,
) -> ModelVersion:
    model = getattr(fit.model, "module", fit.model)
    stored = solution.registration(cfg, model, data)
    version = dest.store.register(
        dest.name,
        None if stored is not None else fit.model.state_dict(),
        artifacts=stored.artifacts if stored is not None else (),
        base=stored.base if stored is not None else None,
        solution=solution.name,
        config={
            **version_config(solution, cfg, solution.model_spec(cfg, data)),
            "headline_metric": solution.headline_metric(cfg, data),
        },
        metrics=metrics,
        lineage={
            "data_fingerprint": data.fingerprint,
            "data": getattr(data, "description", ""),
            **({"paths_as_typed": dest.typed_paths} if dest.typed_paths else {}),
            **({"parent": cfg.train.init_from} if cfg.train.init_from else {}),
            **_plugin_lineage(solution.name),
            **(dict(stored.lineage) if stored is not None else {}),
        },
        run_id=run.id,
    )
    if dest.alias is not None:
        dest.store.set_alias(version.name, dest.alias, version.version)
    return version


def _plugin_lineage(solution_name: str) -> dict[str, Any]:
    """``{"plugin": {"package", "version"}}`` when the solution comes from an installed
    plugin package, else nothing (abyssal's own code is in the code lineage)."""
    from abyssal.solutions import SOLUTIONS

    plugin = SOLUTIONS.origin(solution_name)
    if plugin is None:
        return {}
    return {"plugin": {"package": plugin.package, "version": plugin.version}}


def _final_metrics(solution: Any, cfg: Any, data: Any, fit: FitResult) -> dict[str, float]:
    # on the training device: a model trained on a GPU is evaluated there too
    metrics = dict(solution.evaluate(cfg, fit.model, data))
    metrics.update(solution.baselines(cfg, data))
    metrics["best_epoch"] = -1 if fit.best_epoch is None else fit.best_epoch
    metrics["best_step"] = -1 if fit.best_step is None else fit.best_step
    metrics["epochs_run"] = fit.epochs_run
    metrics.update(fit.privacy)  # epsilon, delta, noise_multiplier, max_grad_norm (DP-SGD)
    return metrics


def _already_registered(run: Run, version: ModelVersion, dest: _Destination) -> TrainOutcome:
    """A resumed run whose version is in the store: record it (if a kill came first), return it."""
    if dest.alias is not None:
        dest.store.set_alias(version.name, dest.alias, version.version)
    run.add_output(version.ref)
    run.set_status("completed")  # releases the lock
    return TrainOutcome(run, version, dict(version.metrics), None)
