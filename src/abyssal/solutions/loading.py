"""Rebuild a registered model version: its solution, resolved config, spec and weights."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from abyssal.core.config import apply_overrides, config_from_dict
from abyssal.core.errors import StoreError
from abyssal.core.store import ModelStore, ModelVersion
from abyssal.solutions import get_solution
from abyssal.solutions.base import Solution


@dataclass
class LoadedModel:
    """A model version ready to use: ``model`` is in eval mode on ``device``."""

    version: ModelVersion
    solution: Solution
    cfg: Any
    spec: dict[str, Any]
    model: torch.nn.Module


def version_config(solution: Solution, cfg: Any, spec: dict[str, Any]) -> dict[str, Any]:
    """What a model version stores as its config: the resolved solution config and model spec."""
    from abyssal.core.config import config_to_dict

    return {"solution_config": config_to_dict(cfg), "model_spec": spec}


def load_model(
    ref: str,
    store: ModelStore | None = None,
    overrides: list[str] | None = None,
    device: str | torch.device = "cpu",
) -> LoadedModel:
    """Load the version ``ref`` (``"fraud:production"``, ``"fraud:3"``, ``"fraud"``).

    Args:
        ref: the model reference.
        store: the model store; the default store when ``None``.
        overrides: ``key=value`` changes to the stored config (e.g. ``data.path=other.csv``).
        device: where to put the model.

    Returns:
        The loaded model with its solution and config. Loading never unpickles.
    """
    store = store or ModelStore()
    mv = store.resolve(ref)
    solution = get_solution(mv.solution)
    stored = mv.config
    if not {"solution_config", "model_spec"} <= set(stored):
        raise StoreError(f"{mv.ref} was not registered by a solution (no solution_config)")
    data = apply_overrides(solution.config_cls, stored["solution_config"], overrides or [])
    cfg = config_from_dict(solution.config_cls, data, where=f"{mv.ref} config")
    model = solution.build_model(cfg, stored["model_spec"])
    model.load_state_dict(store.load_weights(mv), strict=True)
    return LoadedModel(mv, solution, cfg, stored["model_spec"], model.to(device).eval())
