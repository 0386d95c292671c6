"""Benchmark suites: registered sets of tasks, each a solution, its data, metrics, a protocol,
published anchors, perturbations and slices.

A suite is a YAML file (``abyssal bench list`` shows the ones that ship with the package, in
``abyssal/bench/suites/``; any file path works too)::

    name: tabular-breast-cancer
    title: Wisconsin diagnostic breast cancer
    tasks:
      - name: diagnosis
        solution: tabular
        data: [data.source=breast_cancer, data.split_seed=0]   # overrides of the model's config
        protocol: {kind: fixed}
        primary: auroc
        metrics: [auroc, accuracy, f1, brier]
        perturbations: ["feature_noise:0.1", "feature_noise:0.5"]
        slices:
          - {name: large tumours, where: "`mean radius` >= 15"}
        anchors:
          - {name: "...", metric: accuracy, value: 0.97, source: "...", url: "..."}

``${datasets}`` in a data override is the data folder given by ``--datasets`` or the
``ABYSSAL_DATASETS`` environment variable (the folder that holds ``bitcoin_otc/``,
``lidc_nodules/``, ...); any other ``${name}`` is given with ``--var name=VALUE``.

Protocols:

- ``fixed``: every model is scored on the test split the task's overrides give (the same items
  for every model, so models are compared pairwise).
- ``kfold``: each model version is scored on its own held-out fold (``key``, the config field
  that names the fold, is kept from the version); a model argument ``a,b,c,d,e`` pools one
  version per fold into out-of-fold predictions over the whole data set. ``group`` (an item
  attribute, e.g. the patient) keeps a group's items together when resampling.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

from abyssal.core.config import field, load_config
from abyssal.core.errors import ConfigError
from abyssal.data.perturb import Perturbation

SUITES_PACKAGE = "abyssal.bench.suites"
DATASETS_ENV = "ABYSSAL_DATASETS"
_VARIABLE = re.compile(r"\$\{([a-z_]+)\}")


@dataclass
class Anchor:
    """A published result a task is compared against (not a model we ran)."""

    name: str = field("", help="who and what (e.g. 'Shen et al. 2017, multi-crop CNN')")
    metric: str = field("", help="the metric it reports, as the task names metrics")
    value: float = field(float("nan"), help="the reported value")
    source: str = field("", help="the citation")
    url: str = field("", help="where to read it")
    note: str = field("", help="what differs from the task (data subset, split, protocol)")


@dataclass
class SliceSpec:
    """A subset of the test items, by their attributes (``Solution.item_attributes``) and
    ``label``, as a pandas query."""

    name: str = field("", help="how reports name it")
    where: str = field("", help="a pandas query over item attributes and label")


@dataclass
class Protocol:
    """How items are held out: ``fixed`` (one split for every model) or ``kfold``."""

    kind: Literal["fixed", "kfold"] = field("fixed", help="fixed split or k-fold")
    key: str = field("", help="kfold: the config field naming the held-out fold (data.fold)")
    folds: int = field(0, help="kfold: how many folds a pooled model must have (0: any)")
    group: str = field("", help="an item attribute whose groups are resampled whole")


@dataclass
class TaskSpec:
    """One benchmark task."""

    name: str = field("", help="the task's name within its suite")
    title: str = field("", help="a one-line description")
    solution: str = field("", help="the solution whose models it scores")
    data: list[str] = field(default_factory=list, help="key=value overrides of a model's config")
    protocol: Protocol = field(default_factory=Protocol)
    primary: str = field("", help="the metric leaderboards rank by (default: the first)")
    metrics: list[str] = field(default_factory=list, help="metrics to report")
    threshold: float = field(0.5, help="score at or above which a binary prediction is positive")
    perturbations: list[str] = field(default_factory=list, help="KIND:LEVEL, e.g. noise:0.05")
    slices: list[SliceSpec] = field(default_factory=list)
    anchors: list[Anchor] = field(default_factory=list)

    def __post_init__(self) -> None:
        from abyssal.bench.metrics import metric

        where = f"task '{self.name}'"
        if not self.name or not self.solution:
            raise ConfigError(f"{where}: a task needs a name and a solution")
        if not self.metrics:
            raise ConfigError(f"{where}: name at least one metric (metrics: [auroc, ...])")
        for name in self.metrics:
            metric(name)
        self.primary = self.primary or self.metrics[0]
        if self.primary not in self.metrics:
            raise ConfigError(f"{where}: primary metric '{self.primary}' is not in its metrics")
        for a in self.anchors:
            if a.metric not in self.metrics:
                raise ConfigError(f"{where}: anchor '{a.name}' reports '{a.metric}', not a metric")
        if self.protocol.kind == "kfold" and not self.protocol.key:
            raise ConfigError(f"{where}: a kfold protocol names its fold field (protocol.key)")
        for text in self.perturbations:
            Perturbation.parse(text)
        names = [s.name for s in self.slices]
        if len(set(names)) != len(names) or not all(names):
            raise ConfigError(f"{where}: slices need unique, non-empty names")

    @property
    def parsed_perturbations(self) -> list[Perturbation]:
        return [Perturbation.parse(t, seed=k) for k, t in enumerate(self.perturbations)]


@dataclass
class Suite:
    """A benchmark suite: tasks and where it came from."""

    name: str = field("", help="the suite's name (default: the file's stem)")
    title: str = field("", help="a one-line description")
    description: str = field("", help="what it measures and how to get the data")
    tasks: list[TaskSpec] = field(default_factory=list, help="at least one task")

    def __post_init__(self) -> None:
        if not self.tasks:
            raise ConfigError(f"suite '{self.name}': it has no tasks")
        names = [t.name for t in self.tasks]
        if len(set(names)) != len(names):
            raise ConfigError(f"suite '{self.name}': task names repeat: {names}")

    def task(self, name: str) -> TaskSpec:
        for t in self.tasks:
            if t.name == name:
                return t
        raise ConfigError(
            f"suite '{self.name}' has no task '{name}'; tasks: {[t.name for t in self.tasks]}"
        )


def shipped_suites() -> dict[str, Path]:
    """The suites that ship with the package, by name."""
    folder = resources.files(SUITES_PACKAGE)
    found = {}
    for entry in folder.iterdir():
        if entry.name.endswith(".yaml"):
            found[entry.name.removesuffix(".yaml")] = Path(str(entry))
    return dict(sorted(found.items()))


def suite_path(name_or_path: str | Path) -> Path:
    """A shipped suite's file by name, or a suite file's path."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ConfigError(f"suite file '{path}' does not exist")
        return path
    shipped = shipped_suites()
    if str(name_or_path) not in shipped:
        raise ConfigError(
            f"no suite '{name_or_path}'; shipped suites: {', '.join(shipped)} (or give a file)"
        )
    return shipped[str(name_or_path)]


def load_suite(name_or_path: str | Path) -> Suite:
    """Read and check a suite (a shipped name or a YAML file)."""
    path = suite_path(name_or_path)
    suite = load_config(Suite, path)
    suite.name = suite.name or path.stem
    return suite


def resolve_overrides(
    overrides: list[str],
    datasets: str | Path | None = None,
    variables: dict[str, str] | None = None,
) -> list[str]:
    """``overrides`` with ``${datasets}`` replaced by the data folder (``datasets``, else
    ``$ABYSSAL_DATASETS``) and ``${NAME}`` by ``variables[NAME]`` (``--var NAME=VALUE``); a
    variable with no value is an error saying how to give it."""
    values = dict(variables or {})
    root = str(datasets) if datasets is not None else os.environ.get(DATASETS_ENV, "")
    if root:
        values.setdefault("datasets", root)

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            how = (
                f"give the data folder with --datasets DIR or the {DATASETS_ENV} environment "
                "variable"
                if name == "datasets"
                else f"give it with --var {name}=VALUE"
            )
            raise ConfigError(f"'{match.string}' names ${{{name}}}: {how}")
        return str(Path(values[name]).expanduser().resolve())

    return [_VARIABLE.sub(value, o) for o in overrides]
