"""The local trainer, its checkpoints and strategies, on a toy task (an MLP with dropout)."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from torch import nn
from torch.optim.optimizer import (
    register_optimizer_step_post_hook,
    register_optimizer_step_pre_hook,
)

from abyssal.contracts.task import Shard, TrainTask
from abyssal.contracts.train_config import PrivacyConfig, TrainConfig
from abyssal.core.devices import autocast_dtype, derive_seed, resolve_device, seed_everything
from abyssal.core.errors import AbyssalError, ConfigError, RegistryError
from abyssal.core.runs import Run
from abyssal.train.checkpoint import (
    TrainState,
    peek_checkpoint,
    read_checkpoint,
    restore_checkpoint,
    save_checkpoint,
)
from abyssal.train.strategy import STRATEGIES, LocalStrategy, Strategy
from abyssal.train.trainer import Trainer

ONE = Shard()


class ToyTask:
    """Two seeded Gaussian classes; 4 batches of 16 per epoch, reshuffled by epoch."""

    def __init__(self, batches: int = 4, batch: int = 16, dropout: float = 0.3) -> None:
        g = torch.Generator().manual_seed(123)
        self.x = torch.randn(batches * batch, 4, generator=g)
        self.y = (self.x @ torch.tensor([1.0, -2.0, 0.5, 1.5]) > 0).long()
        self.xv = torch.randn(64, 4, generator=g)
        self.yv = (self.xv @ torch.tensor([1.0, -2.0, 0.5, 1.5]) > 0).long()
        self.batches, self.batch, self.dropout = batches, batch, dropout
        self.epoch = -1

    def build_model(self) -> nn.Module:
        return nn.Sequential(
            nn.Linear(4, 16), nn.ReLU(), nn.Dropout(self.dropout), nn.Linear(16, 2)
        )

    def train_batches(self, epoch: int, shard: Shard = ONE):
        self.epoch = epoch
        perm = torch.randperm(len(self.x), generator=torch.Generator().manual_seed(epoch))
        for i in range(self.batches):
            idx = perm[i * self.batch : (i + 1) * self.batch]
            yield self.x[idx], self.y[idx]

    def move_batch(self, batch, device):
        return tuple(t.to(device) for t in batch)

    def training_loss(self, model, batch):
        x, y = batch
        return F.cross_entropy(model(x), y)

    def val_batches(self, shard: Shard = ONE):
        return [(self.xv, self.yv)]

    def validation_step(self, model, batch):
        xv, yv = batch
        return {"logits": model(xv).float(), "label": yv}

    def validation_metrics(self, outputs) -> dict[str, float]:
        logits, yv = torch.from_numpy(outputs["logits"]), torch.from_numpy(outputs["label"])
        accuracy = (logits.argmax(1) == yv).float().mean().item()
        return {"accuracy": accuracy, "val_loss": F.cross_entropy(logits, yv).item()}


class ScriptedTask(ToyTask):
    """Validation returns a scripted metric per epoch and keeps a copy of the weights."""

    def __init__(self, scores: list[float]) -> None:
        super().__init__()
        self.scores = scores
        self.snapshots: dict[int, dict[str, torch.Tensor]] = {}

    def validation_step(self, model, batch):
        self.snapshots[self.epoch] = {k: v.clone() for k, v in model.state_dict().items()}
        return {}

    def validation_metrics(self, outputs) -> dict[str, float]:
        return {"score": self.scores[self.epoch]}


class ChunkTask(ToyTask):
    """A linear regression whose epoch is a fixed list of row ranges (no dropout)."""

    def __init__(self, chunks: list[tuple[int, int]]) -> None:
        super().__init__(batches=3, batch=8)
        self.chunks = chunks
        self.t = self.x @ torch.tensor([0.5, -1.0, 2.0, 0.1])

    def build_model(self) -> nn.Module:
        return nn.Linear(4, 1)

    def train_batches(self, epoch: int, shard: Shard = ONE):
        self.epoch = epoch
        for lo, hi in self.chunks:
            yield self.x[lo:hi], self.t[lo:hi]

    def training_loss(self, model, batch):
        x, t = batch
        return F.mse_loss(model(x).squeeze(1), t)

    def val_batches(self, shard: Shard = ONE):
        return [(self.x, self.t)]

    def validation_step(self, model, batch):
        return {"mse": F.mse_loss(model(batch[0]).squeeze(1), batch[1]).reshape(1)}

    def validation_metrics(self, outputs) -> dict[str, float]:
        return {"mse": float(outputs["mse"][0])}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # Tiny tensors: thread hand-offs would cost more than the arithmetic.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("ABYSSAL_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture
def step_grads():
    """Gradients of every parameter just before each optimizer step."""
    seen: list[list[torch.Tensor]] = []

    def hook(optimizer, args, kwargs):
        params = [p for g in optimizer.param_groups for p in g["params"]]
        seen.append([p.grad.detach().clone() for p in params])

    handle = register_optimizer_step_pre_hook(hook)
    yield seen
    handle.remove()


def _cfg(**kw) -> TrainConfig:
    base = {"epochs": 3, "lr": 0.02, "patience": 0, "progress": False, "clip_grad_norm": None}
    base["device"] = "cpu"
    return TrainConfig(**{**base, **kw})


def _fit(task, metric="accuracy", resume=False, run=None, **kw):
    run = run or Run.create("train", "toy", _cfg(**kw))
    return Trainer(task, _cfg(**kw), run, metric=metric).fit(resume=resume), run


def _same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _no_time(history):
    return [{k: v for k, v in row.items() if k != "time"} for row in history]


def test_toy_task_satisfies_protocols():
    assert isinstance(ToyTask(), TrainTask)
    assert isinstance(LocalStrategy(), Strategy)
    assert STRATEGIES.get("local") is LocalStrategy
    with pytest.raises(RegistryError, match="unknown strategy 'horovod'; choose one of: "):
        STRATEGIES.get("horovod")


def test_loss_decreases_and_run_is_recorded(capsys):
    result, run = _fit(ToyTask(), epochs=8, progress=True)
    losses = [row["train_loss"] for row in result.history]
    assert losses[-1] < 0.7 * losses[0]
    assert result.history[-1]["accuracy"] > result.history[0]["accuracy"]
    assert [r["epoch"] for r in result.history] == list(range(8))
    assert [r["step"] for r in result.history] == [4 * (e + 1) for e in range(8)]
    assert run.metrics_history() == result.history
    info = Run.open(run.id).info
    assert info["status"] == "completed"
    assert info["metrics"] == result.best_metrics
    assert result.best_metrics["accuracy"] == max(r["accuracy"] for r in result.history)
    assert "accuracy=" in capsys.readouterr().err
    assert "epoch 7:" in (run.path / "log.txt").read_text()


@pytest.mark.parametrize(
    ("mode", "scores", "patience", "best_epoch", "epochs_run"),
    [
        ("max", [0.1, 0.5, 0.4, 0.45, 0.3, 0.9, 0.95, 0.99], 3, 1, 5),
        ("min", [0.9, 0.5, 0.6, 0.4, 0.7, 0.8, 0.1, 0.0], 2, 3, 6),
        ("max", [0.1, 0.5, 0.4, 0.45, 0.3, 0.2, 0.15, 0.12], 0, 1, 8),
    ],
)
def test_early_stopping(mode, scores, patience, best_epoch, epochs_run):
    task = ScriptedTask(scores)
    result, run = _fit(task, "score", epochs=8, patience=patience, early_stopping_mode=mode)
    assert (result.best_epoch, result.epochs_run) == (best_epoch, epochs_run)
    assert result.stopped_early == (epochs_run < 8)
    assert result.best_metrics == {"score": scores[best_epoch]}
    assert len(result.history) == epochs_run
    best = task.snapshots[best_epoch]
    assert all(torch.equal(result.model.state_dict()[k], best[k]) for k in best)
    assert peek_checkpoint(run.checkpoint_dir, "last")["state"]["epoch"] == epochs_run - 1


def test_grad_accumulation_matches_full_batches(step_grads):
    # k=2 over 8-row chunks (the last window is partial) == k=1 over 16 + 8 rows.
    full, _ = _fit(ChunkTask([(0, 16), (16, 24)]), "mse", early_stopping_mode="min")
    full_grads = list(step_grads)
    step_grads.clear()
    halves, _ = _fit(
        ChunkTask([(0, 8), (8, 16), (16, 24)]), "mse", early_stopping_mode="min", grad_accum_steps=2
    )
    assert len(step_grads) == len(full_grads) == 6
    for a, b in zip(step_grads, full_grads, strict=True):
        for ga, gb in zip(a, b, strict=True):
            torch.testing.assert_close(ga, gb, rtol=1e-5, atol=1e-6)
    for k, v in full.model.state_dict().items():
        torch.testing.assert_close(halves.model.state_dict()[k], v, rtol=1e-5, atol=1e-6)
    assert [r["step"] for r in halves.history] == [2, 4, 6]


def test_clipping_bounds_the_gradient_norm(step_grads):
    _fit(ToyTask(), epochs=2)
    unclipped = [torch.cat([g.flatten() for g in grads]).norm().item() for grads in step_grads]
    step_grads.clear()
    _fit(ToyTask(), epochs=2, clip_grad_norm=0.05)
    clipped = [torch.cat([g.flatten() for g in grads]).norm().item() for grads in step_grads]
    assert min(unclipped) > 0.05
    assert len(clipped) == 8 and max(clipped) <= 0.05 * (1 + 1e-4)


class NanTask(ToyTask):
    def training_loss(self, model, batch):
        loss = super().training_loss(model, batch)
        self.calls = getattr(self, "calls", 0) + 1
        return loss * float("nan") if self.calls == 7 else loss


def test_nan_loss_fails_the_run_and_names_epoch_and_step():
    run = Run.create("train", "toy", None)
    with pytest.raises(AbyssalError, match=r"loss is nan at epoch 1, step 7"):
        _fit(NanTask(), run=run)
    info = Run.open(run.id).info
    assert info["status"] == "failed"
    assert "epoch 1, step 7" in info["error"]
    assert peek_checkpoint(run.checkpoint_dir, "last")["state"]["epoch"] == 0


def test_missing_metric_is_named():
    with pytest.raises(
        AbyssalError, match="'auc' is missing; validation_metrics\\(\\) gave: accuracy"
    ):
        _fit(ToyTask(), metric="auc")
    with pytest.raises(ConfigError, match="early_stopping_metric"):
        Trainer(ToyTask(), _cfg(), Run.create("train", "toy", None))


def _trained(steps: int = 3) -> tuple[nn.Module, torch.optim.Optimizer]:
    seed_everything(0)
    model = ToyTask().build_model()
    opt = torch.optim.AdamW(model.parameters(), lr=0.01)
    for _ in range(steps):
        F.cross_entropy(model(torch.randn(8, 4)), torch.randint(0, 2, (8,))).backward()
        opt.step()
        opt.zero_grad()
    return model, opt


def test_checkpoint_round_trip_without_pickle(tmp_path):
    model, opt = _trained()
    state = TrainState(epoch=4, global_step=20, best_metric=0.8, best_epoch=3)
    save_checkpoint(tmp_path, "last", model=model, optimizer=opt, state=state)
    expected = (torch.rand(3), random.random(), np.random.rand())
    files = sorted(p.name for p in tmp_path.iterdir())
    assert len(files) == 2 and files[1] == "last.json" and files[0].endswith(".safetensors")
    meta = json.loads((tmp_path / "last.json").read_text())
    assert meta["tensors"] == files[0] and meta["state"]["global_step"] == 20
    with safe_open(tmp_path / files[0], "pt") as fh:
        keys = set(fh.keys())
    assert {"model.0.weight", "optim.state.0.exp_avg", "rng.torch_cpu"} <= keys

    model2, opt2 = _trained(steps=1)
    restored = restore_checkpoint(read_checkpoint(tmp_path, "last"), model=model2, optimizer=opt2)
    assert restored == state
    assert _same_weights(model, model2)
    for p, p2 in zip(model.parameters(), model2.parameters(), strict=True):
        a, b = opt.state[p], opt2.state[p2]
        assert all(torch.equal(a[k], b[k]) for k in ("step", "exp_avg", "exp_avg_sq"))
    assert opt2.param_groups[0]["betas"] == (0.9, 0.999)
    assert (torch.rand(3), random.random(), np.random.rand())[1:] == expected[1:]
    assert torch.equal(torch.rand(3), torch.rand(3)) is False  # RNG advances normally


def test_checkpoint_restores_rng_states(tmp_path):
    model, _ = _trained()
    save_checkpoint(tmp_path, "last", model=model, state=TrainState())
    expected = (torch.rand(3), random.random(), np.random.rand())
    seed_everything(99)
    restore_checkpoint(read_checkpoint(tmp_path, "last"), model=model)
    got = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(got[0], expected[0]) and got[1:] == expected[1:]


def test_checkpoint_with_tied_weights(tmp_path):
    model = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 3))
    model[1].weight = model[0].weight
    save_checkpoint(tmp_path, "best", model=model, state=TrainState(), rng=False)
    tensors = read_checkpoint(tmp_path, "best").model_state()
    assert torch.equal(tensors["0.weight"], tensors["1.weight"])


def test_torn_checkpoint_falls_back_then_raises(tmp_path):
    model, opt = _trained()
    save_checkpoint(tmp_path, "last", model=model, optimizer=opt, state=TrainState(epoch=0))
    first = json.loads((tmp_path / "last.json").read_text())["tensors"]
    model, opt = _trained(steps=5)
    save_checkpoint(tmp_path, "last", model=model, optimizer=opt, state=TrainState(epoch=1))
    second = json.loads((tmp_path / "last.json").read_text())["tensors"]
    assert first != second and (tmp_path / "last.prev.json").exists()
    # A torn pair: the JSON of epoch 1 next to the tensors of epoch 0.
    (tmp_path / second).write_bytes((tmp_path / first).read_bytes())
    ckpt = read_checkpoint(tmp_path, "last")
    assert ckpt.state.epoch == 0
    assert "torn or damaged" in ckpt.note and "last.prev.json" in ckpt.note
    (tmp_path / first).write_bytes(b"\0" * 10)
    with pytest.raises(AbyssalError, match=r"checkpoint 'last' .* is damaged"):
        read_checkpoint(tmp_path, "last")
    with pytest.raises(AbyssalError, match="no checkpoint 'best'"):
        read_checkpoint(tmp_path, "best")


def test_old_tensor_files_are_pruned(tmp_path):
    model, _ = _trained()
    for epoch in range(4):
        with torch.no_grad():
            model[0].bias += 1
        save_checkpoint(tmp_path, "last", model=model, state=TrainState(epoch=epoch))
    assert len(list(tmp_path.glob("*.safetensors"))) == 2


def test_resume_equals_uninterrupted_run():
    straight, _ = _fit(ToyTask(), epochs=6)
    first, run = _fit(ToyTask(), epochs=3)
    assert Run.open(run.id).status == "completed" and first.epochs_run == 3
    resumed, _ = _fit(ToyTask(), epochs=6, resume=True, run=Run.open(run.id))
    assert _same_weights(resumed.model, straight.model)
    assert _no_time(resumed.history) == _no_time(straight.history)
    assert _no_time(run.metrics_history()) == _no_time(straight.history)
    assert resumed.best_epoch == straight.best_epoch and resumed.epochs_run == 6
    last = read_checkpoint(run.checkpoint_dir, "last").model_state()
    model = ToyTask().build_model()
    model.load_state_dict(last)
    assert not _same_weights(model, ToyTask().build_model())


class InterruptingTask(ToyTask):
    def train_batches(self, epoch: int, shard: Shard = ONE):
        if epoch == 4:
            raise KeyboardInterrupt
        return super().train_batches(epoch, shard)


def test_interrupt_then_resume_truncates_metrics_and_matches():
    straight, _ = _fit(ToyTask(), epochs=6, checkpoint_every=3)
    run = Run.create("train", "toy", None)
    with pytest.raises(KeyboardInterrupt):
        _fit(InterruptingTask(), epochs=6, checkpoint_every=3, run=run)
    assert Run.open(run.id).status == "interrupted"
    assert len(run.metrics_history()) == 4  # epochs 0-3 logged, checkpoint after epoch 2
    resumed, _ = _fit(ToyTask(), epochs=6, checkpoint_every=3, resume=True, run=run)
    assert [r["epoch"] for r in run.metrics_history()] == list(range(6))
    assert _no_time(resumed.history) == _no_time(straight.history)
    assert _same_weights(resumed.model, straight.model)
    assert Run.open(run.id).status == "completed"


def test_resume_of_finished_run_returns_its_result():
    first, run = _fit(ScriptedTask([0.1, 0.9, 0.2, 0.3, 1.0]), "score", epochs=5, patience=2)
    assert first.stopped_early and first.epochs_run == 4
    again, _ = _fit(ScriptedTask([9.0] * 5), "score", epochs=5, patience=2, resume=True, run=run)
    assert (again.best_epoch, again.epochs_run, again.best_metrics) == (1, 4, {"score": 0.9})
    assert _same_weights(again.model, first.model)
    assert len(run.metrics_history()) == 4


def test_fresh_fit_refuses_a_run_with_checkpoints():
    _, run = _fit(ToyTask(), epochs=1)
    with pytest.raises(AbyssalError, match="already has checkpoints"):
        _fit(ToyTask(), epochs=2, run=run)


def test_devices_and_precision():
    cpu = torch.device("cpu")
    assert resolve_device("cpu") == cpu
    assert resolve_device("auto") == (torch.device("cuda") if torch.cuda.is_available() else cpu)
    assert autocast_dtype("auto", cpu) is None and autocast_dtype("fp32", cpu) is None
    assert autocast_dtype("bf16", cpu) is torch.bfloat16
    with pytest.raises(ConfigError, match="fp16 needs a CUDA device"):
        autocast_dtype("fp16", cpu)
    with pytest.raises(ConfigError, match="not one of"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(AbyssalError, match="CUDA is not available"):
            resolve_device("cuda:0")
    assert derive_seed(0, 1) != derive_seed(0, 2) and derive_seed(5, 3) == derive_seed(5, 3)


def test_bf16_autocast_on_cpu_trains():
    result, _ = _fit(ToyTask(), epochs=2, precision="bf16")
    assert all(np.isfinite(r["train_loss"]) for r in result.history)
    assert result.model[0].weight.dtype == torch.float32


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_cuda_mixed_precision_resume_matches(precision):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    kw = {"device": "cuda", "precision": precision, "clip_grad_norm": 1.0}
    straight, _ = _fit(ToyTask(), epochs=4, **kw)
    _, run = _fit(ToyTask(), epochs=2, **kw)
    meta = peek_checkpoint(run.checkpoint_dir, "last")
    assert meta["rng"]["cuda_devices"] == torch.cuda.device_count()
    assert (meta["scaler"].get("scale", 0) > 0) == (precision == "fp16")
    resumed, _ = _fit(ToyTask(), epochs=4, resume=True, run=run, **kw)
    assert next(resumed.model.parameters()).device.type == "cuda"
    assert _same_weights(resumed.model, straight.model)
    assert _no_time(resumed.history) == _no_time(straight.history)


def test_deterministic_kernels_are_on_during_fit_and_restored_after() -> None:
    from abyssal.core.devices import deterministic_kernels

    assert not torch.are_deterministic_algorithms_enabled()
    with deterministic_kernels(True):
        assert torch.are_deterministic_algorithms_enabled()
    assert not torch.are_deterministic_algorithms_enabled()
    with deterministic_kernels(False):
        assert not torch.are_deterministic_algorithms_enabled()


def test_prefetched_batches_train_exactly_like_batches_built_when_due():
    plain, _ = _fit(ToyTask(), epochs=3)  # dropout draws from the global RNG, in the loop
    ahead, _ = _fit(ToyTask(), epochs=3, prefetch_batches=2)
    assert _same_weights(plain.model, ahead.model)
    assert [r["accuracy"] for r in plain.history] == [r["accuracy"] for r in ahead.history]


def test_prefetching_stops_at_max_steps_and_raises_a_building_error_where_it_is_due():
    result, _ = _fit(ToyTask(batches=8), epochs=3, max_steps=3, prefetch_batches=4)
    assert result.history[-1]["step"] == 3

    class Broken(ToyTask):
        def train_batches(self, epoch, shard=ONE):
            yield from list(super().train_batches(epoch, shard))[:2]
            raise ValueError("row 17 is not a number")

    with pytest.raises(ValueError, match="row 17"):
        _fit(Broken(), epochs=1, prefetch_batches=2)


# -- the weights' moving average ----------------------------------------------------------------


def test_the_moving_average_is_what_validation_sees_and_what_is_kept():
    """With train.ema_decay the kept model is the average of the weights after each step."""
    decay, seen = 0.8, []

    def after_step(optimizer, args, kwargs):
        params = [p for g in optimizer.param_groups for p in g["params"]]
        seen.append({id(p): p.detach().clone() for p in params})

    handle = register_optimizer_step_post_hook(after_step)
    try:
        result, run = _fit(ToyTask(dropout=0.0), epochs=4, ema_decay=decay)
    finally:
        handle.remove()
    averages = [seen[0]]  # the first step copies, then the average moves
    for step in seen[1:]:
        averages.append({k: averages[-1][k] * decay + p * (1 - decay) for k, p in step.items()})
    assert result.best_step is not None
    # one process: the kept model is the trained module itself, with the best weights loaded
    named = dict(result.model.named_parameters())
    for param in named.values():
        torch.testing.assert_close(param.detach(), averages[result.best_step - 1][id(param)])
    last = read_checkpoint(run.checkpoint_dir, "last")
    trained, averaged = last.model_state(), last.averaged_state()
    assert averaged is not None and int(averaged["n_averaged"]) == len(seen)
    weight = id(named["0.weight"])
    torch.testing.assert_close(trained["0.weight"], seen[-1][weight])  # the trained weights
    torch.testing.assert_close(averaged["module.0.weight"], averages[-1][weight])  # the average
    assert not torch.equal(trained["0.weight"], averaged["module.0.weight"])


def test_a_run_with_a_moving_average_resumes_as_if_uninterrupted():
    straight, _ = _fit(ToyTask(), epochs=6, ema_decay=0.9)
    _, run = _fit(ToyTask(), epochs=3, ema_decay=0.9)
    resumed, _ = _fit(ToyTask(), epochs=6, ema_decay=0.9, resume=True, run=Run.open(run.id))
    assert _same_weights(resumed.model, straight.model)
    assert _no_time(resumed.history) == _no_time(straight.history)
    plain, _ = _fit(ToyTask(), epochs=6)
    assert not _same_weights(plain.model, straight.model)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"ema_decay": 1.0}, r"train\.ema_decay must be in \[0, 1\)"),
        ({"ema_decay": -0.1}, r"train\.ema_decay must be in \[0, 1\)"),
        ({"ema_decay": 0.9, "strategy": "fsdp"}, "local or ddp, not fsdp"),
        ({"ema_decay": 0.9, "strategy": "parameter_server"}, "not parameter_server"),
        ({"ema_decay": 0.9, "privacy": PrivacyConfig(enabled=True)}, "not supported with"),
    ],
)
def test_bad_moving_average_settings_are_named(settings, message):
    with pytest.raises(ConfigError, match=message):
        _cfg(**settings)
