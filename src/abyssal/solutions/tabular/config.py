"""Configuration of the tabular solution; ``configs/tabular/*.yaml`` mirror these dataclasses.

Example:
    >>> cfg = TabularConfig(data=TabularDataConfig(source="file", path="t.csv", target="y"))
    >>> cfg.data.target, cfg.model.hidden
    ('y', 128)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from abyssal.contracts.train_config import TrainConfig
from abyssal.core.config import field
from abyssal.core.errors import ConfigError
from abyssal.data.leakage import LeakageOptions

MISSING_MARKERS = ["NA", "N/A", "NaN", "nan", "null", "NULL", "None", "?"]
"""Text cells read as missing values, besides empty cells (``data.missing_values``)."""
MAX_CATEGORIES = 250
"""Most categories kept per column: histogram gradient boosting takes at most 255 bins."""


@dataclass
class TabularDataConfig(LeakageOptions):
    """Where the table comes from, which columns are what, and how rows are split."""

    source: Literal["file", "breast_cancer", "diabetes"] = field(
        "breast_cancer",
        help="file: a CSV/Parquet table at data.path; breast_cancer / diabetes: the data sets "
        "bundled with scikit-learn (no download)",
    )
    path: str | None = field(None, path=True, help="file source: the CSV, CSV.gz or Parquet table")
    target: str | None = field(
        None,
        help="the column to predict; null: the bundled source's own target "
        "(diagnosis for breast_cancer, progression for diabetes)",
    )
    task: Literal["auto", "classification", "regression"] = field(
        "auto",
        help="auto: a non-numeric target, or integers with at most data.max_classes distinct "
        "values, is classification; other numbers are regression",
    )
    features: list[str] | None = field(
        None, help="feature columns; null: every column except the target and data.ignore"
    )
    ignore: list[str] = field(
        default_factory=list,
        help="columns that are not features (e.g. an id); kept beside predictions when present",
    )
    categorical: list[str] | None = field(
        None,
        help="categorical columns; null: auto (a column whose cells are not all numbers); a "
        "list: these, and every other feature is numeric (a non-number there is an error)",
    )
    numeric: list[str] | None = field(
        None, help="columns that must be numeric (a non-number cell is an error naming its row)"
    )
    missing_values: list[str] = field(
        default_factory=lambda: list(MISSING_MARKERS),
        help="text cells that mean a missing value, besides empty cells",
    )
    max_categories: int = field(
        100,
        help="categories kept per column (the most frequent in training); rarer ones share code 0 "
        "with missing and unseen values",
    )
    pii: Literal["mask", "keep", "refuse"] = field(
        "mask",
        help="personal data in the text (categorical) features: mask it as <KIND> before the "
        "encoders see it (in training, prediction and requests), keep it, or refuse the table",
    )
    max_classes: int = field(
        20, help="task=auto: integer targets with at most this many distinct values are classes"
    )
    val_frac: float = field(0.2, help="share of rows for validation (stratified by class)")
    test_frac: float = field(0.2, help="share of rows for testing (stratified by class)")
    split_seed: int = field(0, help="seed of the random split")
    batch_size: int = field(64, help="rows per training batch (per process)")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.source == "file" and not self.path:
            raise ConfigError("data.path is required for data.source=file")
        if self.source == "file" and not self.target:
            raise ConfigError("data.target is required for data.source=file")
        if not 0 < self.val_frac < 1 or not 0 < self.test_frac < 1:
            raise ConfigError("data.val_frac and data.test_frac must be between 0 and 1")
        if self.val_frac + self.test_frac >= 1:
            raise ConfigError("data.val_frac + data.test_frac must leave rows for training")
        for name in ("max_categories", "max_classes", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"data.{name} must be >= 1, got {getattr(self, name)}")
        if self.max_categories > MAX_CATEGORIES:
            raise ConfigError(
                f"data.max_categories must be <= {MAX_CATEGORIES} (the boosted trees' limit), "
                f"got {self.max_categories}"
            )
        both = sorted(set(self.categorical or []) & set(self.numeric or []))
        if both:
            raise ConfigError(f"data.categorical and data.numeric both name {', '.join(both)}")


@dataclass
class TabularModelConfig:
    """The multilayer perceptron over numeric features and categorical embeddings."""

    hidden: int = field(128, help="width of each hidden layer")
    layers: int = field(2, help="hidden layers")
    dropout: float = field(0.1, help="dropout after each hidden layer")
    embedding_dim: int = field(8, help="size of each categorical column's embedding")
    class_weight: Literal["none", "balanced"] = field(
        "none", help="classification: balanced weighs each class by n / (classes * count)"
    )

    def __post_init__(self) -> None:
        if self.hidden < 1 or self.layers < 1 or self.embedding_dim < 1:
            raise ConfigError("model.hidden, model.layers and model.embedding_dim must be >= 1")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"model.dropout must be in [0, 1), got {self.dropout}")


@dataclass
class TabularConfig:
    """The tabular solution's whole config."""

    data: TabularDataConfig = field(default_factory=TabularDataConfig, help="data")
    model: TabularModelConfig = field(default_factory=TabularModelConfig, help="model")
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(epochs=100, lr=1e-3, patience=20),
        help="training (the watched metric: val_auroc for classification, val_rmse for "
        "regression, unless train.early_stopping_metric)",
    )
    baselines: bool = field(
        True, help="train gradient-boosted trees on the same features and splits in the same run"
    )


@dataclass
class TabularSampleConfig:
    """Options of ``abyssal generate tabular``: a real bundled data set written as CSV files."""

    dataset: Literal["breast_cancer", "diabetes"] = field(
        "breast_cancer", help="which scikit-learn data set to write"
    )
    new_frac: float = field(0.1, help="share of rows held out as new_rows.csv (without target)")
    missing_frac: float = field(
        0.05, help="share of feature cells blanked at random (to show imputation)"
    )
    seed: int = field(0, help="seed of the held-out rows and the blanked cells")

    def __post_init__(self) -> None:
        if not 0 < self.new_frac < 1:
            raise ConfigError(f"new_frac must be between 0 and 1, got {self.new_frac}")
        if not 0 <= self.missing_frac < 1:
            raise ConfigError(f"missing_frac must be in [0, 1), got {self.missing_frac}")
