"""Optimizers, learning-rate schedules and parameter selection, chosen by name.

- :data:`OPTIMIZERS`: ``adamw``, ``adam``, ``sgd``; each builds a ``torch.optim.Optimizer`` from
  parameter groups and the ``train`` config.
- :data:`SCHEDULES`: ``constant``, ``cosine``, ``linear``; each maps the progress after warmup
  (0 to 1) to a learning-rate factor. Warmup is linear from 0 over ``train.warmup_steps``.
- :func:`trainable_parameters` applies ``train.trainable`` / ``train.frozen`` (glob patterns over
  parameter names), so a frozen backbone or a LoRA adapter trains only what it should.
- :func:`parameter_groups` puts weight decay on weight matrices only (nanoGPT's rule: tensors with
  two or more dimensions), never on biases and norm scales, unless asked.

The learning rate of a step depends only on the step number (:func:`lr_factor`), so a resumed run
continues its schedule exactly.

Example:
    >>> lr_factor("cosine", step=50, total=100, warmup=0, min_ratio=0.0)
    0.5
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from abyssal.contracts.train_config import TrainConfig
from abyssal.core.errors import ConfigError
from abyssal.core.registry import Registry

OptimizerFactory = Callable[[list[dict[str, Any]], TrainConfig], torch.optim.Optimizer]
ScheduleShape = Callable[[float], float]

OPTIMIZERS: Registry[OptimizerFactory] = Registry("optimizer", group="abyssal.optimizers")
OPTIMIZERS.add("adamw", lambda g, c: torch.optim.AdamW(g, lr=c.lr, betas=tuple(c.betas)))
OPTIMIZERS.add("adam", lambda g, c: torch.optim.Adam(g, lr=c.lr, betas=tuple(c.betas)))
OPTIMIZERS.add("sgd", lambda g, c: torch.optim.SGD(g, lr=c.lr, momentum=c.momentum))

SCHEDULES: Registry[ScheduleShape] = Registry("learning-rate schedule", group="abyssal.schedules")
SCHEDULES.add("constant", lambda progress: 1.0)
SCHEDULES.add("cosine", lambda progress: 0.5 * (1.0 + math.cos(math.pi * progress)))
SCHEDULES.add("linear", lambda progress: 1.0 - progress)


def check_names(cfg: TrainConfig) -> None:
    """Fail early (before a run exists) on an unknown optimizer or schedule name."""
    OPTIMIZERS.get(cfg.optimizer)
    SCHEDULES.get(cfg.schedule)


def lr_factor(
    schedule: str, *, step: int, total: int | None, warmup: int, min_ratio: float
) -> float:
    """The learning-rate multiplier of optimizer step ``step`` (0-based).

    Args:
        schedule: a :data:`SCHEDULES` name.
        step: the step about to be taken.
        total: all steps of the run; needed by every schedule but ``constant``.
        warmup: steps of linear warmup (the factor of step ``s < warmup`` is ``(s + 1) / warmup``).
        min_ratio: the factor the decay ends at.

    Returns:
        A factor in ``[0, 1]``.

    Example:
        >>> lr_factor("linear", step=0, total=10, warmup=2, min_ratio=0.0)
        0.5
    """
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    if total is None:
        raise ConfigError(f"train.schedule={schedule} needs the run's length: set train.max_steps")
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1.0 - min_ratio) * SCHEDULES.get(schedule)(progress)


def trainable_parameters(
    model: nn.Module, trainable: Sequence[str] | None, frozen: Sequence[str]
) -> list[tuple[str, nn.Parameter]]:
    """Freeze what the patterns exclude; return the named parameters left to train.

    A parameter trains when it requires a gradient, matches a ``trainable`` pattern (if any are
    given) and matches no ``frozen`` pattern; the others get ``requires_grad = False``.

    Raises:
        ConfigError: a pattern matches no parameter (a typo would silently train everything), or
            nothing is left to train.

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 1))
        >>> [n for n, _ in trainable_parameters(net, ["1.*"], [])]
        ['1.weight', '1.bias']
    """
    named = list(model.named_parameters())
    names = [n for n, _ in named]
    for key, patterns in (("trainable", trainable or []), ("frozen", frozen)):
        _check_patterns(key, patterns, names)
    chosen = []
    for name, param in named:
        keep = trainable is None or any(fnmatch.fnmatchcase(name, p) for p in trainable)
        keep = keep and not any(fnmatch.fnmatchcase(name, p) for p in frozen)
        if not keep:
            param.requires_grad_(False)
        elif param.requires_grad:
            chosen.append((name, param))
    if not chosen:
        raise ConfigError("no parameter is left to train: check train.trainable and train.frozen")
    return chosen


def parameter_groups(
    named: Sequence[tuple[str, nn.Parameter]], weight_decay: float, decay_all: bool = False
) -> list[dict[str, Any]]:
    """Two groups: decayed (>= 2-D tensors, or all when ``decay_all``) and not decayed.

    Empty groups are left out. Each group records ``base_lr`` on first use by the trainer.

    Example:
        >>> groups = parameter_groups(list(nn.Linear(3, 2).named_parameters()), 0.1)
        >>> [(g["weight_decay"], len(g["params"])) for g in groups]
        [(0.1, 1), (0.0, 1)]
    """
    decay = [p for _, p in named if decay_all or p.dim() >= 2]
    keep = [p for _, p in named if not (decay_all or p.dim() >= 2)]
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": keep, "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """The configured optimizer over the model's trainable parameters, in parameter groups.

    Parameters are grouped by learning-rate multiplier (``train.lr_multipliers``), by whether
    they wait ``train.delay_epochs`` (``train.delayed``), then by weight decay; each group records
    ``base_lr`` (``train.lr`` times its multiplier) and ``delayed``.
    """
    named = trainable_parameters(model, cfg.trainable, cfg.frozen)
    names = [n for n, _ in named]
    for key, patterns in (("lr_multipliers", list(cfg.lr_multipliers)), ("delayed", cfg.delayed)):
        _check_patterns(key, patterns, names, "trainable parameter")
    keyed: dict[tuple[float, bool], list[tuple[str, nn.Parameter]]] = {}
    for name, param in named:
        keyed.setdefault(_placement(name, cfg), []).append((name, param))
    groups, settings = [], []
    for (mult, delayed), members in keyed.items():
        for group in parameter_groups(members, cfg.weight_decay, cfg.decay_norm_and_bias):
            groups.append(group)
            settings.append((cfg.lr * mult, delayed))
    optimizer = OPTIMIZERS.get(cfg.optimizer)(groups, cfg)
    for group, (base_lr, delayed) in zip(optimizer.param_groups, settings, strict=True):
        group["base_lr"], group["delayed"] = base_lr, delayed
    return optimizer


def _placement(name: str, cfg: TrainConfig) -> tuple[float, bool]:
    """A parameter's learning-rate multiplier (the first matching pattern's) and delay."""
    mult = next(
        (
            float(m)
            for pattern, m in cfg.lr_multipliers.items()
            if fnmatch.fnmatchcase(name, pattern)
        ),
        1.0,
    )
    delayed = cfg.delay_epochs > 0 and any(fnmatch.fnmatchcase(name, p) for p in cfg.delayed)
    return mult, delayed


def _check_patterns(
    key: str, patterns: Sequence[str], names: Sequence[str], what: str = "parameter"
) -> None:
    """Refuse a pattern that matches none of ``names`` (a typo would silently do nothing)."""
    for pattern in patterns:
        if not fnmatch.filter(names, pattern):
            shown = ", ".join(names[:12]) + (" ..." if len(names) > 12 else "")
            raise ConfigError(
                f"train.{key} pattern '{pattern}' matches no {what}; {what}s: {shown}"
            )


def set_learning_rate(
    optimizer: torch.optim.Optimizer, factor: float, *, epoch: int = 0, delay_epochs: int = 0
) -> None:
    """Set every group's learning rate to its ``base_lr`` times ``factor``; 0 for a ``delayed``
    group while ``epoch < delay_epochs`` (0-based epochs)."""
    for group in optimizer.param_groups:
        held = group.get("delayed", False) and epoch < delay_epochs
        group["lr"] = 0.0 if held else group["base_lr"] * factor
