"""Joining a ``torch.distributed`` process group from a ``torchrun`` launch, and the strategy base
that every multi-process strategy shares.

``torchrun`` (or ``abyssal train --nproc N``, which starts it) sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT`` in each process;
:class:`Launch` reads them. :class:`ProcessGroupStrategy` checks that the hardware can run the
launch before joining (NCCL needs one CUDA device per process on the host; more processes than
devices, or a device named by index with several processes, is refused with what to change),
joins with a timeout so that a dead rank fails the others instead of hanging them, and implements
the communication half of :class:`~abyssal.train.strategy.Strategy` (gather, mean, agree,
broadcast, barrier, close) over the group.

Example:
    >>> Launch.from_env({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"})
    Launch(rank=1, world_size=2, local_rank=1, local_world_size=2)
"""

from __future__ import annotations

import contextlib
import datetime
import gc
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.distributed as dist

from abyssal.contracts.task import Shard
from abyssal.contracts.train_config import TrainConfig
from abyssal.core.errors import AbyssalError, ConfigError
from abyssal.train.strategy import gather_outputs, optimizer_step

LAUNCH_HINT = (
    "launch one process per device: `abyssal train SOLUTION ... --nproc N` or "
    "`torchrun --nproc-per-node N -m abyssal train SOLUTION ...`"
)


@dataclass(frozen=True)
class Launch:
    """Where this process sits in a ``torchrun`` launch."""

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Launch | None:
        """The launch the environment describes, or ``None`` outside ``torchrun``.

        Raises:
            AbyssalError: the variables are there but not numbers, or contradict each other.
        """
        env = os.environ if env is None else env
        if "RANK" not in env or "WORLD_SIZE" not in env:
            return None
        try:
            rank, world = int(env["RANK"]), int(env["WORLD_SIZE"])
            local_rank = int(env.get("LOCAL_RANK", rank))
            local_world = int(env.get("LOCAL_WORLD_SIZE", world))
        except ValueError:
            raise AbyssalError(
                "RANK, WORLD_SIZE, LOCAL_RANK and LOCAL_WORLD_SIZE must be integers"
            ) from None
        if not (0 <= rank < world and 0 <= local_rank < local_world <= world):
            raise AbyssalError(
                f"inconsistent launch: RANK={rank} WORLD_SIZE={world} LOCAL_RANK={local_rank} "
                f"LOCAL_WORLD_SIZE={local_world}"
            )
        return cls(rank, world, local_rank, local_world)


def choose_device(spec: str, launch: Launch) -> torch.device:
    """This process's device: ``cuda:LOCAL_RANK`` for ``auto`` (with CUDA) and ``cuda``.

    Raises:
        AbyssalError: CUDA is asked for but missing, fewer GPUs than processes on the host, or a
            device index given to several processes.
    """
    cuda = torch.cuda.is_available()
    if spec == "cpu" or (spec == "auto" and not cuda):
        return torch.device("cpu")
    if spec not in ("auto", "cuda"):
        if spec.startswith("cuda:") and launch.world_size > 1:
            raise AbyssalError(
                f"train.device={spec} names one GPU, but {launch.world_size} processes train: "
                "set train.device=cuda (each process takes cuda:LOCAL_RANK)"
            )
        if spec.startswith("cuda:") and cuda:
            return torch.device(spec)
        if not spec.startswith("cuda"):
            raise ConfigError(f"train.device must be auto, cpu, cuda or cuda:N, got {spec!r}")
    if not cuda:
        raise AbyssalError(f"train.device={spec} needs CUDA, and this machine has none")
    count = torch.cuda.device_count()
    if launch.local_world_size > count:
        raise AbyssalError(
            f"{launch.local_world_size} processes on this host but {count} GPU(s): launch at "
            f"most {count} per host (--nproc {count}), or train on CPUs with train.device=cpu"
        )
    return torch.device("cuda", launch.local_rank)


def choose_backend(backend: str, device: torch.device) -> str:
    """``nccl`` for CUDA devices and ``gloo`` for CPUs when ``auto``; refuses NCCL on CPUs."""
    if backend == "auto":
        return "nccl" if device.type == "cuda" else "gloo"
    if backend == "nccl" and device.type != "cuda":
        raise AbyssalError(
            "train.backend=nccl needs CUDA devices, and this process trains on the CPU: set "
            "train.backend=gloo (or auto), or train.device=cuda on a machine with GPUs"
        )
    return backend


class ProcessGroupStrategy:
    """The communication half of a multi-process strategy, over the default process group.

    Subclasses set ``name`` and implement setup, unwrap, accumulate and the state dicts (and
    ``step`` where the usual one does not fit).

    Args:
        cfg: the ``train`` config (``device``, ``backend``, ``timeout_s``).
        launch: where this process sits; read from the environment when ``None``.

    Raises:
        AbyssalError: not launched by ``torchrun`` (the message says how to launch), or the
            hardware cannot run the launch.
    """

    name = "distributed"
    trains = True
    lockstep = True
    sharded_checkpoints = False

    def __init__(self, cfg: TrainConfig, launch: Launch | None = None) -> None:
        launch = launch or Launch.from_env()
        if launch is None:
            raise AbyssalError(f"train.strategy={self.name} runs several processes: {LAUNCH_HINT}")
        self.cfg = cfg
        self.launch = launch
        self._device = choose_device(cfg.device, launch)
        self.backend = choose_backend(cfg.backend, self._device)
        if self._device.type == "cuda":
            torch.cuda.set_device(self._device)
        if not dist.is_initialized():
            dist.init_process_group(
                self.backend,
                timeout=datetime.timedelta(seconds=cfg.timeout_s),
                device_id=self._device if self.backend == "nccl" else None,
            )
        self.rank = dist.get_rank()
        self.world_size = dist.get_world_size()
        self.is_main = self.rank == 0
        self.shard = Shard(self.rank, self.world_size)
        self.group: Any = None  # the group the training processes share (all, by default)

    def device(self, spec: str) -> torch.device:
        """The device chosen at start (``cuda:LOCAL_RANK`` or the CPU)."""
        return self._device

    def step(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        scaler: torch.amp.GradScaler,
        clip_grad_norm: float | None,
    ) -> None:
        """Unscale, clip to the global norm, step, zero: the same on every process when the
        gradients are synchronised (DDP, FSDP); a parameter server replaces it."""
        optimizer_step(model, optimizer, scaler, clip_grad_norm)

    def _comm_device(self) -> torch.device:
        return self._device if self.backend == "nccl" else torch.device("cpu")

    def gather(self, outputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Every training process's outputs, concatenated in rank order."""
        return gather_outputs(outputs, self.group)

    def mean(self, value: float) -> float:
        """The mean of ``value`` over the training processes."""
        total = torch.tensor([value], dtype=torch.float64, device=self._comm_device())
        dist.all_reduce(total, group=self.group)
        return float(total.item()) / dist.get_world_size(self.group)

    def agree(self, value: int, op: Literal["min", "max", "sum"]) -> int:
        """``value`` reduced (min, max or sum) over the training processes."""
        ops = {"min": dist.ReduceOp.MIN, "max": dist.ReduceOp.MAX, "sum": dist.ReduceOp.SUM}
        t = torch.tensor([value], dtype=torch.int64, device=self._comm_device())
        dist.all_reduce(t, op=ops[op], group=self.group)
        return int(t.item())

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` on every process of the default group."""
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def all_gather(self, value: Any) -> list[Any]:
        """Every training process's ``value``, in rank order."""
        out: list[Any] = [None] * dist.get_world_size(self.group)
        dist.all_gather_object(out, value, group=self.group)
        return out

    def barrier(self) -> None:
        """Wait for every process of the default group."""
        dist.barrier()

    def serve(self, build_model: Any, cfg: TrainConfig) -> None:
        """Never called: every process trains."""
        raise AbyssalError(f"the {self.name} strategy has no serving processes")

    def close(self, ok: bool = True) -> None:
        """Leave the process group: after a barrier when ``ok`` (gloo can abort if a peer
        leaves first), at once after an error (the others may wait in a collective)."""
        leave_process_group(barrier=ok)


def leave_process_group(barrier: bool) -> None:
    """Destroy the default process group: after a barrier when ``barrier`` (gloo can abort if a
    peer leaves first), at once otherwise (after an error the others may wait in a collective).
    Errors are swallowed: a failed peer must not hide the first error.

    What still refers to the group's work (reference cycles through wrapped models, futures and
    autograd graphs) is freed here, while the interpreter is whole: freed at exit instead, a gloo
    worker thread can abort the process ("terminate called without an active exception") after
    training succeeded."""
    if not dist.is_initialized():
        return
    with contextlib.suppress(Exception):
        if barrier:
            dist.barrier()
        gc.collect()
        dist.destroy_process_group()
        gc.collect()
