"""The solution protocol: everything generic (training, evaluation, optimization, serving, gating,
benchmarking) works on any solution through this one interface.

A solution is a registered recipe for one problem. Its **training half** reads its data formats,
builds its model, hands the trainer a :class:`~abyssal.contracts.task.TrainTask` and evaluates.
Its **serving half** says what the model's inputs look like (for graph capture and export), how a
raw request is parsed, validated and batched, how a batch becomes responses, how its metrics are
shown, and how to make sample data. A new solution is one package under ``solutions/`` plus one
registration line in ``abyssal.solutions``.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol, runtime_checkable

from abyssal.core.errors import AbyssalError

if TYPE_CHECKING:
    import torch

    from abyssal.contracts.task import TrainTask


class PreparedData(Protocol):
    """Data a solution has read and prepared for one config.

    Attributes:
        fingerprint: identifies the input data (and split); recorded in every version's lineage.
        description: where the data came from, for reports.
    """

    fingerprint: str
    description: str


@dataclass(frozen=True)
class MetricLayout:
    """How a solution's metrics are shown: one row per (model, split), one column per metric.

    Metric keys are ``<prefix><split>_<name>``: ``test_auprc`` for the model itself,
    ``gbdt_own_test_auprc`` for a baseline with prefix ``gbdt_own_``.

    Args:
        columns: ``(name, header)`` per column, e.g. ``("auprc", "AUPRC")``.
        models: ``(prefix, label)`` per model row; ``""`` is the trained model.
        splits: the splits shown, in order.
        extras: keys printed on one line under the table (thresholds, epochs).
        headline: the one metric a list of versions shows, e.g. ``"test_auprc"``.
        confusion: splits whose confusion matrix is shown under the table, from the metrics
            ``<split>_confusion__<true class>__<predicted class>`` (counts).

    Example:
        >>> layout = MetricLayout(columns=(("acc", "accuracy"),), headline="test_acc")
        >>> layout.rows({"val_acc": 0.5, "test_acc": 0.75})
        [['model', 'val', 0.5], ['model', 'test', 0.75]]
    """

    columns: tuple[tuple[str, str], ...]
    models: tuple[tuple[str, str], ...] = (("", "model"),)
    splits: tuple[str, ...] = ("val", "test")
    extras: tuple[str, ...] = ("best_epoch", "epochs_run")
    headline: str = ""
    confusion: tuple[str, ...] = ()

    @property
    def headers(self) -> list[str]:
        """``["model", "split", *column headers]``."""
        return ["model", "split", *(header for _, header in self.columns)]

    def rows(self, metrics: Mapping[str, Any]) -> list[list[Any]]:
        """One row per model and split that has at least one of the columns' metrics."""
        out = []
        for prefix, label in self.models:
            for split in self.splits:
                values = [metrics.get(f"{prefix}{split}_{name}") for name, _ in self.columns]
                if any(v is not None for v in values):
                    out.append([label, split, *values])
        return out

    def table(self, metrics: Mapping[str, Any]) -> tuple[list[str], list[list[Any]]]:
        """Headers and :meth:`rows`, without the columns no row has a value for.

        Example:
            >>> layout = MetricLayout(columns=(("acc", "accuracy"), ("rmse", "RMSE")))
            >>> layout.table({"test_acc": 0.75})
            (['model', 'split', 'accuracy'], [['model', 'test', 0.75]])
        """
        rows = self.rows(metrics)
        keep = [0, 1] + [
            i for i in range(2, len(self.headers)) if any(r[i] is not None for r in rows)
        ]
        return [self.headers[i] for i in keep], [[r[i] for i in keep] for r in rows]

    def extra_values(self, metrics: Mapping[str, Any]) -> dict[str, Any]:
        """The :attr:`extras` present in ``metrics``, in order."""
        return {k: metrics[k] for k in self.extras if k in metrics}

    def confusion_tables(
        self, metrics: Mapping[str, Any]
    ) -> list[tuple[str, list[str], list[list[Any]]]]:
        """``(split, headers, rows)`` per :attr:`confusion` split found in ``metrics``: one row
        per true class, one column per predicted class.

        Example:
            >>> layout = MetricLayout(columns=(), confusion=("test",))
            >>> m = {"test_confusion__a__a": 3, "test_confusion__a__b": 1,
            ...      "test_confusion__b__a": 0, "test_confusion__b__b": 2}
            >>> layout.confusion_tables(m)[0][2]
            [['a', 3, 1], ['b', 0, 2]]
        """
        out = []
        for split in self.confusion:
            prefix = f"{split}_confusion__"
            cells = {
                tuple(k[len(prefix) :].split("__", 1)): v
                for k, v in metrics.items()
                if k.startswith(prefix) and "__" in k[len(prefix) :]
            }
            if not cells:
                continue
            classes = list(dict.fromkeys(true for true, _ in cells))
            headers = ["true \\ predicted", *classes]
            rows = [[t, *(cells.get((t, p), 0) for p in classes)] for t in classes]
            out.append((split, headers, rows))
        return out


@dataclass(frozen=True)
class Registration:
    """What a trained model version stores, when not simply all of its weights.

    Attributes:
        artifacts: the files (an adapter's tensors, a head, ...).
        base: what the version builds on: another version's ref or an external base (e.g. the
            Hugging Face folder whose weights the model loads itself).
        lineage: extra lineage entries (e.g. the fingerprint of the base's tensors).
    """

    artifacts: list[Any]
    base: Any = None
    lineage: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@runtime_checkable
class Predictor(Protocol):
    """Serves one loaded model version: raw requests in, responses out.

    A service calls :meth:`parse` on each request as it arrives (bad input is refused there,
    before it joins a batch), groups parsed requests, and calls :meth:`predict` on the group. A
    predictor may keep state between calls (the fraud solution's live graph), so it is used from
    one thread at a time.
    """

    def parse(self, payload: Mapping[str, Any]) -> Any:
        """One request, validated. Raises ``DataError`` naming the field and what was expected."""

    def predict(self, items: Sequence[Any]) -> list[dict[str, Any]]:
        """Responses (JSON-ready dicts), one per parsed item, in order."""


@runtime_checkable
class PredictionReport(Protocol):
    """What predicting a whole file returns.

    Attributes:
        rows: how many inputs were scored.
        output: the file the predictions were written to, if any.
    """

    rows: int
    output: Path | None

    def render(self, top: int = 10) -> str:
        """A summary for a terminal, listing at most ``top`` items of each kind."""


class Solution(ABC):
    """Base class of every solution.

    Class attributes:
        name: registry name (``"fraud"``).
        config_cls: the solution's config dataclass (must have a ``train`` field).
        default_metric: the validation metric early stopping and gates watch.
        metric_layout: how its metrics are shown.
        sample_config_cls: the options of :meth:`generate_sample` (a config dataclass).
    """

    name: ClassVar[str]
    config_cls: ClassVar[type]
    default_metric: ClassVar[str]
    metric_layout: ClassVar[MetricLayout]
    sample_config_cls: ClassVar[type | None] = None

    # -- the training half ---------------------------------------------------------------------

    @abstractmethod
    def prepare(self, cfg: Any) -> PreparedData:
        """Read and validate the data that ``cfg`` points at."""

    @abstractmethod
    def task(self, cfg: Any, data: PreparedData) -> TrainTask:
        """The :class:`~abyssal.contracts.task.TrainTask` that trains the model on ``data``."""

    @abstractmethod
    def model_spec(self, cfg: Any, data: PreparedData) -> dict[str, Any]:
        """What, besides the config, rebuilds the model and its input handling; JSON."""

    @abstractmethod
    def build_model(self, cfg: Any, spec: dict[str, Any]) -> torch.nn.Module:
        """A fresh model for ``cfg`` and ``spec`` (weights are loaded by the caller)."""

    @abstractmethod
    def evaluate(self, cfg: Any, model: torch.nn.Module, data: PreparedData) -> dict[str, float]:
        """Metrics of ``model`` (on any device) on ``data``'s splits, flat ``name -> value``."""

    def baselines(self, cfg: Any, data: PreparedData) -> dict[str, float]:
        """Metrics of reference models on the same features and splits; none by default."""
        return {}

    def monitor(self, cfg: Any, data: PreparedData) -> tuple[str, Literal["max", "min"]]:
        """The validation metric to watch and whether larger is better."""
        return self.default_metric, "max"

    def headline_metric(self, cfg: Any, data: PreparedData) -> str:
        """The one test metric a list of versions shows (stored with each version)."""
        return self.metric_layout.headline

    def registration(
        self, cfg: Any, model: torch.nn.Module, data: PreparedData
    ) -> Registration | None:
        """What the trained ``model``'s version stores; ``None`` (the default): its whole state
        dict as the weights. A LoRA fine-tune returns its adapter on an external base."""
        return None

    # -- the serving half ----------------------------------------------------------------------

    def example_inputs(self, cfg: Any, spec: dict[str, Any]) -> tuple[Any, ...]:
        """Small, valid positional inputs of ``model.forward`` (for graph capture and export)."""
        raise self._lacks("example_inputs", "example model inputs")

    def input_axes(self, cfg: Any, spec: dict[str, Any]) -> tuple[dict[int, str], ...]:
        """The named axes of each input of :meth:`example_inputs` that vary between calls.

        ``"batch"`` is the batch axis (throughput is counted along it); other names (``"nodes"``,
        ``"edges"``, ``"tokens"``) mark sizes that differ between calls. Export and compilation
        keep every named axis dynamic. By default the first axis of each input is the batch.
        """
        return tuple({0: "batch"} for _ in self.example_inputs(cfg, spec))

    def model_inputs(self, cfg: Any, data: PreparedData, batch: int, seed: int) -> tuple[Any, ...]:
        """Real positional inputs of ``model.forward`` from prepared data: ``batch`` items (along
        the ``"batch"`` axis) drawn with ``seed``. Optimization measures latency on these, checks
        exported graphs on them and calibrates INT8 with them. A solution whose inputs have no
        batch axis (a whole graph) ignores ``batch``."""
        raise self._lacks("model_inputs", "model inputs drawn from its data")

    def predictor(self, loaded: Any) -> Predictor:
        """A :class:`Predictor` over a loaded model version (``abyssal.solutions.LoadedModel``)."""
        raise self._lacks("predictor", "request parsing and prediction")

    def predict_file(
        self,
        loaded: Any,
        path: str | Path,
        *,
        out: str | Path | None = None,
        explain: str | Path | None = None,
    ) -> PredictionReport:
        """Predict every row of the file ``path``; write them to ``out`` (atomically) if given.

        Every row is validated before anything is written; an error names the file and row. By
        default each row of the table is one request to :meth:`predictor`. ``explain``: a folder
        for explanations (heat maps), for solutions that make them.
        """
        from abyssal.contracts.prediction import predict_table

        if explain is not None:
            raise self._lacks("predict_file(explain=...)", "explanations of predictions")

        return predict_table(self.predictor(loaded), path, ref=loaded.version.ref, out=out)

    def adapter_onto(self, base_model: torch.nn.Module, ref: str, store: Any = None) -> Any:
        """The adapter version ``ref`` laid onto ``base_model`` (refused if it is not the base
        the adapter was trained on); for solutions that fine-tune adapters."""
        raise self._lacks("adapter_onto", "adapters")

    def merge_adapter(
        self, ref: str, *, name: str | None = None, alias: str | None = None, store: Any = None
    ) -> Any:
        """Fold the adapter version ``ref`` into its base and register the plain model (a new
        version whose parent is the adapter); for solutions that fine-tune adapters."""
        raise self._lacks("merge_adapter", "adapters")

    # -- the governance half (abyssal.govern) ---------------------------------------------------

    def held_out(
        self, cfg: Any, model: torch.nn.Module, data: PreparedData, *, split: str = "test"
    ) -> Any:
        """The held-out (``split``: ``test``, or ``val`` to choose operating points) split's
        predictions, one row per scored item, as a
        ``pandas.DataFrame`` with columns ``id`` (the item: a row number, an account, a file),
        ``label`` (its true label) and ``score`` (the model's probability of the positive class
        for a binary task; for more classes, ``prediction`` and ``probability`` too). The audit's
        fairness table and its mitigation work on it."""
        raise self._lacks("held_out", "held-out predictions for an audit")

    def explain(
        self,
        cfg: Any,
        model: torch.nn.Module,
        data: PreparedData,
        n: int,
        *,
        out: Path | None = None,
    ) -> Any:
        """Explanations of ``n`` held-out predictions and of the model as a whole, as an
        :class:`abyssal.contracts.explain.Explanations`: per-prediction attributions (integrated
        gradients, Grad-CAM, attention) and a global permutation importance, plus the
        solution's own explanations (rings, attributes, heat maps); pictures go to the folder
        ``out`` (a new temporary folder when ``None``)."""
        raise self._lacks("explain", "explanations for an audit")

    def decision_score(self, loaded: Any) -> Any:
        """A function from one of the predictor's responses (or one row of the file
        :meth:`predict_file` writes) to the score a decision reads: for a binary classifier
        the positive class's probability (the class :meth:`held_out`'s ``score`` is about),
        for more classes the predicted class's probability (accept or review points), so
        operating points (:mod:`abyssal.decide`) can turn responses into decisions; ``None``
        (the default) for models that decide nothing."""
        return None

    def decision_frame(
        self, cfg: Any, model: Any, data: PreparedData, *, split: str = "test"
    ) -> Any:
        """The items the service decides on, scored like :meth:`held_out` (``id, label,
        score`` for two classes; ``id, label, prediction, probability`` for more): operating
        points are chosen on this frame of the validation split. The default is
        :meth:`held_out`; a solution whose service scores other items than its benchmark
        (fraud: transactions, not accounts) overrides it."""
        return self.held_out(cfg, model, data, split=split)

    def score_table(self, loaded: Any, table: Any) -> Any:
        """The positive class's probability for every row of ``table`` (a DataFrame of new
        items in the solution's table format, with their history where the solution needs it),
        as a float array in the table's row order: what prequential evaluation
        (:mod:`abyssal.decide.prequential`) scores a period of a stream with."""
        raise self._lacks("score_table", "scoring a table of items in one call")

    # -- the benchmark half (abyssal.bench) -----------------------------------------------------

    perturbations: ClassVar[tuple[str, ...]] = ()
    """The perturbation kinds (:data:`abyssal.data.perturb.KINDS`) :meth:`perturb` applies."""

    def perturb(self, cfg: Any, data: PreparedData, perturbation: Any) -> PreparedData:
        """A copy of ``data`` whose test split's inputs carry ``perturbation`` (an
        :class:`abyssal.data.perturb.Perturbation` of a kind in :attr:`perturbations`), seeded
        by its seed; ``data`` itself is left unchanged and labels and ids stay as they were, so
        :meth:`held_out` on the copy scores the same items.

        Raises:
            ConfigError: a kind this solution's inputs do not have (the message lists those
                they have).
        """
        raise self._lacks("perturb", "perturbed test data for robustness benchmarks")

    def item_attributes(self, cfg: Any, data: PreparedData) -> Any:
        """One row per item :meth:`held_out` scores, as a ``pandas.DataFrame`` with ``id`` (the
        same ids) and the attributes benchmark slices select on (a nodule's diameter, an
        account's degree, a text's length, a table's own columns, ...)."""
        raise self._lacks("item_attributes", "item attributes for benchmark slices")

    def generate_sample(self, options: Any, out: Path) -> list[str]:
        """Write sample data (``options`` is a :attr:`sample_config_cls`) into the folder ``out``.

        Returns:
            One line per file written, saying what it holds.
        """
        raise self._lacks("generate_sample", "sample data")

    def _lacks(self, method: str, what: str) -> AbyssalError:
        return AbyssalError(
            f"solution '{self.name}' does not provide {what} (Solution.{method} is not implemented)"
        )


def held_out_frame(
    ids: Sequence[Any], labels: Any, probability: Any, classes: Sequence[str]
) -> Any:
    """The frame :meth:`Solution.held_out` returns, from class indices and probabilities.

    Two classes: ``id, label`` (1 for the second class), ``score`` (its probability); more:
    ``id, label``, ``prediction`` (class names) and ``probability`` (of the prediction).

    Shapes:
        labels: (n,) class indices; probability: (n, K) with K = ``len(classes)``.
    """
    import numpy as np
    import pandas as pd

    probability = np.asarray(probability, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    out = pd.DataFrame({"id": list(ids)})
    names = np.asarray(list(classes), dtype=object)
    if len(names) == 2:
        out["label"] = labels
        out["score"] = probability[:, 1]
        return out
    out["label"] = names[labels]
    out["prediction"] = names[probability.argmax(axis=1)]
    out["probability"] = probability.max(axis=1)
    return out
