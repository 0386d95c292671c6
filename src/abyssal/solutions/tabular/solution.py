"""The tabular solution: classification or regression on a table, a network beside boosted trees.

Example:
    >>> from abyssal.train.api import train
    >>> out = train("tabular", overrides=["data.source=breast_cancer"])  # doctest: +SKIP
    >>> out.metrics["test_auroc"], out.metrics["gbdt_test_auroc"]  # doctest: +SKIP
    (0.99, 0.99)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import pandas as pd
import torch

from abyssal.contracts.prediction import TablePredictionReport
from abyssal.contracts.solution import MetricLayout, Solution, held_out_frame
from abyssal.core.errors import AbyssalError, DataError
from abyssal.data.perturb import Perturbation
from abyssal.solutions.tabular.baselines import gbdt_metrics
from abyssal.solutions.tabular.bench import KINDS, perturb_table, row_attributes
from abyssal.solutions.tabular.config import TabularConfig, TabularSampleConfig
from abyssal.solutions.tabular.data import TabularData, prepare_tabular_data
from abyssal.solutions.tabular.predict import TabularPredictor, predict_rows_file
from abyssal.solutions.tabular.preprocessing import TablePreprocessor
from abyssal.solutions.tabular.sample import generate_sample
from abyssal.solutions.tabular.schema import TableSchema
from abyssal.solutions.tabular.task import (
    TabularTask,
    build_model,
    evaluate_network,
    split_outputs,
    table_spec,
)

_SMALLER_IS_BETTER = ("log_loss", "rmse", "mae")


class TabularSolution(Solution):
    """Predict a column of a table from its other columns, numeric and categorical.

    The metric layout holds classification and regression columns; a version fills those of its
    task, and tables leave out the empty ones. ``models list`` shows ``test_auroc`` for a
    classifier and ``test_rmse`` for a regressor.
    """

    name: ClassVar[str] = "tabular"
    config_cls: ClassVar[type] = TabularConfig
    default_metric: ClassVar[str] = "val_auroc"
    sample_config_cls: ClassVar[type] = TabularSampleConfig
    metric_layout: ClassVar[MetricLayout] = MetricLayout(
        columns=(
            ("auroc", "AUROC"),
            ("accuracy", "accuracy"),
            ("macro_f1", "macro-F1"),
            ("log_loss", "log-loss"),
            ("rmse", "RMSE"),
            ("mae", "MAE"),
            ("r2", "R²"),
            ("rows", "rows"),
        ),
        models=(("", "network"), ("gbdt_", "boosted trees")),
        extras=("best_epoch", "epochs_run", "gbdt_rounds", "train_rows", "test_positives"),
        headline="test_auroc",
    )

    # -- the training half ---------------------------------------------------------------------

    def prepare(self, cfg: TabularConfig) -> TabularData:
        return prepare_tabular_data(cfg.data)

    def task(self, cfg: TabularConfig, data: TabularData) -> TabularTask:
        return TabularTask(cfg, data, self.model_spec(cfg, data))

    def model_spec(self, cfg: TabularConfig, data: TabularData) -> dict[str, Any]:
        return {**table_spec(data), "pii": cfg.data.pii}

    def build_model(self, cfg: TabularConfig, spec: dict[str, Any]) -> torch.nn.Module:
        return build_model(cfg, spec)

    def evaluate(
        self, cfg: TabularConfig, model: torch.nn.Module, data: TabularData
    ) -> dict[str, float]:
        return evaluate_network(model, data, cfg.data.batch_size)

    def baselines(self, cfg: TabularConfig, data: TabularData) -> dict[str, float]:
        return gbdt_metrics(data, seed=cfg.train.seed) if cfg.baselines else {}

    def monitor(self, cfg: TabularConfig, data: TabularData) -> tuple[str, Literal["max", "min"]]:
        """``train.early_stopping_metric`` if set, else ``val_auroc`` (classification) or
        ``val_rmse`` (regression); losses and errors are minimised, the rest maximised."""
        default = "val_auroc" if data.schema.task == "classification" else "val_rmse"
        metric = cfg.train.early_stopping_metric or default
        return metric, "min" if metric.endswith(_SMALLER_IS_BETTER) else "max"

    def headline_metric(self, cfg: TabularConfig, data: TabularData) -> str:
        """``test_auroc`` for classification, ``test_rmse`` for regression."""
        return "test_auroc" if data.schema.task == "classification" else "test_rmse"

    def explain(
        self,
        cfg: TabularConfig,
        model: torch.nn.Module,
        data: TabularData,
        n: int,
        *,
        out: Path | None = None,
    ) -> Any:
        """Integrated gradients of ``n`` test rows and permutation importance of every column.

        Per row, the path of integrated gradients (Captum's ``LayerIntegratedGradients`` on the
        first linear layer's input) runs through the numbers (standardised, with their missing
        indicators) and every categorical column's embedding together, from a baseline of the
        training means and code 0 (missing) to the row. A column's score sums its parts (a number
        and its missing indicator; an embedding's entries), so a row's scores add up to the
        explained output (the predicted class's logit; regression: the standardised prediction)
        minus the baseline's. Each row's scores are drawn as a bar chart in ``out`` (default: a
        new temporary folder). Globally, each column is shuffled across the test rows (3
        repeats) and the drop of the headline metric (``test_auroc`` or ``test_rmse``) kept.
        """
        from abyssal.contracts.explain import (
            Attribution,
            Explanations,
            eager_network,
            explain_folder,
            explained_rows,
            integrated_gradients,
            permutation_importance,
            safe_name,
            top_scores,
            write_bar_chart,
        )
        from abyssal.solutions.tabular.model import TabularMLP
        from abyssal.solutions.tabular.schema import TableSchema
        from abyssal.solutions.tabular.task import TabularBatch, network_outputs, outputs_metrics

        net = eager_network(model, TabularMLP, "tabular")
        spec = getattr(net, "input_spec", None)
        if spec is not None and spec != table_spec(data):
            data = data.encoded_for(
                TableSchema.from_dict(spec["schema"]),
                TablePreprocessor.from_dict(spec["preprocessing"]),
            )
        pre, task = data.preprocessor, data.schema.task
        # where each column lives: positions in the first layer's input, places in the arrays
        width, flag = pre.numeric_width, len(pre.numeric)
        parts: dict[str, list[int]] = {}
        places: dict[str, list[tuple[str, int]]] = {}
        for i, column in enumerate(pre.numeric):
            parts[column.name] = [i] + ([flag] if column.indicator else [])
            places[column.name] = [("numeric", p) for p in parts[column.name]]
            flag += column.indicator
        start = width
        for j, (column, table) in enumerate(zip(pre.categorical, net.embeddings, strict=True)):
            parts[column.name] = list(range(start, start + table.embedding_dim))
            places[column.name] = [("categorical", j)]
            start += table.embedding_dim
        device = next(net.parameters()).device
        first = net.body[0] if len(net.body) else net.head
        folder = explain_folder(out, self.name)
        was_training = net.training
        net.eval()
        try:
            rows = explained_rows(data.rows("test"), n)
            numeric, categorical, target = data.arrays(rows)
            x = (torch.from_numpy(numeric).to(device), torch.from_numpy(categorical).to(device))
            base = (torch.zeros_like(x[0]), torch.zeros_like(x[1]))
            with torch.no_grad():
                out_x, out_base = net(*x).float(), net(*base).float()  # (B, C) or (B, 1)
            chosen = (
                out_x.argmax(dim=1)
                if task == "classification"
                else torch.zeros(len(rows), dtype=torch.long, device=device)
            )
            items = []
            if len(rows):
                ig = integrated_gradients(net, x, base, chosen, layer=first, layer_input=True)
                ig = (ig[0] if isinstance(ig, tuple) else ig).float().cpu().numpy()  # (B, width)
                for k, r in enumerate(rows.tolist()):
                    c = int(chosen[k])
                    scores = {name: float(ig[k, p].sum()) for name, p in parts.items()}
                    if task == "classification":
                        prediction: str | float = pre.target.classes[c]
                        label: Any = pre.target.classes[int(target[k])]
                        what = f"logit of {prediction!r}"
                    else:
                        prediction = float(pre.target.restore(out_x[k, :1].cpu().numpy())[0])
                        label = float(data.target[r])
                        what = "standardised prediction"
                    item = f"row {r + 1}"
                    image = write_bar_chart(
                        scores,
                        folder / f"{safe_name(item)}.png",
                        title=f"{item}: predicted {prediction} (label {label})",
                        xlabel=f"attribution to the {what}",
                    )
                    note = (
                        f"{what} {float(out_x[k, c]):.4g}, baseline {float(out_base[k, c]):.4g}, "
                        f"attributions sum to {sum(scores.values()):.4g}"
                    )
                    items.append(
                        Attribution(item, prediction, label, top_scores(scores), image, note)
                    )

            headline = self.headline_metric(cfg, data)
            test = data.rows("test")
            numeric, categorical, target = data.arrays(test)

            def score(arrays: dict[str, np.ndarray]) -> float:
                batch = TabularBatch(
                    torch.from_numpy(arrays["numeric"]),
                    torch.from_numpy(arrays["categorical"]),
                    torch.from_numpy(target),
                    torch.arange(len(target)),
                )
                with torch.no_grad():
                    outputs = network_outputs(net, batch.to(device), pre.target)
                return outputs_metrics(outputs, pre.target)[headline.removeprefix("test_")]

            extras = []
            try:
                arrays = {"numeric": numeric, "categorical": categorical}
                importance = permutation_importance(score, places, arrays, headline)
                chart = write_bar_chart(
                    importance,
                    folder / "permutation_importance.png",
                    title=f"permutation importance on {len(test)} test rows",
                    xlabel=f"drop in {headline} when the column is shuffled",
                )
                extras.append(f"permutation importance chart: {chart}")
            except ValueError as e:
                importance = {}
                extras.append(f"no permutation importance: {e}")
        finally:
            net.train(was_training)
        return Explanations(
            "integrated gradients (Captum), numbers and category embeddings together",
            items,
            importance,
            headline,
            extras,
            folder,
        )

    # -- the governance half ------------------------------------------------------------------

    def held_out(
        self, cfg: TabularConfig, model: torch.nn.Module, data: TabularData, *, split: str = "test"
    ) -> pd.DataFrame:
        """The test split's predictions, one row per table row, in file order.

        ``id`` is the row's value in the first ``data.ignore`` column whose values are unique
        (an id), else its 1-based data row in the file. Binary classification: ``label`` is 1 for
        the second class (in sorted order, e.g. ``malignant`` of benign/malignant, ``1`` of 0/1)
        and ``score`` the network's probability of it. More classes: ``label`` and
        ``prediction`` are class names and ``probability`` the predicted class's probability.

        Raises:
            AbyssalError: a regression model (the fairness audit covers classification).
        """
        data = _as_model_sees(model, data)
        if data.schema.task != "classification":
            raise AbyssalError(
                f"{data.where}: the fairness audit covers classification; this model regresses "
                f"'{data.schema.target}', so it has no held-out scores or classes to compare"
            )
        rows = data.rows(split)
        was_training = model.training
        model.eval()
        with torch.no_grad():
            probability = split_outputs(model, data, rows, cfg.data.batch_size)["probability"]
        model.train(was_training)
        probability = probability.detach().cpu().double().numpy()  # (n, C)
        return held_out_frame(
            _row_ids(data, rows), data.target[rows], probability, data.preprocessor.target.classes
        )

    # -- the benchmark half ---------------------------------------------------------------------

    perturbations: ClassVar[tuple[str, ...]] = KINDS

    def perturb(
        self, cfg: TabularConfig, data: TabularData, perturbation: Perturbation
    ) -> TabularData:
        """A copy of ``data`` whose test rows' numbers carry Gaussian noise of ``level`` x the
        column's training standard deviation (``feature_noise``; see
        :func:`~abyssal.solutions.tabular.bench.perturb_table`)."""
        return perturb_table(data, perturbation)

    def item_attributes(self, cfg: TabularConfig, data: TabularData) -> pd.DataFrame:
        """The test rows of :meth:`held_out`, in its order (same ``id``), with their own feature
        columns as read from the table, e.g. ``mean radius`` for a slice ``mean radius > 15``
        (see :func:`~abyssal.solutions.tabular.bench.row_attributes`)."""
        return row_attributes(data, _row_ids(data, data.rows("test")))

    # -- the serving half ----------------------------------------------------------------------

    def example_inputs(self, cfg: TabularConfig, spec: dict[str, Any]) -> tuple[Any, ...]:
        pre = TablePreprocessor.from_dict(spec["preprocessing"])
        numeric = torch.zeros(2, pre.numeric_width)  # (2, W)
        categorical = torch.zeros(2, len(pre.categorical), dtype=torch.long)  # (2, Fc)
        return numeric, categorical

    def model_inputs(
        self, cfg: TabularConfig, data: TabularData, batch: int, seed: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``batch`` validation rows (drawn with replacement when the split is smaller)."""
        rows = data.rows("val")
        pick = np.random.default_rng(seed).choice(rows, size=batch, replace=batch > len(rows))
        numeric, categorical, _ = data.arrays(np.sort(pick))
        return torch.from_numpy(numeric), torch.from_numpy(categorical)

    def decision_score(self, loaded: Any) -> Any:
        """Binary classification: a response's ``p_<second class>``; more classes: the
        predicted class's ``probability`` (accept or review points); ``None`` for regression."""
        predictor = self.predictor(loaded)
        target = predictor.preprocessor.target
        if target.task != "classification":
            return None
        key = f"p_{target.classes[1]}" if len(target.classes) == 2 else "probability"
        return lambda response: float(response[key])

    def score_table(self, loaded: Any, table: pd.DataFrame) -> np.ndarray:
        """Binary classification: the second class's probability for every row of ``table``
        (rows parsed as the service parses them; other columns, the target included, unused)."""
        predictor = self.predictor(loaded)
        target = predictor.preprocessor.target
        if target.task != "classification" or len(target.classes) != 2:
            raise DataError(
                f"{loaded.version.ref}: score_table scores binary classifiers; this model "
                "predicts a number or more than two classes"
            )
        key = f"p_{target.classes[1]}"
        rows = [predictor.parse(r) for r in table.to_dict("records")]
        scores: list[float] = []
        for start in range(0, len(rows), 1024):
            scores += [float(r[key]) for r in predictor.predict(rows[start : start + 1024])]
        return np.asarray(scores, dtype=np.float64)

    def predictor(self, loaded: Any) -> TabularPredictor:
        return TabularPredictor.from_spec(loaded.model, loaded.spec)

    def predict_file(
        self,
        loaded: Any,
        path: str | Path,
        *,
        out: str | Path | None = None,
        explain: str | Path | None = None,
    ) -> TablePredictionReport:
        """Predict every row of ``path``; the output keeps the ``data.ignore`` columns (e.g. an
        id) and the target when the file has them, then the response fields."""
        if explain is not None:
            raise self._lacks("predict_file(explain=...)", "explanations of predictions")
        ref = loaded.version.ref
        return predict_rows_file(self.predictor(loaded), path, ref=ref, out=out)

    def generate_sample(self, options: TabularSampleConfig, out: Path) -> list[str]:
        return generate_sample(options, out)


def _as_model_sees(model: torch.nn.Module, data: TabularData) -> TabularData:
    """``data`` read and encoded with the model's own schema and encoders when they differ (as
    :func:`~abyssal.solutions.tabular.task.evaluate_network` does)."""
    spec = getattr(model, "input_spec", None)
    if spec is None or spec == table_spec(data):
        return data
    return data.encoded_for(
        TableSchema.from_dict(spec["schema"]), TablePreprocessor.from_dict(spec["preprocessing"])
    )


def _row_ids(data: TabularData, rows: np.ndarray) -> np.ndarray:
    """The first unique ``data.ignore`` column's values at ``rows``, else 1-based data rows."""
    frame = data.frame
    for name in data.schema.keep:
        if name == data.schema.target or frame is None or name not in frame.columns:
            continue
        column = frame[name]
        if column.notna().all() and column.is_unique:
            return column.to_numpy()[rows]
    return rows + 1
