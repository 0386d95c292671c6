"""A small regression task and a script that trains it under any strategy, for the distributed
tests: ``python -m torch.distributed.run --nproc-per-node N tests/integration/distributed_toy.py
SPEC.json`` (or plain ``python`` for one process). The spec says the strategy, steps, global batch,
where to write the final parameters, and optionally a step at which to stop or to kill a rank."""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from abyssal.contracts.task import Shard
from abyssal.core.devices import derive_seed

ITEMS = 96
FEATURES = 6


class Rows:
    """A batch: inputs and targets, with a length (items) so resumes can count them."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)


class ToyTask:
    """Noisy linear regression through a small MLP; ``batch`` is the global batch."""

    def __init__(self, batch: int, world_size: int, hidden: int = 16) -> None:
        rng = np.random.default_rng(0)
        self.x = torch.from_numpy(rng.normal(size=(ITEMS, FEATURES)).astype(np.float32))
        w = rng.normal(size=(FEATURES,)).astype(np.float32)
        noise = 0.1 * rng.normal(size=ITEMS).astype(np.float32)
        self.y = torch.from_numpy(self.x.numpy() @ w + noise)
        self.per_rank = batch // world_size
        self.hidden = hidden

    def build_model(self) -> nn.Module:
        return nn.Sequential(nn.Linear(FEATURES, self.hidden), nn.Tanh(), nn.Linear(self.hidden, 1))

    def train_batches(self, epoch: int, shard: Shard) -> list[Rows]:
        rows = shard.take(ITEMS, seed=derive_seed(0, epoch))
        parts = [rows[i : i + self.per_rank] for i in range(0, len(rows), self.per_rank)]
        return [Rows(self.x[p], self.y[p]) for p in parts]

    def move_batch(self, batch: Rows, device: Any) -> Rows:
        return Rows(batch.x.to(device), batch.y.to(device))

    def training_loss(self, model: nn.Module, batch: Rows) -> torch.Tensor:
        return nn.functional.mse_loss(model(batch.x).squeeze(-1), batch.y)

    def val_batches(self, shard: Shard) -> list[Rows]:
        rows = shard.take(32)
        return [Rows(self.x[rows], self.y[rows])]

    def validation_step(self, model: nn.Module, batch: Rows) -> dict[str, torch.Tensor]:
        return {"pred": model(batch.x).squeeze(-1), "y": batch.y}

    def validation_metrics(self, outputs: Mapping[str, np.ndarray]) -> dict[str, float]:
        return {"val_loss": float(np.mean((outputs["pred"] - outputs["y"]) ** 2))}


def main(spec: dict[str, Any]) -> None:
    from abyssal.contracts.train_config import TrainConfig
    from abyssal.core.config import config_from_dict
    from abyssal.train.api import fit_task

    torch.set_num_threads(1)
    cfg = config_from_dict(TrainConfig, spec["train"], where="train")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    servers = cfg.parameter_server.servers if cfg.strategy == "parameter_server" else 0
    task = ToyTask(spec["batch"], world - servers, spec.get("hidden", 16))
    rank = int(os.environ.get("RANK", "0"))

    def on_step(state: Any) -> None:
        if state.global_step == spec.get("exit_at"):
            os._exit(3)  # every process stops, as after a crash of the whole job
        if state.global_step == spec.get("kill_at") and rank == spec.get("kill_rank", 1):
            os.kill(os.getpid(), signal.SIGKILL)

    fit = fit_task(
        task,
        cfg,
        metric="val_loss",
        mode="min",
        home=spec["home"],
        on_step=on_step,
        resume=spec.get("resume"),
    )
    if fit is not None and rank == 0:
        params = {k: v.detach().cpu().flatten().tolist() for k, v in fit.model.state_dict().items()}
        with open(spec["out"], "w") as f:
            json.dump({"params": params, "history": fit.history}, f)


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        main(json.load(f))
