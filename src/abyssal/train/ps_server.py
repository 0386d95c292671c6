"""The parameter server's side of ``train.strategy=parameter_server``: the loop a server process
runs (:class:`ServerLoop`), and the point-to-point wire format it shares with the workers.

Messages travel over gloo ``send``/``recv`` in the job's process group: a float64 header
``[kind, worker, clock, finite, number of learning rates, payload size]`` with tag ``HEADER``,
then the payload with tag ``BODY``; replies use tag ``REPLY``. Parameters and gradients travel
as one flat CPU tensor per server; optimizer states as ``torch.save`` bytes read back with
``weights_only=True`` (never arbitrary pickles). See :mod:`abyssal.train.parameter_server`.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence
from functools import reduce
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from abyssal.core.errors import AbyssalError

# Message kinds (header[0]) and tags. A header is float64: [kind, worker, clock, finite, lrs, size].
INIT, PULL, PUSH, OPT_STATE, LOAD, DONE = range(1, 7)
HEADER, BODY, REPLY = 1, 2, 3
HEADER_LEN = 6


class ServerLoop:
    """One server's loop: answer workers' messages, one at a time, until all are done."""

    def __init__(
        self,
        shard: dict[str, nn.Parameter],
        optimizer: torch.optim.Optimizer,
        optimizer_names: list[str],
        *,
        workers: int,
        staleness: int,
        clip: float | None,
        group: Any,
        timeout_s: float,
    ) -> None:
        self.shard, self.params = shard, list(shard.values())  # model order
        self.optimizer, self.names = optimizer, optimizer_names
        self.numel = sum(p.numel() for p in self.params)
        self.dtype = wire_dtype(self.params)
        self.staleness, self.clip, self.group, self.timeout_s = staleness, clip, group, timeout_s
        self.clock = [0] * workers
        self.active = set(range(workers))
        self.waiting: set[int] = set()  # pushed, not yet answered
        self.queued: list[int] = []  # pulled before the first parameters arrived
        self.round: dict[int, tuple[torch.Tensor, bool, list[float]]] = {}  # staleness 0
        self.ready = False
        self._flat: torch.Tensor | None = None

    def run(self) -> None:
        """Serve until every worker has said it is done."""
        while self.active:
            header = torch.zeros(HEADER_LEN, dtype=torch.float64)
            src = self._recv_from_any(header)
            kind, worker, clock, finite, n_lr, size = (int(v) for v in header.tolist())
            if worker != src or src not in self.active:
                raise AbyssalError(f"parameter server: unexpected message from rank {src}")
            lrs = self._recv(torch.zeros(n_lr, dtype=torch.float64), src, BODY) if n_lr else None
            self._handle(kind, src, clock, bool(finite), lrs, size)

    def _handle(self, kind: int, src: int, clock: int, finite: bool, lrs: Any, size: int) -> None:
        if kind in (INIT, PUSH) and size != self.numel:
            raise AbyssalError(
                f"parameter server: worker {src} sent {size} values, this server holds "
                f"{self.numel}: workers and servers must build the same model"
            )
        if kind == INIT:
            self._recv_flat(src, into_params=True)
            self._set_ready()
        elif kind == PULL and not self.ready:
            self.queued.append(src)
        elif kind == PULL:
            self._send_params(src)
        elif kind == PUSH:
            if clock != self.clock[src]:
                raise AbyssalError(
                    f"parameter server: worker {src} pushed step {clock} out of turn"
                )
            self._push(src, self._recv_flat(src), finite, [float(v) for v in lrs.tolist()])
        elif kind == OPT_STATE:
            send_object(self._optimizer_shard(), src)
        elif kind == LOAD:
            self._load(from_bytes(self._recv_bytes(src, size)))
            dist.send(torch.zeros(1), src, tag=REPLY)
            self._set_ready()
        elif kind == DONE:
            self.active.discard(src)
            self._settle()
        else:
            raise AbyssalError(f"parameter server: unknown message kind {kind} from rank {src}")

    def _push(self, src: int, grad: torch.Tensor, finite: bool, lrs: list[float]) -> None:
        self.clock[src] += 1
        self.waiting.add(src)
        if self.staleness > 0:  # asynchronous: every push is one update
            self._apply(grad, finite, lrs, clip=False)
        else:
            self.round[src] = (grad, finite, lrs)
        self._settle()

    def _settle(self) -> None:
        """Apply a complete synchronous round; answer every worker the staleness bound allows."""
        if self.round and all(w in self.round for w in self.active):
            order = sorted(self.round)  # worker order: the sum does not depend on arrival
            total = self.round[order[0]][0].clone()
            for w in order[1:]:
                total.add_(self.round[w][0])
            finite = all(self.round[w][1] for w in order)
            self._apply(total.div_(len(order)), finite, self.round[order[0]][2], clip=True)
            self.round.clear()
        slowest = min((self.clock[w] for w in self.active), default=0)
        for worker in sorted(self.waiting):
            if self.clock[worker] - slowest <= self.staleness:
                self.waiting.discard(worker)
                self._send_params(worker)

    def _apply(self, grad: torch.Tensor, finite: bool, lrs: list[float], *, clip: bool) -> None:
        """One optimizer step with ``grad`` (this server's flat shard of the gradient)."""
        if clip and self.clip is not None:  # the global norm, over every server's shard
            norm_sq = squared_norm(grad).reshape(1)
            if self.group is not None:
                dist.all_reduce(norm_sq, group=self.group)
            norm = float(norm_sq.sqrt())
            finite = finite and math.isfinite(norm)
            coef = self.clip / (norm + 1e-6)
            if finite and coef < 1.0:
                grad.mul_(coef)
        if not finite:
            return  # skipped, as GradScaler skips a step with inf/nan gradients
        if len(lrs) != len(self.optimizer.param_groups):
            raise AbyssalError(
                f"parameter server: a worker's optimizer has {len(lrs)} parameter groups, this "
                f"server's {len(self.optimizer.param_groups)}"
            )
        for group, lr in zip(self.optimizer.param_groups, lrs, strict=True):
            group["lr"] = lr
        offset = 0
        for p in self.params:
            p.grad = grad[offset : offset + p.numel()].view(p.shape).to(p.dtype)
            offset += p.numel()
        self.optimizer.step()
        for p in self.params:
            p.grad = None
        self._flat = None

    def _send_params(self, worker: int) -> None:
        if self._flat is None:
            self._flat = flatten([p.detach() for p in self.params])
        dist.send(self._flat, worker, tag=REPLY)

    def _set_ready(self) -> None:
        self.ready = True
        for worker in self.queued:
            self._send_params(worker)
        self.queued.clear()

    def _optimizer_shard(self) -> dict[str, Any]:
        state = self.optimizer.state_dict()["state"]
        return {self.names[i]: s for i, s in state.items() if self.names[i] in self.shard}

    def _load(self, payload: dict[str, Any]) -> None:
        with torch.no_grad():
            for name, value in payload["params"].items():
                self.shard[name].copy_(value)
        self._flat = None
        if payload["groups"] is None:
            return
        own_groups = self.optimizer.state_dict()["param_groups"]
        index = {n: i for i, n in enumerate(self.names)}
        self.optimizer.load_state_dict(
            {
                "state": {index[n]: s for n, s in payload["state"].items()},
                "param_groups": [
                    {**saved, "params": own["params"]}
                    for saved, own in zip(payload["groups"], own_groups, strict=True)
                ],
            }
        )

    def _recv_from_any(self, header: torch.Tensor) -> int:
        try:
            return dist.recv(header, None, tag=HEADER)
        except RuntimeError as error:
            raise self._fail(error) from error

    def _recv(self, tensor: torch.Tensor, src: int, tag: int) -> torch.Tensor:
        try:
            dist.recv(tensor, src, tag=tag)
        except RuntimeError as error:
            raise self._fail(error) from error
        return tensor

    def _fail(self, error: Exception) -> AbyssalError:
        return AbyssalError(
            f"parameter server: no message from the workers within train.timeout_s="
            f"{self.timeout_s:g}s (a worker died or hangs): {error}"
        )

    def _recv_flat(self, src: int, *, into_params: bool = False) -> torch.Tensor:
        flat = self._recv(torch.empty(self.numel, dtype=self.dtype), src, BODY)
        if into_params:
            with torch.no_grad():
                unflatten_into(flat, self.params)
            self._flat = None
        return flat

    def _recv_bytes(self, src: int, size: int) -> torch.Tensor:
        return self._recv(torch.empty(size, dtype=torch.uint8), src, BODY)


def grad_or_zeros(param: nn.Parameter) -> torch.Tensor:
    return param.grad if param.grad is not None else torch.zeros_like(param)


def squared_norm(flat: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(flat, dtype=torch.float64).square()


def wire_dtype(params: Sequence[torch.Tensor]) -> torch.dtype:
    """The dtype a shard travels in: wide enough for every parameter in it."""
    return reduce(torch.promote_types, (p.dtype for p in params))


def flatten(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    dtype = wire_dtype(tensors)
    return torch.cat([t.reshape(-1).to(dtype) for t in tensors])  # (numel,)


def unflatten_into(flat: torch.Tensor, params: Sequence[torch.Tensor]) -> None:
    offset = 0
    for p in params:
        p.copy_(flat[offset : offset + p.numel()].view(p.shape))
        offset += p.numel()


def to_bytes(obj: Any) -> torch.Tensor:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return torch.frombuffer(bytearray(buffer.getvalue()), dtype=torch.uint8)


def from_bytes(data: torch.Tensor) -> Any:
    return torch.load(io.BytesIO(data.numpy().tobytes()), weights_only=True)


def send_object(obj: Any, dst: int) -> None:
    data = to_bytes(obj)
    dist.send(torch.tensor([data.numel()], dtype=torch.int64), dst, tag=REPLY)
    dist.send(data, dst, tag=REPLY)


def recv_object(src: int, fail: Callable[[Exception], Exception]) -> Any:
    try:
        size = torch.zeros(1, dtype=torch.int64)
        dist.recv(size, src, tag=REPLY)
        data = torch.empty(int(size), dtype=torch.uint8)
        dist.recv(data, src, tag=REPLY)
    except RuntimeError as error:
        raise fail(error) from error
    return from_bytes(data)
