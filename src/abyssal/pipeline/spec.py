"""The pipeline file: which solution, data and training config, how the data is validated, the
quality gate, the retraining attempts and where a passing model goes.

A pipeline file is YAML mirroring :class:`PipelineConfig` (the one config system: unknown keys are
errors that list the valid ones, ``key=value`` overrides apply on top).

Example (``pipelines/fraud.yaml``)::

    solution: fraud
    config: configs/fraud/quickstart.yaml
    overrides: [data.path=demo/transactions.csv]
    validate:
      label: is_fraud
      keys: [transaction_id]
    gate:
      rules:
        - {metric: test_auprc, min: 0.3}
        - {metric: test_auprc, max_drop: 0.05}   # against the production version
        - {metric: p99_ms, max: 250}
    retrain:
      attempts: [[train.epochs=120], [train.lr=0.001, train.epochs=120]]

``steps`` lists the steps in the order they run (default: the five built-ins); installed
packages add their own (entry-point group ``abyssal.pipeline_steps``), given settings in
``step_options``::

    steps: [validate, train, perf, gate, backtest, deploy]
    step_options:
      backtest: {window_days: 90}
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from abyssal.core.config import field, load_config
from abyssal.core.errors import ConfigError


@dataclass
class ValidateConfig:
    """Checks of the training table before anything trains."""

    table: str = field(
        "data.path",
        help="the training config's key naming the table to check (CSV or Parquet); checks "
        "are skipped when it names a folder",
    )
    label: str | None = field(None, help="the label column (label balance is checked)")
    keys: list[str] = field(default_factory=list, help="columns whose values must be unique")
    min_rows: int = field(1, help="fewer rows is an error")
    min_label_share: float = field(
        0.0, help="the rarest label's share below this is an error (0: not checked)"
    )
    max_missing: float = field(
        0.5, help="a column's share of missing values above this is an error"
    )
    drift: bool = field(
        True, help="compare with the table the production version was trained on (PSI, KS)"
    )
    ignore: list[str] = field(
        default_factory=list,
        help="columns left out of drift (a timestamp always moves; ids are left out anyway)",
    )
    psi: float = field(0.25, help="a feature with a PSI above this has drifted")
    max_drifted: float = field(
        0.5,
        help="stop when more than this share of the features drifted (1: drift only reported)",
    )
    pii: Literal["report", "stop", "off"] = field(
        "report",
        help="scan the table for personal data (abyssal.data.pii): list it in the report, stop "
        "the run, or skip the scan",
    )
    embedding: bool = field(
        True,
        help="for text and images: embed a sample of the production version's data and of the "
        "new data with that version and compare them (MMD with a permutation test)",
    )
    embedding_rows: int = field(256, help="rows (texts, images) embedded from each side")
    embedding_alpha: float = field(
        0.01, help="stop when the embeddings' permutation p-value is below this (0: reported only)"
    )

    def __post_init__(self) -> None:
        if self.min_rows < 0:
            raise ConfigError(f"validate.min_rows must be >= 0, got {self.min_rows}")
        for name in ("min_label_share", "max_missing", "max_drifted"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise ConfigError(f"validate.{name} must be in [0, 1], got {value}")
        if self.psi <= 0:
            raise ConfigError(f"validate.psi must be > 0, got {self.psi}")
        if self.embedding_rows < 2:
            raise ConfigError(f"validate.embedding_rows must be >= 2, got {self.embedding_rows}")
        if not 0 <= self.embedding_alpha < 1:
            raise ConfigError(
                f"validate.embedding_alpha must be in [0, 1), got {self.embedding_alpha}"
            )


@dataclass
class GateRule:
    """One condition on a metric: ``min``/``max`` bounds, and ``max_drop``/``max_rise`` against
    the production version's value of the same metric (skipped when there is none)."""

    metric: str = field(
        "",
        help="a metric of the trained version (e.g. test_auprc) or of the performance test "
        "(p50_ms, p99_ms, throughput, size_mb, cost_per_1000)",
    )
    min: float | None = field(None, help="the metric must be at least this")
    max: float | None = field(None, help="the metric must be at most this")
    max_drop: float | None = field(None, help="at most this much below production's value")
    max_rise: float | None = field(None, help="at most this much above production's value")

    def __post_init__(self) -> None:
        if not self.metric:
            raise ConfigError("gate.rules: every rule names a metric")
        bounds = (self.min, self.max, self.max_drop, self.max_rise)
        if all(b is None for b in bounds):
            raise ConfigError(f"gate rule on {self.metric}: give min, max, max_drop or max_rise")
        if any(b is not None and not math.isfinite(b) for b in bounds):
            raise ConfigError(f"gate rule on {self.metric}: bounds must be finite numbers")


@dataclass
class GateConfig:
    """What a trained version must meet to be deployed."""

    rules: list[GateRule] = field(default_factory=list, help="all must hold")
    audit: str | None = field(
        None,
        help="an audit policy file (abyssal audit): the trained version must pass it; the audit "
        "is stored with the version",
    )


@dataclass
class PerfConfig:
    """The performance test of a trained version."""

    batch: int = field(32, help="items per call: the serving batch size")
    device: str = field("cpu", help="where it is timed (cpu, cuda)")
    reps: int = field(30, help="timed calls at most")
    price_per_hour: float = field(
        0.0, help="what an hour of the device costs, for the cost per 1,000 predictions"
    )

    def __post_init__(self) -> None:
        if self.batch < 1 or self.reps < 1:
            raise ConfigError("perf.batch and perf.reps must be >= 1")
        if self.price_per_hour < 0:
            raise ConfigError(f"perf.price_per_hour must be >= 0, got {self.price_per_hour}")


@dataclass
class RetrainConfig:
    """What a refused version leads to: each attempt adds its overrides to the training config
    (a documented change: more epochs, another learning rate, stronger class weights)."""

    attempts: list[list[str]] = field(
        default_factory=list, help="override lists, tried in order after a refusal"
    )


@dataclass
class DeployConfig:
    alias: str = field("production", help="the alias a passing version gets")


DEFAULT_STEPS = ("validate", "train", "perf", "gate", "deploy")
"""The built-in steps, in order: a pipeline's ``steps`` by default."""

STEP_ORDER = (
    ("validate", "train", "validation checks the data before anything trains"),
    ("train", "perf", "the performance test times the trained version"),
    ("train", "gate", "the gate judges the trained version"),
    ("perf", "gate", "the gate reads the performance test's figures"),
)
"""``(before, after, why)``: the order the built-in steps need when both are listed."""


@dataclass
class PipelineConfig:
    """A pipeline: validate -> train -> performance test -> gate -> deploy, or retrain."""

    solution: str = field("", help="the solution trained (e.g. fraud)")
    name: str = field("", help="the pipeline's name (default: the file's stem)")
    model: str = field("", help="the model's name in the store (default: the solution's)")
    config: str | None = field(None, help="the training config file", path=True)
    overrides: list[str] = field(default_factory=list, help="key=value over the training config")
    validate: ValidateConfig = field(default_factory=ValidateConfig)
    gate: GateConfig = field(default_factory=GateConfig)
    perf: PerfConfig = field(default_factory=PerfConfig)
    retrain: RetrainConfig = field(default_factory=RetrainConfig)
    deploy: DeployConfig = field(default_factory=DeployConfig)
    steps: list[str] = field(
        default_factory=lambda: list(DEFAULT_STEPS),
        help="the steps in the order they run: the built-ins (validate, train, perf, gate, "
        "deploy) and steps installed packages add (entry-point group abyssal.pipeline_steps); "
        "train and deploy are required, deploy last",
    )
    step_options: dict[str, dict[str, Any]] = field(
        default_factory=dict,
        help="settings of added steps, by step name (each step reads its own)",
    )

    def __post_init__(self) -> None:
        if not self.solution:
            raise ConfigError("a pipeline names its solution (solution: fraud)")
        for attempt in self.retrain.attempts:
            bad = [o for o in attempt if "=" not in o]
            if bad:
                raise ConfigError(f"retrain.attempts: {bad} are not key=value overrides")
        check_steps(self.steps)
        for name, options in list(self.step_options.items()):
            if name not in self.steps:
                raise ConfigError(
                    f"step_options: {name!r} is not one of the steps ({', '.join(self.steps)})"
                )
            if options is None:
                self.step_options[name] = {}
            elif not isinstance(options, dict):
                raise ConfigError(f"step_options.{name}: expected a mapping, got {options!r}")


def check_steps(steps: list[str]) -> None:
    """Refuse a ``steps`` list that cannot run: an unknown name (the choices are listed,
    plugins included), a name listed twice, no ``train`` or ``deploy``, ``deploy`` not last, or
    built-in steps out of the order they need (:data:`STEP_ORDER`). Nothing is imported: a
    plugin is checked by name here and imported when the pipeline runs.

    Raises:
        ConfigError: naming what is wrong.
    """
    from abyssal.pipeline.steps import STEPS

    listed = ", ".join(map(str, steps))
    seen: set[str] = set()
    for name in steps:
        if name in seen:
            raise ConfigError(f"steps: {name!r} is listed twice ({listed})")
        seen.add(name)
        if not isinstance(name, str) or not name or not all(c.isalnum() or c in "-_" for c in name):
            raise ConfigError(f"steps: {name!r} is not a step name (letters, digits, '-', '_')")
        if name in STEPS:
            continue
        claimed = STEPS.conflicts().get(name)
        if claimed is not None:
            raise ConfigError(
                f"steps: pipeline step {name!r} is claimed by {claimed}: uninstall one, or "
                "rename its entry point"
            )
        raise ConfigError(
            f"steps: unknown pipeline step {name!r}; choose from: {', '.join(STEPS.names())}"
        )
    for required in ("train", "deploy"):
        if required not in seen:
            raise ConfigError(f"steps: {required!r} is required ({listed})")
    if steps[-1] != "deploy":
        raise ConfigError(f"steps: 'deploy' comes last ({listed})")
    at = {name: k for k, name in enumerate(steps)}
    for before, after, why in STEP_ORDER:
        if before in at and after in at and at[before] > at[after]:
            raise ConfigError(f"steps: {before!r} comes before {after!r}: {why} ({listed})")


def load_pipeline(path: str | Path, overrides: list[str] | None = None) -> PipelineConfig:
    """The pipeline in ``path`` with ``overrides``; the training config's path is read relative
    to the working directory, as on the command line.

    Raises:
        ConfigError: a missing file, bad YAML, an unknown key or a bad value (named).
    """
    cfg = load_config(PipelineConfig, path, overrides)
    cfg.name = cfg.name or Path(path).stem
    cfg.model = cfg.model or cfg.solution
    return cfg
