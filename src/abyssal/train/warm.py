"""Warm starts: a model built for training starts from a stored version's weights
(``train.init_from``), for fine-tuning a production model on new data (continual updates).

The weights are the version's own ``weights`` artifact (safetensors, no unpickling). Every tensor
of the built model must be there with the same shape, and nothing else: a warm start from
another architecture is refused with the tensors named, before a run exists.

Example:
    >>> ref, state = warm_state("fraud:production")  # doctest: +SKIP
    >>> load_warm(model, state, ref)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from abyssal.core.errors import ConfigError, StoreError


def warm_state(ref: str) -> tuple[str, dict[str, torch.Tensor]]:
    """The pinned ref (``name:N``) ``ref`` means today and its weights, from the store of the
    current abyssal home.

    Raises:
        ConfigError: no such version, or it has no plain weights (e.g. a LoRA adapter).
    """
    from abyssal.core.store import ModelStore

    store = ModelStore()
    try:
        version = store.resolve(ref)
        return version.ref, store.load_weights(version)
    except StoreError as e:
        raise ConfigError(f"train.init_from={ref}: {e}") from None


def check_warm(model: nn.Module, state: Mapping[str, torch.Tensor], ref: str) -> None:
    """Refuse ``state`` unless it has exactly ``model``'s tensors, with the same shapes."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in sorted(set(own) & set(state))
        if tuple(state[k].shape) != tuple(own[k].shape)
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} tensor(s) missing ({', '.join(missing[:4])})")
    if extra:
        problems.append(f"{len(extra)} tensor(s) the model lacks ({', '.join(extra[:4])})")
    if shapes:
        problems.append(f"{len(shapes)} shape(s) differ ({'; '.join(shapes[:4])})")
    if problems:
        raise ConfigError(
            f"train.init_from={ref}: its weights do not fit the model this config builds: "
            + "; ".join(problems)
            + " (a warm start needs the same architecture: keep model.* as the version had it)"
        )


def load_warm(model: nn.Module, state: Mapping[str, torch.Tensor], ref: str) -> nn.Module:
    """``model`` with ``state`` loaded (checked first); returns ``model``."""
    check_warm(model, state, ref)
    model.load_state_dict(dict(state), strict=True)
    return model
