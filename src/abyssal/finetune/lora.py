"""The article's LoRA entry point on Hugging Face PEFT::

    lora_config = LoraConfig(r=16, lora_alpha=32, target_modules=["query", "value"],
                             lora_dropout=0.1)
    model = PeftModel.from_pretrained(base_model, lora_config)

PEFT's own ``PeftModel.from_pretrained`` takes a saved adapter, not a config; this one takes a
config (a new adapter, targets checked against the model: :func:`abyssal.nn.lora.attach`), an
adapter folder, or a registered adapter version, laid onto the caller's base by its solution.

Example:
    >>> from abyssal import LoraConfig, PeftModel
    >>> model = PeftModel.from_pretrained(base_model, LoraConfig(r=8))  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from abyssal.core.errors import ConfigError
from abyssal.core.optional import require
from abyssal.nn.lora import LoraConfig, attach, load_saved

__all__ = ["LoraConfig", "PeftModel"]


class PeftModel:
    """The article's entry point: ``PeftModel.from_pretrained(base, config_or_adapter)``."""

    @staticmethod
    def from_pretrained(base_model: nn.Module, source: Any, **kwargs: Any) -> nn.Module:
        """``base_model`` with a LoRA adapter: a new one from a config, or a trained one.

        Args:
            base_model: the model to adapt (a ``transformers`` model or any ``nn.Module``).
            source: a LoRA config (:func:`LoraConfig` or ``peft.LoraConfig``); the folder of an
                adapter saved by :func:`save_adapter` or PEFT's ``save_pretrained``; or a
                registered adapter version (``"reviews-lora:3"``), laid onto ``base_model`` by
                its solution.
            **kwargs: passed to PEFT's loader for a saved adapter (e.g. ``is_trainable``).

        Returns:
            A ``peft.PeftModel``; a new adapter is trainable, the base frozen.

        Raises:
            ConfigError: a target module that matches no linear layer; a source that is
                neither a config, an adapter folder nor a model version.
            StoreError: ``base_model`` is not the base the adapter was trained on (when the
                folder or version records it).
        """
        peft = require("peft", extra="finetune", purpose="LoRA adapters")
        if isinstance(source, peft.PeftConfig):
            return attach(base_model, source)
        folder = Path(source)
        if (folder / "adapter_config.json").is_file():
            return load_saved(base_model, folder, **kwargs)
        looks_like_path = not isinstance(source, str) or "/" in source or "\\" in source
        if folder.exists() or looks_like_path:
            raise ConfigError(f"{folder}: no adapter_config.json (not a saved adapter folder)")
        return _from_store(base_model, source)


def _from_store(base_model: nn.Module, ref: str) -> nn.Module:
    """The registered adapter version ``ref`` on ``base_model``, by its solution."""
    from abyssal.core.errors import StoreError
    from abyssal.core.store import ModelStore
    from abyssal.solutions import get_solution

    store = ModelStore()
    try:
        mv = store.resolve(ref)
    except StoreError as exc:
        raise ConfigError(
            f"{ref!r} is neither a LoRA config, an adapter folder nor a model version ({exc})"
        ) from None
    return get_solution(mv.solution).adapter_onto(base_model, mv.ref, store)
