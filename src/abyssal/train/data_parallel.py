"""Synchronous data parallelism: ``ddp`` (DistributedDataParallel) and ``fsdp`` (FSDP2
``fully_shard``), registered in :data:`~abyssal.train.strategy.STRATEGIES`.

Both train one replica of the step per process on the process's shard of every epoch and average
gradients across processes, so ``N`` processes with per-process batch ``B`` take the same steps as
one process with batch ``N * B``. ``ddp`` keeps a full copy of parameters, gradients and
optimizer state on every device; ``fsdp`` shards all three across the processes and gathers a
block's parameters only while it computes, so a model whose training state does not fit one
device trains on several (and, with ``train.fsdp.cpu_offload``, keeps the shards in CPU memory).

State dicts are full and topology-free in checkpoints: ``fsdp`` gathers them collectively
(``torch.distributed.checkpoint.state_dict`` with ``full_state_dict``) and each process loads its
own shard back from the full copy, so a run checkpointed on 4 processes resumes on 2 or on one.

Example:
    >>> # torchrun --nproc-per-node 2 -m abyssal train fraud train.strategy=ddp
    >>> make_strategy(TrainConfig(strategy="ddp"))  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from abyssal.contracts.train_config import TrainConfig
from abyssal.core.devices import autocast_dtype
from abyssal.core.errors import AbyssalError
from abyssal.train.distributed import Launch, ProcessGroupStrategy
from abyssal.train.strategy import STRATEGIES, load_model_state, optimizer_parameter_names

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# torch >= 2.14 names it forward_sync_buffers (broadcast_buffers is deprecated there)
_NO_FORWARD_BUFFER_SYNC = (
    {"forward_sync_buffers": False}
    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters
    else {"broadcast_buffers": False}
)


class DDPStrategy(ProcessGroupStrategy):
    """One full replica per process; gradients all-reduced in buckets during backward, so the
    base class's usual step (unscale, clip, step) is the same on every replica.

    Settings: ``train.ddp`` (bucket size, unused parameters, static graph), ``train.backend``,
    ``train.timeout_s``.
    """

    name = "ddp"

    def setup(self, model: nn.Module, device: torch.device) -> nn.Module:
        """``model`` on this process's device, wrapped in ``DistributedDataParallel`` (which
        broadcasts rank 0's weights, so every replica starts equal)."""
        model = model.to(device)
        if not any(p.requires_grad for p in model.parameters()):
            raise AbyssalError("ddp: the model has no parameter to train")
        c = self.cfg.ddp
        return DistributedDataParallel(
            model,
            device_ids=[device.index] if device.type == "cuda" else None,
            bucket_cap_mb=c.bucket_cap_mb,
            find_unused_parameters=c.find_unused_parameters,
            static_graph=c.static_graph,
            gradient_as_bucket_view=c.gradient_as_bucket_view,
            **_NO_FORWARD_BUFFER_SYNC,  # no collective in forward: ranks may validate unevenly
        )

    def unwrap(self, model: nn.Module) -> nn.Module:
        """The module inside ``DistributedDataParallel``."""
        return model.module if isinstance(model, DistributedDataParallel) else model

    def accumulate(self, model: nn.Module, sync: bool) -> contextlib.AbstractContextManager[None]:
        """``model.no_sync()`` unless this micro-batch ends the accumulation window."""
        if sync or not isinstance(model, DistributedDataParallel):
            return contextlib.nullcontext()
        return model.no_sync()

    def model_state(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The replica's ``state_dict`` (the same on every rank)."""
        return self.unwrap(model).state_dict()

    def optimizer_state(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        """The optimizer's ``state_dict`` (the same on every rank)."""
        return optimizer.state_dict()

    def load_state(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None,
        model_state: Mapping[str, torch.Tensor],
        optimizer_state: Mapping[str, Any] | None,
    ) -> None:
        """Every rank loads the same full states."""
        load_model_state(self.unwrap(model), model_state)
        if optimizer is not None and optimizer_state is not None:
            optimizer.load_state_dict(dict(optimizer_state))


class FSDPStrategy(ProcessGroupStrategy):
    """Parameters, gradients and optimizer state sharded over the processes (FSDP2).

    Blocks (``train.fsdp.shard_modules``, or by default every member of a ``ModuleList`` or of a
    ``Sequential`` of two or more modules) are sharded one by one, then the whole model, so only
    one block's full parameters exist at a time. Mixed precision follows ``train.precision``
    (parameters gathered in bf16, gradients reduced in ``train.fsdp.reduce_dtype``). The usual
    step clips to the global norm over every shard and steps each process's shard.

    Raises:
        AbyssalError: one process on a CPU (nothing to shard over: use ``local``), or fp16
            precision (use bf16).
    """

    name = "fsdp"

    def __init__(self, cfg: TrainConfig, launch: Launch | None = None) -> None:
        super().__init__(cfg, launch)
        if self.world_size == 1 and self._device.type == "cpu":
            raise AbyssalError(
                "train.strategy=fsdp on one CPU process has nothing to shard over: use "
                "train.strategy=local, or launch several processes (--nproc N)"
            )
        if cfg.precision == "fp16":
            raise AbyssalError(
                "train.strategy=fsdp trains in fp32 or bf16: set train.precision=bf16 (or auto)"
            )
        self.sharded_checkpoints = cfg.fsdp.sharded_checkpoints

    def setup(self, model: nn.Module, device: torch.device) -> nn.Module:
        """Shard ``model`` block by block over the process group, on ``device``.

        A model built on the ``meta`` device (too large to build whole) is materialised shard by
        shard after sharding, and initialised with its ``init_weights()`` (or each module's
        ``reset_parameters()``).
        """
        from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, fully_shard

        c = self.cfg.fsdp
        on_meta = any(p.is_meta for p in model.parameters())
        if not on_meta and not c.cpu_offload:
            model = model.to(device)
        policy = MixedPrecisionPolicy(
            param_dtype=self._param_dtype(device), reduce_dtype=_DTYPES[c.reduce_dtype]
        )
        options: dict[str, Any] = {"mp_policy": policy}
        options["reshard_after_forward"] = c.reshard_after_forward
        if c.cpu_offload:
            options["offload_policy"] = CPUOffloadPolicy()
        for param in model.parameters():  # FSDP2 shards contiguous tensors only
            if not param.is_contiguous():  # e.g. channels_last conv weights; inputs may stay so
                param.data = param.data.contiguous()
        blocks = shard_units(model, c.shard_modules)
        for block in blocks:
            fully_shard(block, **options)
        fully_shard(model, **options)
        if on_meta:
            model.to_empty(device="cpu" if c.cpu_offload else device)
            _initialise(model)
        return model

    def _param_dtype(self, device: torch.device) -> torch.dtype | None:
        choice = self.cfg.fsdp.param_dtype
        if choice != "auto":
            return _DTYPES[choice]
        return autocast_dtype(self.cfg.precision, device)  # None: fp32

    def unwrap(self, model: nn.Module) -> nn.Module:
        """``model`` itself: ``fully_shard`` shards in place and keeps parameter names."""
        return model

    def accumulate(self, model: nn.Module, sync: bool) -> contextlib.AbstractContextManager[None]:
        """Gradients are reduce-scattered only on the window's last micro-batch."""
        setter = getattr(model, "set_requires_gradient_sync", None)
        if setter is not None:
            setter(sync)
        return contextlib.nullcontext()

    def _options(self) -> Any:
        from torch.distributed.checkpoint.state_dict import StateDictOptions

        return StateDictOptions(full_state_dict=True, cpu_offload=True)

    def model_state(self, model: nn.Module) -> dict[str, torch.Tensor] | None:
        """The full ``state_dict``, gathered onto rank 0's CPU (``None`` elsewhere)."""
        from torch.distributed.checkpoint.state_dict import get_model_state_dict

        state = get_model_state_dict(model, options=self._options())
        return state if self.is_main else None

    def optimizer_state(
        self, model: nn.Module, optimizer: torch.optim.Optimizer
    ) -> dict[str, Any] | None:
        """The full optimizer state on rank 0, keyed by parameter index like
        ``Optimizer.state_dict()`` (``None`` elsewhere)."""
        from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

        state = get_optimizer_state_dict(model, optimizer, options=self._options())
        if not self.is_main:
            return None
        return _by_index(state, optimizer_parameter_names(model, optimizer))

    def load_state(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None,
        model_state: Mapping[str, torch.Tensor],
        optimizer_state: Mapping[str, Any] | None,
    ) -> None:
        """Each rank takes its shard of the full states (read by every rank)."""
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_model_state_dict,
            set_optimizer_state_dict,
        )

        _check_full_state(model, model_state)
        options = StateDictOptions(full_state_dict=True)
        set_model_state_dict(model, dict(model_state), options=options)
        if optimizer is not None and optimizer_state is not None:
            names = optimizer_parameter_names(model, optimizer)
            set_optimizer_state_dict(
                model, optimizer, _by_name(optimizer_state, names), options=options
            )


def shard_units(model: nn.Module, class_names: list[str]) -> list[nn.Module]:
    """The blocks FSDP shards one by one, deepest first (``fully_shard`` shards a block's
    inner blocks before the block itself).

    Args:
        model: the model.
        class_names: module class names; empty: every member of a ``ModuleList`` and of a
            ``Sequential`` of two or more modules that holds parameters and is not inside
            another such member.

    Raises:
        AbyssalError: a class name matches no module (the model's block classes are listed).
    """
    if class_names:
        chosen = [m for m in model.modules() if type(m).__name__ in class_names]
        if m_missing := sorted(set(class_names) - {type(m).__name__ for m in chosen}):
            kinds = sorted({type(m).__name__ for m in model.modules()})
            raise AbyssalError(
                f"train.fsdp.shard_modules: no module of class {', '.join(m_missing)}; the model "
                f"has {', '.join(kinds[:20])}"
            )
    else:
        chosen = []
        for module in model.modules():
            if isinstance(module, nn.ModuleList) or (
                isinstance(module, nn.Sequential) and len(module) >= 2
            ):
                chosen.extend(m for m in module if any(True for _ in m.parameters()))
        # the outermost such blocks: a block's own small Sequentials are gathered with it
        inner = {id(x) for m in chosen for x in m.modules() if x is not m}
        chosen = [m for m in chosen if id(m) not in inner]
    depth = {id(m): name.count(".") + 1 for name, m in model.named_modules() if name}
    unique = list({id(m): m for m in chosen if m is not model}.values())
    return sorted(unique, key=lambda m: -depth[id(m)])


def _initialise(model: nn.Module) -> None:
    """Initialise a model materialised from the meta device."""
    init = getattr(model, "init_weights", None)
    with torch.no_grad():
        if callable(init):
            init()
            return
        for module in model.modules():
            reset = getattr(module, "reset_parameters", None)
            if callable(reset):
                reset()


def _by_index(state: Mapping[str, Any], names: list[str]) -> dict[str, Any]:
    index = {n: i for i, n in enumerate(names)}
    groups = [
        {**{k: v for k, v in g.items() if k != "params"}, "params": [index[n] for n in g["params"]]}
        for g in state["param_groups"]
    ]
    return {"state": {index[n]: s for n, s in state["state"].items()}, "param_groups": groups}


def _by_name(state: Mapping[str, Any], names: list[str]) -> dict[str, Any]:
    groups = [
        {**{k: v for k, v in g.items() if k != "params"}, "params": [names[i] for i in g["params"]]}
        for g in state["param_groups"]
    ]
    return {"state": {names[int(i)]: s for i, s in state["state"].items()}, "param_groups": groups}


def _check_full_state(model: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Refuse another model's state before the collective load starts (a sharded parameter's
    ``shape`` is its full shape)."""
    load_model_state(_ShapeOnly(model.state_dict()), state, check_only=True)


class _ShapeOnly:
    """What :func:`load_model_state` reads of a model to check a state against it."""

    def __init__(self, state: Mapping[str, Any]) -> None:
        self._state = state

    def state_dict(self) -> Mapping[str, Any]:
        return self._state


STRATEGIES.add("ddp", DDPStrategy)
STRATEGIES.add("fsdp", FSDPStrategy)
