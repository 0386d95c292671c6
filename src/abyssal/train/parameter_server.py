"""Asynchronous training against parameter servers: ``parameter_server``, registered in
:data:`~abyssal.train.strategy.STRATEGIES`.

The parameter-server architecture (Li et al., "Scaling Distributed Machine Learning with the
Parameter Server", OSDI 2014; Dean et al., "Large Scale Distributed Deep Networks", NIPS 2012)
with bounded staleness (Ho et al., "More Effective Distributed ML via a Stale Synchronous
Parallel Parameter Server", NIPS 2013). Of ``N`` processes launched by ``torchrun``, the last
``S = train.parameter_server.servers`` are servers and the first ``N - S`` workers:

- each server holds a shard of the trainable parameters (whole tensors, dealt greedily by size,
  largest first, to the least loaded server) and runs the configured optimizer
  (:func:`~abyssal.train.optim.build_optimizer` over the same model, so an update equals the
  local optimizer's) on it, at the learning rate sent with each push;
- a worker computes gradients on its shard of the data, and its :meth:`step` pushes them (one
  flat tensor per server) and copies the fresh parameters it gets back into its model;
- with ``staleness = s``, a worker that has pushed ``c`` times gets its reply (and so goes on)
  only once every other unfinished worker has pushed at least ``c - s`` times. ``s > 0``: every
  push is one optimizer step on the servers, applied as it arrives, with the gradient clipped by
  its worker. ``s = 0`` is synchronous: the servers wait for every worker's push, average the
  gradients (summed in worker order, so the result does not depend on arrival), clip the average
  to the global norm (the servers agree on it over their own group) and take one step: DDP's
  step, or one process's on the global batch (up to rounding).

Transport. Everything runs on ``torch.distributed`` point-to-point messages over gloo, in the one
process group ``torchrun`` sets up: a server waits for a header from any worker
(``recv(src=None)``), then takes that worker's payload, and answers (or defers its answer, as
staleness demands) in a single thread, so no lock guards its state. ``torch.distributed.rpc``
was not chosen: it needs a second agent and rendezvous beside the process group, runs handlers
on a thread pool (deferred replies would need futures and locks), and its graceful shutdown is a
global barrier that hangs on a dead peer. Gloo send/recv is long-stable API, and every wait is
bounded by ``train.timeout_s``, so a dead peer fails the others with a message instead of
hanging them. Parameters and gradients travel as CPU tensors: servers run on the CPU, and a
CUDA worker flattens its gradients on the GPU and copies one tensor per server to the host.
Workers keep no optimizer state (their optimizer only carries the learning rates).

Collectives for the training loop (:meth:`gather`, :meth:`mean`, :meth:`agree`,
:meth:`all_gather`, :meth:`barrier`) run among the workers only, on a group of their own;
:meth:`broadcast` reaches every process, servers included (call it before :meth:`serve`).

Limits: workers must take the same number of steps between the loop's collectives (a worker
more than ``s`` steps ahead waits for pushes that never come while the others wait in the
collective, until ``train.timeout_s``); a server that hears from no worker for
``train.timeout_s`` (an evaluation and checkpoint longer than that) fails; at ``s = 0`` a server
holds one gradient per worker until the round is complete; tensors are not split, so ``S`` is at
most the number of trainable tensors and the largest tensor bounds the balance; buffers (e.g.
BatchNorm statistics) stay with each worker, and checkpoints hold the main worker's.

Example:
    >>> # torchrun --nproc-per-node 3 -m abyssal train fraud train.strategy=parameter_server \\
    >>> #     train.parameter_server.servers=1 train.parameter_server.staleness=2
    >>> make_strategy(TrainConfig(strategy="parameter_server"))  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import datetime
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import torch
import torch.distributed as dist
from torch import nn

from abyssal.contracts.task import Shard
from abyssal.contracts.train_config import TrainConfig
from abyssal.core.errors import AbyssalError
from abyssal.train.distributed import (
    LAUNCH_HINT,
    Launch,
    ProcessGroupStrategy,
    choose_device,
    leave_process_group,
)
from abyssal.train.optim import build_optimizer, trainable_parameters
from abyssal.train.ps_server import (
    BODY,
    DONE,
    HEADER,
    INIT,
    LOAD,
    OPT_STATE,
    PULL,
    PUSH,
    REPLY,
    ServerLoop,
    flatten,
    grad_or_zeros,
    recv_object,
    squared_norm,
    to_bytes,
    unflatten_into,
    wire_dtype,
)
from abyssal.train.strategy import STRATEGIES, load_model_state, optimizer_parameter_names


@dataclass(frozen=True)
class ShardPlan:
    """Which server holds which trainable parameter.

    Attributes:
        names: per server, its parameters' names in model order.
        numels: per server, how many elements its shard holds.
    """

    names: tuple[tuple[str, ...], ...]
    numels: tuple[int, ...]

    @classmethod
    def deal(cls, sizes: Sequence[tuple[str, int]], servers: int) -> ShardPlan:
        """Deal named tensors (``(name, numel)`` in model order) to ``servers`` servers: largest
        first, each to the least loaded server (the lowest index on ties).

        Raises:
            AbyssalError: fewer tensors than servers (a server would hold nothing).

        Example:
            >>> ShardPlan.deal([("a", 6), ("b", 4), ("c", 3)], 2).names
            (('a',), ('b', 'c'))
        """
        if len(sizes) < servers:
            raise AbyssalError(
                f"train.parameter_server.servers={servers}, but the model has only {len(sizes)} "
                "trainable parameter tensor(s): use at most that many servers"
            )
        load, owner = [0] * servers, {}
        for name, numel in sorted(sizes, key=lambda item: -item[1]):  # stable: model order on ties
            server = min(range(servers), key=lambda k: (load[k], k))
            owner[name], load[server] = server, load[server] + numel
        names = tuple(tuple(n for n, _ in sizes if owner[n] == s) for s in range(servers))
        return cls(names, tuple(load))


class ParameterServerStrategy(ProcessGroupStrategy):
    """Workers push gradients to and pull parameters from parameter servers.

    Settings: ``train.parameter_server.servers`` (the last ranks of the launch),
    ``train.parameter_server.staleness`` (0: synchronous), ``train.timeout_s``. Workers train on
    ``cuda:LOCAL_RANK`` (with CUDA) or the CPU; servers always on the CPU; all traffic is gloo.
    A worker's ``rank`` and ``world_size`` count workers only (``is_main`` on rank 0); a server
    has ``trains = False`` and ``rank`` = its index among the servers.

    Raises:
        AbyssalError: not launched by ``torchrun``, no process left to train, or
            ``train.backend=nccl`` (parameters travel through CPU memory).
    """

    name = "parameter_server"
    lockstep = False

    def __init__(self, cfg: TrainConfig, launch: Launch | None = None) -> None:
        launch = launch or Launch.from_env()
        servers = cfg.parameter_server.servers
        if launch is None:
            raise AbyssalError(
                f"train.strategy=parameter_server runs workers and {servers} server process(es): "
                f"{LAUNCH_HINT}, with N > train.parameter_server.servers"
            )
        workers = launch.world_size - servers
        if workers < 1:
            raise AbyssalError(
                f"train.parameter_server.servers={servers} leaves no worker among the "
                f"{launch.world_size} launched process(es): launch at least {servers + 1} "
                f"(--nproc-per-node {servers + 1}) or use fewer servers"
            )
        if cfg.backend == "nccl":
            raise AbyssalError(
                "train.strategy=parameter_server moves parameters and gradients through CPU "
                "memory over gloo: set train.backend=gloo (or auto)"
            )
        self.cfg, self.launch, self.backend = cfg, launch, "gloo"
        self.num_workers, self.num_servers = workers, servers
        self.trains = launch.rank < workers
        self._device = self._choose_device(cfg, launch) if self.trains else torch.device("cpu")
        if self._device.type == "cuda":
            torch.cuda.set_device(self._device)
        timeout = datetime.timedelta(seconds=cfg.timeout_s)
        if not dist.is_initialized():
            dist.init_process_group("gloo", timeout=timeout)
        # every rank creates every group, in the same order
        self.group = dist.new_group(list(range(workers)), timeout=timeout)
        server_ranks = list(range(workers, launch.world_size))
        self._server_group = dist.new_group(server_ranks, timeout=timeout) if servers > 1 else None
        self.rank = launch.rank if self.trains else launch.rank - workers
        self.world_size = workers
        self.is_main = launch.rank == 0
        self.shard = Shard(self.rank, workers) if self.trains else Shard(0, 1)
        self._plan: ShardPlan | None = None
        self._params: list[list[nn.Parameter]] = []
        self._replies: list[torch.Tensor] = []
        self._clock = 0
        self._closed = False

    @staticmethod
    def _choose_device(cfg: TrainConfig, launch: Launch) -> torch.device:
        # torchrun numbers ranks host by host, so the servers are the last local ranks of the last
        # host(s); only this host's workers need a GPU each
        first = launch.rank - launch.local_rank
        workers = launch.world_size - cfg.parameter_server.servers
        here = max(1, min(launch.local_world_size, workers - first))
        return choose_device(cfg.device, replace(launch, world_size=workers, local_world_size=here))

    # -- where the model lives ---------------------------------------------------------------

    def setup(self, model: nn.Module, device: torch.device) -> nn.Module:
        """``model`` on ``device``, equal to the servers' parameters: the main worker sends its
        (freshly initialised) parameters to the servers, the others pull them."""
        self._worker_only("setup")
        model = model.to(device)
        named = trainable_parameters(model, self.cfg.trainable, self.cfg.frozen)
        self._plan = ShardPlan.deal([(n, p.numel()) for n, p in named], self.num_servers)
        by_name = dict(named)
        self._params = [[by_name[n] for n in names] for names in self._plan.names]
        self._replies = [torch.empty(n, dtype=wire_dtype(ps)) for n, ps in self._shards()]
        if self.is_main:
            flats = [flatten([p.detach() for p in ps]).cpu() for ps in self._params]
            self._exchange(INIT, flats, reply=False)
        else:
            self._copy_in(self._exchange(PULL, reply=True))
        return model

    def unwrap(self, model: nn.Module) -> nn.Module:
        """``model`` itself (nothing wraps it)."""
        return model

    def accumulate(self, model: nn.Module, sync: bool) -> contextlib.AbstractContextManager[None]:
        """Nothing to suspend: gradients add up locally and are pushed at :meth:`step`."""
        return contextlib.nullcontext()

    def step(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scaler: torch.amp.GradScaler,
        clip_grad_norm: float | None,
    ) -> None:
        """Push the gradients (clipped here when ``staleness > 0``, by the servers on the average
        when 0), wait for fresh parameters, copy them into ``model``, zero the gradients.

        The optimizer is only read for its groups' learning rates; its state lives on the
        servers. A non-finite gradient (fp16 overflow) is pushed flagged, and the servers skip
        that update, as ``GradScaler.step`` would.
        """
        self._worker_only("step")
        if scaler.is_enabled():
            scaler.unscale_(optimizer)
        flats = [flatten([grad_or_zeros(p) for p in ps]) for ps in self._params]
        norm = math.sqrt(sum(float(squared_norm(f)) for f in flats))
        finite = math.isfinite(norm)
        if finite and clip_grad_norm is not None and self.cfg.parameter_server.staleness > 0:
            coef = clip_grad_norm / (norm + 1e-6)  # clip_grad_norm_'s rule
            if coef < 1.0:
                flats = [f.mul_(coef) for f in flats]
        lrs = [float(g["lr"]) for g in optimizer.param_groups]
        fresh = self._exchange(PUSH, [f.cpu() for f in flats], reply=True, lrs=lrs, finite=finite)
        self._copy_in(fresh)
        self._clock += 1
        if scaler.is_enabled():
            scaler.update()
        optimizer.zero_grad(set_to_none=True)

    # -- state dicts -------------------------------------------------------------------------

    def model_state(self, model: nn.Module) -> dict[str, torch.Tensor] | None:
        """The servers' parameters (and this worker's buffers and frozen parameters) as a full
        ``state_dict`` on the CPU, on the main worker; ``None`` on the others."""
        self._worker_only("model_state")
        if not self.is_main:
            return None
        self._copy_in(self._exchange(PULL, reply=True))
        return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}

    def optimizer_state(
        self, model: nn.Module, optimizer: torch.optim.Optimizer
    ) -> dict[str, Any] | None:
        """The servers' optimizer state in ``Optimizer.state_dict()`` form (state keyed by the
        parameter's index in ``optimizer``; this worker's parameter groups), on the main worker."""
        self._worker_only("optimizer_state")
        if not self.is_main:
            return None
        by_name: dict[str, Any] = {}
        for server in range(self.num_servers):
            self._wait(self._send_header(server, OPT_STATE))
            by_name.update(recv_object(self._server_rank(server), self._fail))
        names = optimizer_parameter_names(model, optimizer)
        state = {i: by_name[n] for i, n in enumerate(names) if n in by_name}
        return {"state": state, "param_groups": optimizer.state_dict()["param_groups"]}

    def load_state(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None,
        model_state: Mapping[str, torch.Tensor],
        optimizer_state: Mapping[str, Any] | None,
    ) -> None:
        """Load full states into this worker's model (and its optimizer's group settings); the
        main worker sends each server its shard of both. Call on every worker."""
        self._worker_only("load_state")
        load_model_state(model, model_state)
        groups = None
        if optimizer is not None and optimizer_state is not None:
            groups = [
                {k: v for k, v in g.items() if k != "params"}
                for g in optimizer_state["param_groups"]
            ]
            if len(groups) != len(optimizer.param_groups):
                raise AbyssalError(
                    f"the checkpoint's optimizer has {len(groups)} parameter groups, this one "
                    f"{len(optimizer.param_groups)} (the trainable set or weight decay changed)"
                )
            for group, saved in zip(optimizer.param_groups, groups, strict=True):
                group.update(saved)
        if self.is_main:
            self._send_states(model, optimizer, model_state, optimizer_state, groups)
        self.barrier()  # nobody pushes before the servers hold the loaded state

    def _send_states(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None,
        model_state: Mapping[str, torch.Tensor],
        optimizer_state: Mapping[str, Any] | None,
        groups: list[dict[str, Any]] | None,
    ) -> None:
        by_name: dict[str, Any] = {}
        if groups is not None and optimizer is not None and optimizer_state is not None:
            names = optimizer_parameter_names(model, optimizer)
            by_name = {names[int(i)]: s for i, s in optimizer_state["state"].items()}
        for server, names in enumerate(self._require_plan().names):
            payload = {
                "params": {n: model_state[n].detach().cpu() for n in names},
                "state": {n: by_name[n] for n in names if n in by_name},
                "groups": groups,
            }
            data, dst = to_bytes(payload), self._server_rank(server)
            works = self._send_header(server, LOAD, size=data.numel())
            works.append(dist.isend(data, dst, tag=BODY))
            ack = torch.zeros(1)
            works.append(dist.irecv(ack, dst, tag=REPLY))
            self._wait(works)

    # -- serving -----------------------------------------------------------------------------

    def serve(self, build_model: Callable[[], nn.Module], cfg: TrainConfig) -> None:
        """On a server: build the model, keep this server's shard (and the optimizer over it),
        answer the workers until every one has finished, then return."""
        if self.trains:
            raise AbyssalError(f"rank {self.launch.rank} is a worker: it trains, it does not serve")
        model = build_model().to("cpu")
        if any(p.is_meta for p in model.parameters()):
            raise AbyssalError("parameter_server: the servers need a materialised model (not meta)")
        named = trainable_parameters(model, cfg.trainable, cfg.frozen)
        optimizer = build_optimizer(model, cfg)
        plan = ShardPlan.deal([(n, p.numel()) for n, p in named], self.num_servers)
        keep = set(plan.names[self.rank])
        for name, param in named:  # a server holds its shard only
            if name not in keep:
                param.data = torch.empty(0, dtype=param.dtype)
        params = dict(named)
        server = ServerLoop(
            {n: params[n] for n in plan.names[self.rank]},
            optimizer,
            optimizer_parameter_names(model, optimizer),
            workers=self.num_workers,
            staleness=cfg.parameter_server.staleness,
            clip=cfg.clip_grad_norm,
            group=self._server_group,
            timeout_s=cfg.timeout_s,
        )
        server.run()

    # -- workers' collectives and leaving ------------------------------------------------------

    def gather(self, outputs: Mapping[str, Any]) -> dict[str, Any]:
        """Every worker's outputs, concatenated in rank order (workers only)."""
        self._worker_only("gather")
        return super().gather(outputs)

    def mean(self, value: float) -> float:
        """The mean of ``value`` over the workers."""
        self._worker_only("mean")
        return super().mean(value)

    def agree(self, value: int, op: Literal["min", "max", "sum"]) -> int:
        """``value`` reduced over the workers."""
        self._worker_only("agree")
        return super().agree(value, op)

    def all_gather(self, value: Any) -> list[Any]:
        """Every worker's ``value``, in rank order."""
        self._worker_only("all_gather")
        return super().all_gather(value)

    def barrier(self) -> None:
        """Wait for every worker (the servers do not take part)."""
        self._worker_only("barrier")
        dist.barrier(group=self.group)

    def close(self, ok: bool = True) -> None:
        """Leave the process group. When ``ok``, a worker first tells the servers it is done,
        and every process waits for the others (gloo can abort if a peer leaves first); after an
        error (``ok=False``), leave at once: the servers then fail on ``train.timeout_s`` rather
        than carry on without this worker."""
        if self._closed or not dist.is_initialized():
            return
        self._closed = True
        with contextlib.suppress(Exception):  # a failed peer must not hide the first error
            if ok and self.trains:
                for server in range(self.num_servers):
                    self._wait(self._send_header(server, DONE))
        leave_process_group(barrier=ok)

    # -- messages ----------------------------------------------------------------------------

    def _worker_only(self, what: str) -> None:
        if not self.trains:
            raise AbyssalError(
                f"{what}() is for workers; rank {self.launch.rank} is a parameter server "
                "(call serve())"
            )

    def _require_plan(self) -> ShardPlan:
        if self._plan is None:
            raise AbyssalError("parameter_server: call setup(model, device) first")
        return self._plan

    def _shards(self) -> list[tuple[int, list[nn.Parameter]]]:
        return list(zip(self._require_plan().numels, self._params, strict=True))

    def _server_rank(self, server: int) -> int:
        return self.num_workers + server

    def _fail(self, error: Exception) -> AbyssalError:
        return AbyssalError(
            f"parameter_server: worker {self.rank} got no answer within train.timeout_s="
            f"{self.cfg.timeout_s:g}s (a process died or hangs, or workers took different numbers "
            f"of steps between evaluations): {error}"
        )

    def _send_header(
        self,
        server: int,
        kind: int,
        *,
        size: int = 0,
        lrs: Sequence[float] = (),
        finite: bool = True,
    ) -> list[Any]:
        header = torch.tensor(
            [kind, self.rank, self._clock, float(finite), len(lrs), size], dtype=torch.float64
        )
        works = [dist.isend(header, self._server_rank(server), tag=HEADER)]
        if lrs:
            lr = torch.tensor(list(lrs), dtype=torch.float64)
            works.append(dist.isend(lr, self._server_rank(server), tag=BODY))
        return works

    def _exchange(
        self,
        kind: int,
        bodies: Sequence[torch.Tensor] = (),
        *,
        reply: bool,
        lrs: Sequence[float] = (),
        finite: bool = True,
    ) -> list[torch.Tensor]:
        """Send ``kind`` (with one body per server) to every server; the replies, if any."""
        works: list[Any] = []
        for server, (numel, _) in enumerate(self._shards()):
            dst = self._server_rank(server)
            works += self._send_header(server, kind, size=numel, lrs=lrs, finite=finite)
            if bodies:
                works.append(dist.isend(bodies[server], dst, tag=BODY))
            if reply:
                works.append(dist.irecv(self._replies[server], dst, tag=REPLY))
        self._wait(works)
        return self._replies

    def _wait(self, works: Sequence[Any]) -> None:
        try:
            for work in works:
                work.wait()
        except RuntimeError as error:
            raise self._fail(error) from error

    def _copy_in(self, flats: Sequence[torch.Tensor]) -> None:
        with torch.no_grad():
            for flat, params in zip(flats, self._params, strict=True):
                unflatten_into(flat.to(params[0].device), params)


STRATEGIES.add("parameter_server", ParameterServerStrategy)
