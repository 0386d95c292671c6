"""LoRA (Hu et al. 2021, arXiv:2106.09685) through Hugging Face PEFT: configs, target checks,
adapter state and base fingerprints. The article's entry point, ``PeftModel``, is in
:mod:`abyssal.finetune.lora` (it also loads registered adapter versions).

The article writes::

    lora_config = LoraConfig(r=16, lora_alpha=32, target_modules=["query_key_value"],
                             lora_dropout=0.1)
    model = PeftModel.from_pretrained(base_model, lora_config)

PEFT's own ``PeftModel.from_pretrained`` takes a saved adapter, not a config; here it takes
either. Given a config it attaches a new adapter (``peft.get_peft_model``), after checking that
every ``target_modules`` name matches a module of *this* model: ``query_key_value`` exists only
in fused-attention models (GPT-NeoX, BLOOM, Falcon), and PEFT would otherwise fail deep inside,
or match nothing useful. ``target_modules="auto"`` picks the architecture's attention
projections. Given a folder it loads a saved adapter (PEFT's own loader). LoRA's layers are
PEFT's; this module adds the checks and the naming.

Example:
    >>> from abyssal import LoraConfig, PeftModel
    >>> cfg = LoraConfig(r=16, lora_alpha=32, target_modules="auto", lora_dropout=0.1)
    >>> model = PeftModel.from_pretrained(base_model, cfg)  # doctest: +SKIP
    >>> trainable_share(model)  # doctest: +SKIP
    0.0123
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from abyssal.core.errors import ConfigError
from abyssal.core.optional import require

ATTENTION_PROJECTIONS: tuple[tuple[str, ...], ...] = (
    ("query", "key", "value"),  # BERT, RoBERTa, MiniLM, ELECTRA
    ("q_proj", "k_proj", "v_proj", "o_proj"),  # LLaMA, Mistral, Qwen, OPT
    ("query_key_value",),  # GPT-NeoX, BLOOM, Falcon (fused)
    ("c_attn",),  # GPT-2 (fused, Conv1D)
    ("q_lin", "k_lin", "v_lin"),  # DistilBERT
    ("q", "k", "v", "o"),  # T5
    ("Wqkv",),  # ModernBERT, MPT
)
"""Attention projection names by architecture family, tried in order by ``"auto"``."""

SHOWN = 12
"""How many module names an error lists."""


def _peft() -> Any:
    return require("peft", extra="finetune", purpose="LoRA adapters")


def projection_layers(model: nn.Module) -> list[str]:
    """Full names of the model's linear (and GPT-2 ``Conv1D``) layers, the modules LoRA adapts."""
    names = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D":
            names.append(name)
    return names


def _leaf(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def _matches(name: str, target: str) -> bool:
    """PEFT's rule for a plain name: the module's full name is ``target`` or ends with
    ``.target``; a name with glob characters is matched against the full name."""
    if any(c in target for c in "*?["):
        return fnmatch.fnmatchcase(name, target)
    return name == target or name.endswith("." + target)


def auto_target_modules(model: nn.Module) -> list[str]:
    """The attention projections of ``model``'s architecture (the first family of
    :data:`ATTENTION_PROJECTIONS` all of whose names are linear layers of the model).

    Raises:
        ConfigError: no known family matches (the message lists the linear layers).
    """
    leaves = {_leaf(n) for n in projection_layers(model)}
    for family in ATTENTION_PROJECTIONS:
        if all(name in leaves for name in family):
            return list(family)
    raise ConfigError(
        "target_modules='auto' found no attention projections it knows in this model; "
        f"name them: its linear layers are {_listing(model)}"
    )


def check_target_modules(model: nn.Module, targets: str | Sequence[str]) -> list[str]:
    """The target names, each checked to match at least one linear layer of ``model``.

    Args:
        model: the base model.
        targets: ``"auto"``, or module names (PEFT's rule: a full name, or its last parts) and
            glob patterns over full names.

    Returns:
        The names to give PEFT.

    Raises:
        ConfigError: a name that matches no linear layer, with the model's linear layers and a
            suggestion for its architecture.
    """
    if isinstance(targets, str):
        if targets == "auto":
            return auto_target_modules(model)
        targets = [targets]
    layers = projection_layers(model)
    for target in targets:
        if not any(_matches(name, target) for name in layers):
            raise ConfigError(
                f"target_modules '{target}' matches no linear layer of this model; "
                f"its linear layers are {_listing(model)}{_suggestion(model)}"
            )
    return list(targets)


def _listing(model: nn.Module) -> str:
    leaves = sorted({_leaf(n) for n in projection_layers(model)})
    shown = ", ".join(leaves[:SHOWN]) + (" ..." if len(leaves) > SHOWN else "")
    return f"(by last name) {shown or 'none'}"


def _suggestion(model: nn.Module) -> str:
    try:
        return f"; for this architecture try {auto_target_modules(model)} (or 'auto')"
    except ConfigError:
        return ""


def LoraConfig(
    *,
    r: int = 8,
    lora_alpha: int = 16,
    target_modules: str | Sequence[str] = "auto",
    lora_dropout: float = 0.0,
    bias: str = "none",
    modules_to_save: Sequence[str] | None = None,
    **kwargs: Any,
) -> Any:
    """A ``peft.LoraConfig`` (the article's and PEFT's name, hence the capital) whose
    ``target_modules`` may be ``"auto"`` (resolved against the
    model when the adapter is attached).

    Raises:
        ConfigError: ``r`` < 1, ``lora_alpha`` <= 0 or ``lora_dropout`` outside [0, 1).
    """
    if r < 1:
        raise ConfigError(f"LoRA r must be >= 1, got {r}")
    if lora_alpha <= 0:
        raise ConfigError(f"LoRA lora_alpha must be > 0, got {lora_alpha}")
    if not 0 <= lora_dropout < 1:
        raise ConfigError(f"LoRA lora_dropout must be in [0, 1), got {lora_dropout}")
    targets = None if target_modules == "auto" else target_modules
    config = _peft().LoraConfig(
        r=r,
        lora_alpha=lora_alpha,
        target_modules=targets,
        lora_dropout=lora_dropout,
        bias=bias,
        modules_to_save=list(modules_to_save) if modules_to_save else None,
        **kwargs,
    )
    config.abyssal_auto_targets = target_modules == "auto"
    return config


BASE_FILE = "abyssal_base.json"
"""Written beside a saved adapter: the fingerprint of the base it was trained on."""


def attach(base_model: nn.Module, config: Any) -> nn.Module:
    """``base_model`` with a new adapter from a PEFT config: ``"auto"`` targets resolved, named
    targets checked against the model's linear layers first.

    Raises:
        ConfigError: a target module that matches no linear layer.
    """
    if getattr(config, "abyssal_auto_targets", False) or config.target_modules is None:
        config.target_modules = set(auto_target_modules(base_model))
    else:
        check_target_modules(base_model, sorted(config.target_modules))
    return _peft().get_peft_model(base_model, config)


def load_saved(base_model: nn.Module, folder: Path, **kwargs: Any) -> nn.Module:
    """The adapter saved in ``folder`` on ``base_model`` (PEFT's loader), after checking the
    base against the fingerprint :func:`save_adapter` recorded, if any."""
    _check_saved_base(folder, base_model)
    return _peft().PeftModel.from_pretrained(base_model, str(folder), **kwargs)


def save_adapter(model: nn.Module, folder: str | Path) -> Path:
    """PEFT's ``save_pretrained`` plus :data:`BASE_FILE`, so that loading the folder onto
    another base is refused."""
    folder = Path(folder)
    model.save_pretrained(str(folder))
    record = {"base_fingerprint": base_fingerprint(model.get_base_model())}
    (folder / BASE_FILE).write_text(json.dumps(record, indent=2) + "\n")
    return folder


def _check_saved_base(folder: Path, base_model: nn.Module) -> None:
    record = folder / BASE_FILE
    if not record.is_file():
        return  # saved by PEFT alone: nothing to check against
    expected = json.loads(record.read_text()).get("base_fingerprint")
    found = base_fingerprint(base_model)
    if expected and expected != found:
        from abyssal.core.errors import StoreError

        raise StoreError(
            f"{folder} was trained on a base with tensor fingerprint {expected}; this base "
            f"model has {found}: an adapter only works on the weights it was trained on"
        )


def trainable_share(model: nn.Module) -> float:
    """Trainable parameters over all parameters."""
    total = sum(p.numel() for p in model.parameters())
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trained / max(1, total)


ADAPTER_KEYS = ("lora_", "modules_to_save")
"""Parameter names that belong to a LoRA adapter (PEFT's naming), not to the base."""


def resolve_targets(model: nn.Module, targets: str | Sequence[str]) -> list[str]:
    """``targets`` as module names: ``"auto"`` resolved to the architecture's attention
    projections, other names checked against the model (:func:`check_target_modules`)."""
    return check_target_modules(model, targets)


def is_adapter_key(name: str) -> bool:
    """Whether a state-dict key belongs to a LoRA adapter (or a module saved with it)."""
    return any(part in name for part in ADAPTER_KEYS)


def adapter_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapter's tensors of a PEFT model: the LoRA matrices and the modules saved with it
    (``modules_to_save``, e.g. a classification head), on the CPU."""
    return {k: v.detach().cpu() for k, v in model.state_dict().items() if is_adapter_key(k)}


def base_fingerprint(base: nn.Module) -> str:
    """SHA-256 (first 16 hex digits) over the names, dtypes, shapes and bytes of a base model's
    tensors, with or without LoRA layers in it (adapter tensors are left out, PEFT's
    ``.base_layer`` renaming undone): equal for the same base weights however they were loaded.

    Example:
        >>> base_fingerprint(torch.nn.Linear(2, 2)) == base_fingerprint(torch.nn.Linear(2, 2))
        False
    """
    digest = hashlib.sha256()
    state = {
        name.replace(".base_layer", ""): tensor
        for name, tensor in base.state_dict().items()
        if not is_adapter_key(name) and isinstance(tensor, torch.Tensor)
    }
    for name, tensor in sorted(state.items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(json.dumps([name, str(t.dtype), list(t.shape)]).encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()[:16]
