"""Differentially private training (train.privacy): config, accounting, refusals, DP-SGD on a toy
task, per-example clipping, and a resumed private run."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from opacus.accountants import RDPAccountant
from torch import nn

from abyssal.contracts.task import Shard
from abyssal.contracts.train_config import PrivacyConfig, TrainConfig
from abyssal.core.config import load_config
from abyssal.core.errors import ConfigError
from abyssal.core.runs import Run
from abyssal.solutions import get_solution
from abyssal.train.privacy import (
    PrivacyPlan,
    PrivateStrategy,
    count_examples,
    layer_problems,
    plan_privacy,
    private_optimizer,
    probe_per_example,
    refuse_unsupported,
)
from abyssal.train.strategy import LocalStrategy
from abyssal.train.trainer import Trainer

WEIGHTS = torch.tensor([1.0, -2.0, 0.5, 1.5])


@dataclass
class Rows:
    """A batch of examples that tells its size."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)

    def to(self, device: torch.device | str) -> Rows:
        return Rows(self.x.to(device), self.y.to(device))


class PrivateToyTask:
    """Two linearly separable classes in 4-D; ``batches`` shuffled batches of ``batch`` rows."""

    def __init__(self, batches: int = 8, batch: int = 64) -> None:
        g = torch.Generator().manual_seed(7)
        self.x = torch.randn(batches * batch, 4, generator=g)
        self.y = (self.x @ WEIGHTS > 0).long()
        self.xv = torch.randn(256, 4, generator=g)
        self.yv = (self.xv @ WEIGHTS > 0).long()
        self.batches, self.batch = batches, batch

    def build_model(self) -> nn.Module:
        return nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2))

    def train_batches(self, epoch: int, shard: Shard):
        perm = torch.randperm(len(self.x), generator=torch.Generator().manual_seed(epoch))
        parts = perm.split(self.batch)
        return [Rows(self.x[i], self.y[i]) for i in parts]

    def move_batch(self, batch: Rows, device):
        return batch.to(device)

    def training_loss(self, model, batch: Rows):
        return F.cross_entropy(model(batch.x), batch.y)

    def val_batches(self, shard: Shard):
        return [Rows(self.xv, self.yv)]

    def validation_step(self, model, batch: Rows):
        return {"logits": model(batch.x).float(), "label": batch.y}

    def validation_metrics(self, outputs) -> dict[str, float]:
        logits = torch.from_numpy(outputs["logits"])
        label = torch.from_numpy(outputs["label"])
        return {"accuracy": (logits.argmax(1) == label).float().mean().item()}


def _cfg(**privacy) -> TrainConfig:
    return TrainConfig(
        epochs=6,
        lr=0.5,
        optimizer="sgd",
        momentum=0.0,
        weight_decay=0.0,
        device="cpu",
        progress=False,
        patience=0,
        privacy=PrivacyConfig(enabled=True, **privacy),
    )


# -- config --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value", "words"),
    [
        ("noise_multiplier", 0.0, "train.privacy.noise_multiplier must be > 0"),
        ("max_grad_norm", -1.0, "train.privacy.max_grad_norm must be > 0"),
        ("delta", 1.5, "train.privacy.delta must be in (0, 1)"),
        ("target_epsilon", 0.0, "train.privacy.target_epsilon must be"),
        ("target_epsilon", math.inf, "train.privacy.target_epsilon must be"),
        ("accountant", "gdp", "train.privacy.accountant must be rdp or prv"),
    ],
)
def test_config_refuses_bad_values_by_name(key: str, value, words: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(words)):
        PrivacyConfig(**{key: value})


def test_config_section_from_overrides() -> None:
    assert TrainConfig().privacy.enabled is False and TrainConfig().privacy.delta is None
    cfg = load_config(
        get_solution("tabular").config_cls,
        None,
        ["train.privacy.enabled=true", "train.privacy.delta=1e-5", "train.privacy.accountant=prv"],
    )
    p = cfg.train.privacy
    assert (p.enabled, p.delta, p.accountant, p.noise_multiplier) == (True, 1e-5, "prv", 1.0)


# -- accounting ----------------------------------------------------------------------------------


def test_epsilon_grows_with_steps_and_falls_with_noise() -> None:
    plan = PrivacyPlan(1.0, 1.0, 1e-5, train_items=6000, batches_per_epoch=100)
    eps = [plan.epsilon(n) for n in (0, 10, 100, 1000)]
    assert eps[0] == 0 and eps[1] < eps[2] < eps[3] and all(map(math.isfinite, eps))
    noisier = PrivacyPlan(2.0, 1.0, 1e-5, train_items=6000, batches_per_epoch=100)
    assert noisier.epsilon(1000) < plan.epsilon(1000)
    looser = PrivacyPlan(1.0, 1.0, 1e-3, train_items=6000, batches_per_epoch=100)
    assert looser.epsilon(1000) < plan.epsilon(1000)
    # Opacus' RDP accountant stepped 1000 times at this noise and rate agrees (our orders are a
    # superset of its own, so ours is never larger)
    acc = RDPAccountant()
    for _ in range(1000):
        acc.step(noise_multiplier=1.0, sample_rate=0.01)
    theirs = acc.get_epsilon(delta=1e-5)
    assert plan.epsilon(1000) <= theirs + 1e-9 and plan.epsilon(1000) == pytest.approx(theirs, 0.05)
    prv = PrivacyPlan(1.0, 1.0, 1e-5, 6000, 100, accountant="prv")
    assert 0 < prv.epsilon(1000) <= theirs * 1.05
    assert plan.metrics(1000) == {
        "epsilon": plan.epsilon(1000),
        "delta": 1e-5,
        "noise_multiplier": 1.0,
        "max_grad_norm": 1.0,
    }


def test_target_epsilon_chooses_the_noise_for_the_planned_steps() -> None:
    task = PrivateToyTask()
    plan = plan_privacy(_cfg(target_epsilon=2.0, delta=1e-4), task)
    assert plan.planned_steps == 6 * 8 and plan.sample_rate == pytest.approx(1 / 8)
    assert plan.train_items == 512 and plan.expected_batch_size == 64
    assert plan.epsilon(plan.planned_steps) == pytest.approx(2.0, abs=0.05)
    assert plan.epsilon(plan.planned_steps) <= 2.0 + 1e-9
    fewer = plan_privacy(_cfg(target_epsilon=2.0, delta=1e-4), task, planned_steps=10)
    assert fewer.noise_multiplier < plan.noise_multiplier
    default = plan_privacy(_cfg(), task)
    assert default.delta == pytest.approx(1 / 512) and default.noise_multiplier == 1.0
    with pytest.raises(ConfigError, match="target_epsilon=1e-09 cannot be reached"):
        plan_privacy(_cfg(target_epsilon=1e-9), task)


# -- refusals ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "strategy", "words"),
    [
        ({}, "ddp", "train.strategy=local only"),
        ({"grad_accum_steps": 2}, "local", "train.grad_accum_steps=1"),
        ({"precision": "bf16"}, "local", "not train.precision=bf16"),
        ({"precision": "fp16"}, "local", "not train.precision=fp16"),
        ({"compile": True}, "local", "train.compile=true"),
    ],
)
def test_settings_that_cannot_be_private_are_refused(change, strategy, words) -> None:
    cfg = TrainConfig(privacy=PrivacyConfig(enabled=True), **change)
    with pytest.raises(ConfigError, match=words):
        refuse_unsupported(cfg, strategy, 2 if strategy != "local" else 1)


def test_batches_without_a_size_are_refused() -> None:
    class Graph:  # one batch: the whole graph, with no count of examples
        def __init__(self, x, y) -> None:
            self.x, self.y = x, y

    class GraphTask(PrivateToyTask):
        def train_batches(self, epoch, shard):
            return [Graph(self.x, self.y)]

    with pytest.raises(ConfigError, match="do not say how many examples they hold"):
        count_examples(GraphTask(), Shard())

    class Declared(PrivateToyTask):
        per_example_batches = False

    with pytest.raises(ConfigError, match="per_example_batches = False"):
        count_examples(Declared(), Shard())
    assert count_examples(PrivateToyTask(), Shard())[:2] == (512, 8)


def test_batches_whose_len_is_not_their_examples_are_refused() -> None:
    class TupleTask(PrivateToyTask):  # len((x, y)) == 2, not the 64 rows
        def train_batches(self, epoch, shard):
            return [(b.x, b.y) for b in super().train_batches(epoch, shard)]

        def move_batch(self, batch, device):
            return batch

        def training_loss(self, model, batch):
            return F.cross_entropy(model(batch[0]), batch[1])

    task = TupleTask()
    with pytest.raises(
        ConfigError, match=r"holds 2 examples \(len\) and its per-example gradients"
    ):
        plan_privacy(_cfg(), task)


def test_unsupported_layers_are_named() -> None:
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.LSTM(8, 8))
    problems = layer_problems(model)
    assert problems[0].startswith("1 (BatchNorm1d): batch normalisation mixes the examples")
    assert problems[1].startswith("2 (LSTM): ")

    class NormTask(PrivateToyTask):
        def build_model(self):
            return nn.Sequential(nn.Linear(4, 16), nn.BatchNorm1d(16), nn.Linear(16, 2))

    with pytest.raises(ConfigError, match=r"1 \(BatchNorm1d\).*ModuleValidator.fix"):
        plan_privacy(_cfg(), NormTask())
    assert layer_problems(nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8))) == []


def test_parameters_without_per_example_gradients_are_named() -> None:
    class Unused(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.used, self.spare = nn.Linear(4, 2), nn.Linear(4, 2)

        def forward(self, x):
            return self.used(x)

    task = PrivateToyTask()
    batch = task.train_batches(0, Shard())[0]
    with pytest.raises(ConfigError, match=re.escape("spare.weight, spare.bias; freeze them")):
        probe_per_example(task, Unused(), batch)


# -- DP-SGD --------------------------------------------------------------------------------------


def test_private_training_learns_and_reports_epsilon(tmp_path, capsys) -> None:
    task = PrivateToyTask()
    cfg = _cfg(noise_multiplier=0.8, max_grad_norm=1.0)
    run = Run.create("train", "toy", cfg, root=tmp_path)
    trainer = Trainer(task, cfg, run, metric="accuracy", strategy=LocalStrategy(cfg))
    fit = trainer.fit()
    assert isinstance(trainer.strategy, PrivateStrategy)
    assert fit.best_metrics["accuracy"] > 0.8
    eps = [row["epsilon"] for row in fit.history]
    assert len(eps) == 6 and all(math.isfinite(e) and e > 0 for e in eps)
    assert eps == sorted(eps) and eps[0] < eps[-1]
    plan = trainer.privacy
    assert eps[-1] == pytest.approx(plan.epsilon(48))
    assert fit.privacy == {
        "epsilon": pytest.approx(eps[-1]),
        "delta": pytest.approx(1 / 512),
        "noise_multiplier": 0.8,
        "max_grad_norm": 1.0,
    }
    # the best metrics carry the epsilon of every step, also when the best came earlier
    assert fit.best_metrics["epsilon"] == fit.privacy["epsilon"]
    assert Run.open(run.id, root=tmp_path).info["metrics"]["epsilon"] == fit.privacy["epsilon"]
    assert [r["epsilon"] for r in run.metrics_history()] == eps
    assert "differential privacy: epsilon=" in capsys.readouterr().out
    assert "DP-SGD: noise_multiplier=0.8" in (run.path / "log.txt").read_text()
    # the result is a plain model with its per-example hooks removed
    assert type(fit.model) is nn.Sequential
    assert list(fit.model.state_dict()) == list(task.build_model().state_dict())
    fit.model.train()
    F.cross_entropy(fit.model(task.x[:8]), task.y[:8]).backward()
    assert all(getattr(p, "grad_sample", None) is None for p in fit.model.parameters())


def test_more_noise_spends_less_epsilon(tmp_path) -> None:
    spent = []
    for sigma in (0.7, 2.0):
        cfg = _cfg(noise_multiplier=sigma)
        cfg.epochs = 2
        run = Run.create("train", "toy", cfg, root=tmp_path)
        spent.append(Trainer(PrivateToyTask(), cfg, run, metric="accuracy").fit().privacy)
    assert spent[1]["epsilon"] < spent[0]["epsilon"]


def test_per_example_clipping_bounds_each_step() -> None:
    """Without noise, a DP-SGD step of plain SGD moves the parameters by at most
    lr * max_grad_norm: the mean of gradients each clipped to max_grad_norm is no longer."""
    torch.manual_seed(0)
    task = PrivateToyTask(batches=1, batch=32)
    batch = task.train_batches(0, Shard())[0]
    clip, lr = 1e-3, 0.5
    plan = PrivacyPlan(0.0, clip, 1e-5, train_items=32, batches_per_epoch=1)
    strategy = PrivateStrategy(LocalStrategy(), plan)
    model = strategy.setup(task.build_model(), torch.device("cpu"))
    plain = strategy.unwrap(model)
    optimizer = private_optimizer(torch.optim.SGD(plain.parameters(), lr=lr), plan)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    moves, raw = [], []
    for _ in range(5):
        before = torch.cat([p.detach().flatten() for p in plain.parameters()]).clone()
        with strategy.accumulate(model, True):
            loss = task.training_loss(model, batch)
            loss.backward()
        raw.append(torch.cat([p.grad.flatten() for p in plain.parameters()]).norm().item())
        strategy.step(model, optimizer, scaler, clip_grad_norm=None)
        after = torch.cat([p.detach().flatten() for p in plain.parameters()])
        moves.append((after - before).norm().item())
    assert all(0 < m <= lr * clip * (1 + 1e-4) for m in moves)
    assert min(raw) * lr > 10 * max(moves)  # unclipped, the steps would be far longer
    assert all(p.grad is None and p.grad_sample is None for p in plain.parameters())
    assert plan.epsilon(5) == math.inf  # no noise: no privacy


def test_private_run_resumes_to_the_same_weights(tmp_path) -> None:
    task = PrivateToyTask(batches=4, batch=32)
    cfg = _cfg(noise_multiplier=1.0)
    cfg.epochs = 3
    whole = Trainer(
        task, cfg, Run.create("train", "toy", cfg, root=tmp_path), metric="accuracy"
    ).fit()

    def stop(state) -> None:
        if state.global_step == 6:  # mid-way through the second epoch
            raise KeyboardInterrupt

    run = Run.create("train", "toy", cfg, root=tmp_path)
    with pytest.raises(KeyboardInterrupt):
        Trainer(task, cfg, run, metric="accuracy", on_step=stop).fit()
    resumed = Trainer(task, cfg, Run.open(run.id, root=tmp_path), metric="accuracy").fit(
        resume=True
    )
    for a, b in zip(
        whole.model.state_dict().values(), resumed.model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b)
    assert resumed.privacy == whole.privacy
    assert [r["epsilon"] for r in resumed.history] == [r["epsilon"] for r in whole.history]
