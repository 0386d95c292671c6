"""abyssal: take AI models from the lab to production.

Importing the package is cheap: it pulls in no torch, pandas or optional library.
Sub-packages import what they need where they use it.
"""

from typing import Any

__version__ = "0.1.0"

__all__ = ["LoraConfig", "PeftModel", "__version__"]

_LAZY = {"LoraConfig": "abyssal.finetune.lora", "PeftModel": "abyssal.finetune.lora"}


def __getattr__(name: str) -> Any:
    """``from abyssal import LoraConfig, PeftModel`` imports the fine-tuning module (and PEFT)
    only when asked."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'abyssal' has no attribute {name!r}")
