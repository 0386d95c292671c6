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
import torch

from abyssal.contracts.prediction import TablePredictionReport
from abyssal.contracts.solution import MetricLayout, Solution
from abyssal.solutions.tabular.baselines import gbdt_metrics
from abyssal.solutions.tabular.config import TabularConfig, TabularSampleConfig
from abyssal.solutions.tabular.data import TabularData, prepare_tabular_data
from abyssal.solutions.tabular.predict import TabularPredictor, predict_rows_file
from abyssal.solutions.tabular.preprocessing import TablePreprocessor
from abyssal.solutions.tabular.sample import generate_sample
from abyssal.solutions.tabular.task import TabularTask, build_model, evaluate_network, table_spec

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
        return table_spec(data)

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
