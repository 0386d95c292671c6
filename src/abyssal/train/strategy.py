"""Where training runs: the :class:`Strategy` protocol, the one-process :class:`LocalStrategy`
and the :data:`STRATEGIES` registry.

The trainer talks to processes and devices only through a strategy, so that DDP, FSDP or a
parameter server slot in as registered strategies without changes to the training loop. A
strategy owns:

- the process's place: ``rank``, ``world_size``, ``is_main`` and its :class:`Shard` of the data;
- the model's wrapping (:meth:`Strategy.setup`) and what checkpoints hold (:meth:`unwrap`);
- gradient synchronisation: :meth:`accumulate` suspends it on the micro-batches of a
  gradient-accumulation window that are not the last (DDP's ``no_sync``);
- the update: :meth:`step` unscales, clips and steps (a parameter server replaces it by a push
  and a pull);
- state dicts, gathered collectively (:meth:`model_state`, :meth:`optimizer_state`, called on
  every rank) and loaded from full, topology-free copies (:meth:`load_state`), so that a
  checkpoint written by N processes resumes on M;
- communication for the loop: :meth:`gather` (validation outputs: AUROC or mAP cannot be averaged
  across ranks), :meth:`mean`, :meth:`agree`, :meth:`broadcast`, :meth:`barrier`.

A strategy is built from the ``train`` config: ``make_strategy(cfg)``. Its name is checked
against the registry before a run exists.

Example:
    >>> strategy = make_strategy(TrainConfig())
    >>> model = strategy.setup(torch.nn.Linear(2, 1), strategy.device("cpu"))
    >>> strategy.unwrap(model) is model, strategy.world_size
    (True, 1)
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn
from torch.nn.utils import clip_grad_norm_

from abyssal.contracts.task import Shard
from abyssal.contracts.train_config import TrainConfig
from abyssal.core.devices import resolve_device
from abyssal.core.errors import AbyssalError
from abyssal.core.registry import Registry


@runtime_checkable
class Strategy(Protocol):
    """How the trainer places a model on devices and processes.

    Attributes:
        name: the registered name.
        rank: this process's index among the training processes.
        world_size: how many processes train.
        is_main: whether this process writes records, checkpoints and the progress bar.
        shard: this process's part of the data.
        trains: ``False`` on a process that only serves others (a parameter server); the trainer
            then calls :meth:`serve` instead of training.
        lockstep: every rank must make the same number of forward and backward calls (collectives
            run inside them).
        sharded_checkpoints: every rank writes its own shards of the model and optimizer state
            (:mod:`abyssal.train.sharded`) instead of rank 0 writing full states.
    """

    name: str
    rank: int
    world_size: int
    is_main: bool
    shard: Shard
    trains: bool
    lockstep: bool
    sharded_checkpoints: bool

    def device(self, spec: str) -> torch.device:
        """The device this process trains on, given the config's device spec."""

    def setup(self, model: nn.Module, device: torch.device) -> nn.Module:
        """Move ``model`` to ``device`` and wrap it as the strategy needs (e.g. in DDP)."""

    def unwrap(self, model: nn.Module) -> nn.Module:
        """The plain module inside what :meth:`setup` returned."""

    def accumulate(self, model: nn.Module, sync: bool) -> contextlib.AbstractContextManager[None]:
        """The context a micro-batch's forward and backward run in; ``sync=False`` on every
        micro-batch of an accumulation window but the last, so gradients sync once a step."""

    def step(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scaler: torch.amp.GradScaler,
        clip_grad_norm: float | None,
    ) -> None:
        """Unscale, clip (to the global norm), step, update the scaler and zero the gradients."""

    def model_state(self, model: nn.Module) -> dict[str, torch.Tensor] | None:
        """The full model ``state_dict`` on the CPU, on the main process (call on every rank;
        other ranks may get ``None``)."""

    def optimizer_state(
        self, model: nn.Module, optimizer: torch.optim.Optimizer
    ) -> dict[str, Any] | None:
        """The full optimizer state in ``torch.optim.Optimizer.state_dict()`` form (state keyed
        by parameter index), on the main process (call on every rank)."""

    def load_state(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None,
        model_state: Mapping[str, torch.Tensor],
        optimizer_state: Mapping[str, Any] | None,
    ) -> None:
        """Load full (unsharded) states, as :meth:`model_state` and :meth:`optimizer_state`
        return them, into the set-up model and its optimizer (call on every rank)."""

    def gather(self, outputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Every process's outputs concatenated along the first axis, in rank order."""

    def mean(self, value: float) -> float:
        """The mean of ``value`` over processes (e.g. the training loss)."""

    def agree(self, value: int, op: Literal["min", "max", "sum"]) -> int:
        """``value`` reduced over processes (e.g. the batch count every rank has)."""

    def broadcast(self, value: Any) -> Any:
        """The main process's ``value``, on every process (a picklable object)."""

    def all_gather(self, value: Any) -> list[Any]:
        """Every process's ``value`` (a picklable object), in rank order."""

    def barrier(self) -> None:
        """Wait until every process reaches this point."""

    def serve(self, build_model: Callable[[], nn.Module], cfg: TrainConfig) -> None:
        """On a process with ``trains=False``: serve the training processes until they finish."""

    def close(self, ok: bool = True) -> None:
        """Leave the process group (a no-op for one process); ``ok=False`` after an error: leave
        at once, without waiting for the others (they may be stuck in a collective)."""


class LocalStrategy:
    """One process on the CPU or on one CUDA device: no wrapping, no communication.

    Example:
        >>> LocalStrategy().mean(0.25)
        0.25
    """

    name = "local"
    rank = 0
    world_size = 1
    is_main = True
    shard = Shard(0, 1)
    trains = True
    lockstep = False
    sharded_checkpoints = False

    def __init__(self, cfg: TrainConfig | None = None) -> None:
        self.cfg = cfg

    def device(self, spec: str) -> torch.device:
        """``resolve_device(spec)``: ``auto`` picks CUDA when available."""
        return resolve_device(spec)

    def setup(self, model: nn.Module, device: torch.device) -> nn.Module:
        """``model`` moved to ``device``."""
        return model.to(device)

    def unwrap(self, model: nn.Module) -> nn.Module:
        """``model`` itself."""
        return model

    def accumulate(self, model: nn.Module, sync: bool) -> contextlib.AbstractContextManager[None]:
        """Nothing to suspend."""
        return contextlib.nullcontext()

    def step(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scaler: torch.amp.GradScaler,
        clip_grad_norm: float | None,
    ) -> None:
        """The usual mixed-precision step: unscale, clip, step, update, zero."""
        optimizer_step(model, optimizer, scaler, clip_grad_norm)

    def model_state(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """``model.state_dict()``."""
        return model.state_dict()

    def optimizer_state(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        """``optimizer.state_dict()``."""
        return optimizer.state_dict()

    def load_state(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None,
        model_state: Mapping[str, torch.Tensor],
        optimizer_state: Mapping[str, Any] | None,
    ) -> None:
        """``load_state_dict`` on both, with a clear error on a model of another shape."""
        load_model_state(model, model_state)
        if optimizer is not None and optimizer_state is not None:
            optimizer.load_state_dict(dict(optimizer_state))

    def gather(self, outputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``outputs`` unchanged (there is one process)."""
        return dict(outputs)

    def mean(self, value: float) -> float:
        """``value`` (there is one process)."""
        return value

    def agree(self, value: int, op: Literal["min", "max", "sum"]) -> int:
        """``value`` (there is one process)."""
        return value

    def broadcast(self, value: Any) -> Any:
        """``value`` (there is one process)."""
        return value

    def all_gather(self, value: Any) -> list[Any]:
        """``[value]`` (there is one process)."""
        return [value]

    def barrier(self) -> None:
        """Nothing to wait for."""

    def serve(self, build_model: Callable[[], nn.Module], cfg: TrainConfig) -> None:
        """Never called: the one process trains."""
        raise AbyssalError("the local strategy has no serving processes")

    def close(self, ok: bool = True) -> None:
        """Nothing to leave."""


def optimizer_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    clip_grad_norm: float | None,
) -> None:
    """Unscale (fp16), clip to the global gradient norm, step, update the scaler, zero the
    gradients. ``clip_grad_norm_`` takes the norm over sharded (DTensor) gradients too."""
    if clip_grad_norm is not None:
        scaler.unscale_(optimizer)
        clip_grad_norm_(model.parameters(), clip_grad_norm)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)


def load_model_state(
    model: Any, state: Mapping[str, torch.Tensor], *, check_only: bool = False
) -> None:
    """``model.load_state_dict(state)``, refusing another model's state with the reason.

    Args:
        model: the module (anything with ``state_dict()`` when ``check_only``).
        state: the full state.
        check_only: only compare keys and shapes.

    Raises:
        AbyssalError: keys missing or unexpected, or a tensor of another shape (named).
    """
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    if missing or extra:
        raise AbyssalError(
            "the checkpoint holds another model: "
            + "; ".join(
                f"{what} {', '.join(keys[:5])}{' ...' if len(keys) > 5 else ''}"
                for what, keys in (("missing", missing), ("unexpected", extra))
                if keys
            )
        )
    for key, value in own.items():
        if tuple(getattr(value, "shape", ())) != tuple(state[key].shape):
            raise AbyssalError(
                f"the checkpoint holds another model: {key} has shape "
                f"{tuple(state[key].shape)} there, {tuple(value.shape)} here (the model's "
                "configuration changed)"
            )
    if not check_only:
        model.load_state_dict(dict(state))


def optimizer_parameter_names(model: nn.Module, optimizer: torch.optim.Optimizer) -> list[str]:
    """The names of ``optimizer``'s parameters in ``Optimizer.state_dict()`` index order (what
    turns an index-keyed optimizer state into a name-keyed one and back)."""
    names = {id(p): n for n, p in model.named_parameters()}
    return [names[id(p)] for group in optimizer.param_groups for p in group["params"]]


def gather_outputs(
    outputs: Mapping[str, np.ndarray], group: object = None
) -> dict[str, np.ndarray]:
    """All ranks' validation outputs, concatenated in rank order (call on every rank).

    Ranks may hold different numbers of rows (shards differ in size by one); every rank must
    return the same keys.

    Args:
        outputs: name -> array with rows along the first axis.
        group: the ``torch.distributed`` process group; the default group when ``None``.

    Returns:
        name -> the concatenation of every rank's array.

    Raises:
        AbyssalError: ranks returned different output names.
    """
    import torch.distributed as dist

    parts: list[dict[str, np.ndarray] | None] = [None] * dist.get_world_size(group)
    dist.all_gather_object(parts, {k: np.asarray(v) for k, v in outputs.items()}, group=group)
    keys = set(parts[0] or {})
    if any(set(p or {}) != keys for p in parts):
        raise AbyssalError("validation outputs differ in their names across processes")
    return {k: np.concatenate([p[k] for p in parts if p is not None]) for k in sorted(keys)}


STRATEGIES: Registry[Callable[[TrainConfig], Strategy]] = Registry(
    "strategy", group="abyssal.strategies"
)
STRATEGIES.add("local", LocalStrategy)


def make_strategy(cfg: TrainConfig) -> Strategy:
    """The strategy ``cfg.strategy`` names, built from ``cfg`` (joins the process group).

    Raises:
        ConfigError: an unknown strategy name (the known ones are listed).
        AbyssalError: the launch or the hardware cannot run it (the message says what to change).
    """
    _register_builtin()
    factory = STRATEGIES.get(cfg.strategy)
    if cfg.strategy == "local":
        from abyssal.train.distributed import Launch

        launch = Launch.from_env()
        if launch is not None and launch.world_size > 1:
            raise AbyssalError(
                f"this process is one of {launch.world_size} that torchrun launched, but "
                "train.strategy=local trains in one process: set train.strategy=ddp, fsdp or "
                "parameter_server"
            )
    return factory(cfg)


def check_strategy_name(name: str) -> None:
    """Fail early (before a run exists) on an unknown strategy name."""
    _register_builtin()
    STRATEGIES.get(name)


def _register_builtin() -> None:
    # The distributed strategies import torch.distributed pieces; they register on first use.
    import abyssal.train.data_parallel
    import abyssal.train.parameter_server  # noqa: F401
