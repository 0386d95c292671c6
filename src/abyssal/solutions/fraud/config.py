"""Configuration of the fraud solution; ``configs/fraud/*.yaml`` mirror these dataclasses."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from abyssal.contracts.train_config import TrainConfig
from abyssal.core.config import field
from abyssal.core.errors import ConfigError
from abyssal.data.leakage import LeakageOptions


@dataclass
class FraudDataConfig(LeakageOptions):
    """Where the data comes from and how it is split."""

    source: Literal["synthetic", "transactions", "edges", "bitcoin_otc"] = field(
        "synthetic",
        help="synthetic: generated in memory; transactions: a CSV/Parquet table; edges: an edge "
        "list with a labels file; bitcoin_otc: the Bitcoin-OTC folder",
    )
    path: str | None = field(
        None,
        path=True,
        help="transactions or edges file, or the bitcoin_otc folder "
        "(default: $ABYSSAL_BITCOIN_OTC, else ../shared/datasets/bitcoin_otc)",
    )
    labels_path: str | None = field(None, path=True, help="edges source: node,label file")
    features_path: str | None = field(
        None, path=True, help="edges source: optional node features file"
    )
    node_column: str = field(
        "node",
        help="node files: the id column (node: also node_id, user, user_id or id is accepted)",
    )
    label_column: str = field(
        "label",
        help="node files: the 0/1 label column (label: also is_fraud or fraud); never a feature",
    )
    ignore_columns: list[str] = field(
        default_factory=list, help="node files: columns that are not features (ids, notes)"
    )
    max_onehot_values: int = field(
        20,
        help="node files: a text column with at most this many distinct values is one-hot "
        "encoded; with more, each node gets its value's frequency",
    )
    split: int = field(0, help="bitcoin_otc: which of the ten fixed splits (0-9)")
    val_frac: float = field(0.2, help="share of labelled accounts for validation")
    test_frac: float = field(0.2, help="share of labelled accounts for testing")
    split_seed: int = field(0, help="seed of the random split of labelled accounts")
    windows: list[int] = field(
        default_factory=lambda: [3600, 86400, 604800],
        help="feature windows in seconds (counts, amounts, bursts)",
    )
    synthetic_users: int = field(2000, help="synthetic source: number of users")
    synthetic_rings: int = field(12, help="synthetic source: number of planted fraud rings")
    synthetic_days: int = field(60, help="synthetic source: days of activity")
    synthetic_seed: int = field(0, help="synthetic source: generator seed")
    synthetic_merchants: int = field(300, help="synthetic source: number of merchants")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.source in ("transactions", "edges") and self.path is None:
            raise ConfigError(f"data.path is required for data.source={self.source}")
        if not 0 < self.val_frac < 1 or not 0 < self.test_frac < 1:
            raise ConfigError("data.val_frac and data.test_frac must be between 0 and 1")
        if self.val_frac + self.test_frac >= 1:
            raise ConfigError("data.val_frac + data.test_frac must leave accounts for training")
        if not self.windows or min(self.windows) <= 0:
            raise ConfigError(f"data.windows must be positive seconds, got {self.windows}")
        if self.split_seed < 0:
            raise ConfigError(f"data.split_seed must be >= 0, got {self.split_seed}")
        if self.max_onehot_values < 1:
            raise ConfigError(f"data.max_onehot_values must be >= 1, got {self.max_onehot_values}")
        if self.node_column == self.label_column:
            raise ConfigError(
                f"data.node_column and data.label_column are both '{self.node_column}'"
            )


@dataclass
class FraudModelConfig:
    """The graph attention model."""

    conv: Literal["gatv2", "gat"] = field("gatv2", help="attention layer type")
    hidden: int = field(64, help="embedding size")
    heads: int = field(4, help="attention heads (hidden must divide by it)")
    layers: int = field(2, help="message-passing rounds")
    time_dim: int = field(8, help="size of the edge-age encoding")
    dropout: float = field(0.1, help="dropout on embeddings and attention")
    neighbour_cap: int | None = field(
        32,
        help="each node attends to at most this many of its most recent edges, in training and "
        "scoring alike (bounds live scoring's cost at hubs); null: to all its edges",
    )
    transaction_loss_weight: float = field(
        1.0, help="weight of the per-transaction loss (when transactions are labelled)"
    )
    max_pos_weight: float = field(20.0, help="cap on the positive-class weight (neg/pos)")

    def __post_init__(self) -> None:
        if self.hidden % self.heads:
            raise ConfigError(f"model.hidden ({self.hidden}) must divide by model.heads")
        if self.layers < 1:
            raise ConfigError("model.layers must be >= 1")
        if not 0 <= self.dropout < 1:
            raise ConfigError("model.dropout must be in [0, 1)")
        if self.neighbour_cap is not None and self.neighbour_cap < 1:
            raise ConfigError(f"model.neighbour_cap must be >= 1 or null, got {self.neighbour_cap}")


@dataclass
class FraudSamplingConfig:
    """Neighbour-sampled mini-batches (``abyssal.solutions.fraud.sampling``)."""

    batch_size: int | None = field(
        None,
        help="seed accounts per training batch: each batch is the exact computation subgraph "
        "of its seeds (model.layers hops of the edges the model keeps); null: full-graph "
        "training, one batch of the whole graph per epoch",
    )
    transactions_per_batch: int | None = field(
        512,
        help="labelled training transactions per batch (graphs with labelled transactions), "
        "each scored as of itself (no later event enters); the epoch's others wait for a "
        "later epoch; null: all of them, spread over the epoch's batches",
    )
    fanout: int | None = field(
        None,
        help="without model.neighbour_cap: in-edges kept per receiver and (kind, direction), "
        "the most recent (scores then approximate the whole graph's); null: all in-edges",
    )
    eval_batch_size: int | None = field(
        None,
        help="validation accounts per batch, scored on their subgraphs (same scores as the "
        "whole graph); null: validation on the whole graph in one batch",
    )

    def __post_init__(self) -> None:
        for key in ("batch_size", "transactions_per_batch", "fanout", "eval_batch_size"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise ConfigError(f"sampling.{key} must be >= 1 or null, got {value}")


@dataclass
class FraudRingConfig:
    """Gang detection over the risk-weighted graph."""

    min_risk: float | None = field(
        None, help="accounts at or above this risk join rings; null: the validation threshold"
    )
    min_size: int = field(2, help="smallest ring reported")


@dataclass
class FraudLiveConfig:
    """Scoring new transactions against the live graph."""

    on_unknown_account: Literal["error", "add"] = field(
        "error", help="a new transaction from a user never seen: error, or add the account"
    )
    history: str | None = field(
        None,
        path=True,
        help="transactions the live graph starts from; null: the data the model trained on",
    )
    rescore_neighbourhood: bool = field(
        True,
        help="after each transaction also rescore the neighbours of its accounts (alerts on "
        "accounts that cross the threshold); false: score only the transaction's own accounts",
    )


@dataclass
class FraudConfig:
    """The fraud solution's whole config."""

    data: FraudDataConfig = field(default_factory=FraudDataConfig, help="data")
    model: FraudModelConfig = field(default_factory=FraudModelConfig, help="model")
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(early_stopping_metric="val_auprc", patience=20),
        help="training",
    )
    sampling: FraudSamplingConfig = field(
        default_factory=FraudSamplingConfig, help="neighbour-sampled mini-batches"
    )
    rings: FraudRingConfig = field(default_factory=FraudRingConfig, help="rings")
    live: FraudLiveConfig = field(default_factory=FraudLiveConfig, help="live scoring")
    baselines: bool = field(True, help="train the gradient-boosted tree baselines in the same run")
