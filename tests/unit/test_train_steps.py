"""Step-based training: schedules, max_steps, evaluation and checkpoints every N steps with an
exact mid-epoch resume, optimizer and schedule registries, parameter groups and freezing."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.optimizer import register_optimizer_step_pre_hook

from abyssal.contracts.task import Shard
from abyssal.contracts.train_config import TrainConfig
from abyssal.core.devices import seed_everything
from abyssal.core.errors import ConfigError, RegistryError
from abyssal.core.runs import Run
from abyssal.train.optim import (
    OPTIMIZERS,
    SCHEDULES,
    build_optimizer,
    check_names,
    lr_factor,
    parameter_groups,
    trainable_parameters,
)
from abyssal.train.trainer import Trainer


class StepTask:
    """A two-class MLP with dropout; 5 batches of 8 per epoch, reshuffled by epoch."""

    def __init__(self, interrupt_at: tuple[int, int] | None = None) -> None:
        g = torch.Generator().manual_seed(5)
        self.x = torch.randn(40, 4, generator=g)
        self.y = (self.x @ torch.tensor([1.0, -2.0, 0.5, 1.5]) > 0).long()
        self.xv = torch.randn(24, 4, generator=g)
        self.yv = (self.xv @ torch.tensor([1.0, -2.0, 0.5, 1.5]) > 0).long()
        self.interrupt_at = interrupt_at
        self.lrs: list[float] = []

    def build_model(self) -> nn.Module:
        return nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 2))

    def train_batches(self, epoch: int, shard: Shard):
        order = shard.take(len(self.x), seed=epoch)
        for i, start in enumerate(range(0, len(order), 8)):
            if self.interrupt_at == (epoch, i):
                self.interrupt_at = None
                raise KeyboardInterrupt
            idx = torch.from_numpy(order[start : start + 8])
            yield self.x[idx], self.y[idx]

    def move_batch(self, batch, device):
        return tuple(t.to(device) for t in batch)

    def training_loss(self, model, batch):
        return F.cross_entropy(model(batch[0]), batch[1])

    def val_batches(self, shard: Shard):
        idx = torch.from_numpy(shard.take(len(self.xv)))
        return [(self.xv[idx], self.yv[idx])]

    def validation_step(self, model, batch):
        return {"logits": model(batch[0]), "label": batch[1]}

    def validation_metrics(self, outputs):
        logits, y = torch.from_numpy(outputs["logits"]), torch.from_numpy(outputs["label"])
        return {"val_loss": F.cross_entropy(logits, y).item()}


def _cfg(**kw) -> TrainConfig:
    base = dict(epochs=4, lr=0.05, patience=0, progress=False, device="cpu", clip_grad_norm=None)
    return TrainConfig(**{**base, **kw})


def _fit(task, run=None, resume=False, **kw):
    run = run or Run.create("train", "toy", None)
    trainer = Trainer(task, _cfg(**kw), run, metric="val_loss", mode="min")
    return trainer.fit(resume=resume), run


def _rows(history):
    return [{k: v for k, v in r.items() if k != "time"} for r in history]


def _same(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return all(torch.equal(sa[k], sb[k]) for k in sa)


def test_shard_parts_are_disjoint_and_cover_everything():
    for n, world in ((10, 3), (7, 2), (2, 4)):
        parts = [Shard(r, world).take(n, seed=11) for r in range(world)]
        merged = sorted(i for p in parts for i in p.tolist())
        assert merged == list(range(n))
        assert max(map(len, parts)) - min(map(len, parts)) <= 1
    assert Shard(0, 2).take(6, seed=1).tolist() != Shard(0, 2).take(6, seed=2).tolist()
    with pytest.raises(ConfigError, match="rank 2 of world size 2"):
        Shard(2, 2)


def test_schedules_warm_up_then_decay_to_the_floor():
    cosine = [lr_factor("cosine", step=s, total=10, warmup=2, min_ratio=0.1) for s in range(10)]
    assert cosine[:2] == [0.5, 1.0]
    assert cosine[2] == pytest.approx(1.0) and cosine[-1] == pytest.approx(0.1 + 0.9 * 0.0381, 1e-2)
    assert all(a >= b for a, b in itertools.pairwise(cosine[1:]))
    linear = [lr_factor("linear", step=s, total=5, warmup=0, min_ratio=0.0) for s in range(5)]
    assert linear == pytest.approx([1.0, 0.8, 0.6, 0.4, 0.2])
    assert lr_factor("constant", step=99, total=None, warmup=0, min_ratio=0.0) == 1.0
    with pytest.raises(ConfigError, match=r"set train\.max_steps"):
        lr_factor("cosine", step=3, total=None, warmup=0, min_ratio=0.0)


def test_the_trainer_follows_the_schedule_step_by_step():
    seen: list[float] = []
    hook = register_optimizer_step_pre_hook(
        lambda opt, args, kwargs: seen.append(opt.param_groups[0]["lr"])
    )
    try:
        _fit(StepTask(), epochs=2, max_steps=10, schedule="linear", warmup_steps=2, lr=0.1)
    finally:
        hook.remove()
    total = 10  # 2 epochs x 5 batches
    expected = [
        0.1 * lr_factor("linear", step=s, total=total, warmup=2, min_ratio=0.0)
        for s in range(total)
    ]
    assert seen == pytest.approx(expected)


def test_max_steps_stops_mid_epoch_and_evaluates_at_the_end():
    result, run = _fit(StepTask(), epochs=10, max_steps=7, eval_every_steps=3)
    steps = [row["step"] for row in result.history]
    assert steps == [3, 6, 7]
    assert [row["epoch"] for row in result.history] == [0, 1, 1]
    assert result.epochs_run == 2 and Run.open(run.id).status == "completed"


def test_mid_epoch_resume_with_a_schedule_is_exact():
    kw = dict(epochs=3, max_steps=15, eval_every_steps=2, schedule="cosine", warmup_steps=3)
    straight, _ = _fit(StepTask(), **kw)
    run = Run.create("train", "toy", None)
    with pytest.raises(KeyboardInterrupt):
        _fit(StepTask(interrupt_at=(1, 3)), run=run, **kw)  # killed in epoch 1, after step 8
    assert Run.open(run.id).status == "interrupted"
    resumed, _ = _fit(StepTask(), run=Run.open(run.id), resume=True, **kw)
    assert _same(resumed.model, straight.model)
    assert _rows(resumed.history) == _rows(straight.history)
    assert _rows(Run.open(run.id).metrics_history()) == _rows(straight.history)
    assert resumed.best_step == straight.best_step


def test_resume_refuses_an_epoch_that_shrank():
    run = Run.create("train", "toy", None)
    with pytest.raises(KeyboardInterrupt):
        _fit(StepTask(interrupt_at=(0, 4)), run=run, eval_every_steps=2)
    task = StepTask()
    task.x, task.y = task.x[:16], task.y[:16]  # 2 batches now; the checkpoint is after 4
    with pytest.raises(Exception, match="epoch 0 now has 2 batches"):
        _fit(task, run=Run.open(run.id), resume=True, eval_every_steps=2)


def test_early_stopping_counts_evaluations_and_minimises_losses():
    result, _ = _fit(StepTask(), epochs=50, eval_every_steps=1, patience=3, lr=5.0)
    assert result.stopped_early
    values = [row["val_loss"] for row in result.history]
    assert result.best_metrics["val_loss"] == min(values)
    assert len(values) - 1 - values.index(min(values)) == 3


def test_weight_decay_skips_biases_and_norms_unless_asked():
    model = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Linear(4, 1))
    named = list(model.named_parameters())
    groups = parameter_groups(named, 0.1)
    decayed = {id(p) for p in groups[0]["params"]}
    assert decayed == {id(model[0].weight), id(model[2].weight)}
    assert groups[1]["weight_decay"] == 0.0 and len(groups[1]["params"]) == 4
    assert len(parameter_groups(named, 0.1, decay_all=True)) == 1


def test_trainable_and_frozen_patterns_choose_what_trains():
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1))
    chosen = trainable_parameters(model, None, ["0.*"])
    assert [n for n, _ in chosen] == ["2.weight", "2.bias"]
    assert not model[0].weight.requires_grad
    optimizer = build_optimizer(model, _cfg(optimizer="sgd", frozen=["0.*"]))
    assert isinstance(optimizer, torch.optim.SGD)
    assert sum(len(g["params"]) for g in optimizer.param_groups) == 2
    with pytest.raises(ConfigError, match=r"'backbone\.\*' matches no parameter; parameters: 0\.w"):
        trainable_parameters(nn.Sequential(nn.Linear(3, 4)), ["backbone.*"], [])
    with pytest.raises(ConfigError, match="no parameter is left to train"):
        trainable_parameters(nn.Sequential(nn.Linear(3, 4)), None, ["*"])


def test_frozen_parameters_do_not_move_in_training():
    result, _ = _fit(StepTask(), epochs=1, frozen=["0.*"])
    seed_everything(0)  # the trainer builds the model right after seeding with train.seed
    init = StepTask().build_model()
    assert torch.equal(result.model[0].weight, init[0].weight)
    assert not torch.equal(result.model[3].weight, init[3].weight)


def test_optimizers_and_schedules_are_chosen_by_name():
    assert set(OPTIMIZERS.names()) >= {"adamw", "adam", "sgd"}
    assert set(SCHEDULES.names()) >= {"constant", "cosine", "linear"}
    with pytest.raises(RegistryError, match="unknown optimizer 'lamb'; choose one of: adam"):
        check_names(_cfg(optimizer="lamb"))
    with pytest.raises(RegistryError, match=r"unknown learning-rate schedule 'step'"):
        check_names(_cfg(schedule="step"))
    assert math.isclose(SCHEDULES.get("cosine")(1.0), 0.0, abs_tol=1e-12)


def test_a_schedule_needs_a_length_when_batches_have_none():
    with pytest.raises(ConfigError, match=r"batches have no length: set train\.max_steps"):
        _fit(StepTask(), schedule="cosine")


def test_train_checks_optimizer_names_and_patterns_before_a_run_exists(tmp_path):
    from abyssal.core.runs import list_runs
    from abyssal.train.api import train

    base = ["data.source=diabetes", "train.epochs=1", "train.progress=false", "baselines=false"]
    with pytest.raises(ConfigError, match="'nothing' matches no parameter"):
        train("tabular", overrides=[*base, "train.frozen=[nothing]"])
    with pytest.raises(RegistryError, match="unknown optimizer 'lamb'"):
        train("tabular", overrides=[*base, "train.optimizer=lamb"])
    assert list_runs() == []


def test_lr_multipliers_give_each_parameter_its_first_matching_rate():
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1))
    cfg = _cfg(lr=0.1, lr_multipliers={"0.weight": 0.5, "0.*": 0.1})
    optimizer = build_optimizer(model, cfg)
    rate = {id(p): g["base_lr"] for g in optimizer.param_groups for p in g["params"]}
    assert rate[id(model[0].weight)] == pytest.approx(0.05)
    assert rate[id(model[0].bias)] == pytest.approx(0.01)
    assert rate[id(model[2].weight)] == pytest.approx(0.1)
    decay = {id(p): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
    assert decay[id(model[0].bias)] == 0.0 and decay[id(model[0].weight)] == cfg.weight_decay
    with pytest.raises(ConfigError, match=r"pattern 'head\.\*' matches no trainable"):
        build_optimizer(model, _cfg(lr_multipliers={"head.*": 0.1}))
    with pytest.raises(ConfigError, match=r"lr_multipliers\['0\.\*'\] must be a number >= 0"):
        _cfg(lr_multipliers={"0.*": -1.0})


def test_delayed_parameters_hold_still_for_the_first_epochs_then_train():
    seed_everything(0)
    init = StepTask().build_model()
    held, _ = _fit(StepTask(), epochs=1, delayed=["0.*"], delay_epochs=1)
    assert torch.equal(held.model[0].weight, init[0].weight)  # epoch 0: held still
    assert not torch.equal(held.model[3].weight, init[3].weight)
    moved, _ = _fit(StepTask(), epochs=2, delayed=["0.*"], delay_epochs=1)
    assert not torch.equal(moved.model[0].weight, init[0].weight)  # epoch 1: trains
