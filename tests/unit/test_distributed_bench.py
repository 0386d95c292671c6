"""The distributed benchmark's models and tasks at tiny sizes on the CPU (benchmarks/ is not a
package: its modules are loaded from their files)."""

from __future__ import annotations

import importlib
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from abyssal.contracts.task import Shard, TrainTask

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def _benchmark_module(name: str):
    """Import ``benchmarks/<name>.py`` (with its sibling modules) for a module's tests."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        yield importlib.import_module(name)
    finally:
        sys.path.remove(str(BENCHMARKS))


@pytest.fixture(scope="module")
def bench():
    yield from _benchmark_module("distributed_models")


TINY_LM = {"batch": 2, "vocab": 32, "dim": 16, "layers": 2, "heads": 2, "seq_len": 8}


def test_lm_task_trains_a_finite_loss_and_validates(bench):
    task = bench.make_task("lm", steps=3, **TINY_LM)
    assert isinstance(task, TrainTask)
    torch.manual_seed(0)
    model = task.build_model()
    keys = task.train_batches(0, Shard())
    assert len(keys) == 3 and len(keys[0]) == 2
    inputs, targets = task.move_batch(keys[0], "cpu")
    assert inputs.shape == targets.shape == (2, 8)
    assert torch.equal(inputs[:, 1:], targets[:, :-1])  # targets are the next tokens
    loss = task.training_loss(model, (inputs, targets))
    loss.backward()
    assert loss.ndim == 0 and math.isfinite(loss.item())
    assert abs(loss.item() - math.log(32)) < 0.5  # near uniform at initialisation
    out = task.validation_step(model, task.move_batch(task.val_batches(Shard())[0], "cpu"))
    assert out["loss"].shape == (2,)
    assert task.validation_metrics({"loss": out["loss"].detach().numpy()})["val_loss"] > 0


def test_batches_are_generated_once_per_device_from_the_seed(bench):
    a = bench.make_task("lm", steps=1, **TINY_LM)
    b = bench.make_task("lm", steps=1, **TINY_LM)
    key = a.train_batches(0, Shard())[0]
    assert a.move_batch(key, "cpu") is a.move_batch(key, torch.device("cpu"))
    assert torch.equal(a.move_batch(key, "cpu")[0], b.move_batch(key, "cpu")[0])


def test_a_task_without_validation_reports_nan(bench):
    task = bench.make_task("lm", steps=1, validate=False, **TINY_LM)
    assert task.val_batches(Shard()) == []
    assert math.isnan(task.validation_metrics({})["val_loss"])


def test_gpt_ties_its_head_and_shards_by_block(bench):
    model = bench.GPT(vocab=32, dim=16, layers=3, heads=2, seq_len=8)
    assert model.head.weight is model.wte.weight
    assert [type(b).__name__ for b in model.blocks] == ["Block"] * 3
    params = sum(p.numel() for p in model.parameters())
    assert bench.training_state_bytes(model) == 16 * params


def test_gpt_init_weights_initialises_a_meta_built_model(bench):
    with torch.device("meta"):
        model = bench.GPT(vocab=32, dim=16, layers=2, heads=2, seq_len=8)
    model.to_empty(device="cpu")
    model.init_weights()
    assert torch.equal(model.blocks[0].ln1.weight, torch.ones(16))
    std = model.wte.weight.std().item()
    assert 0.01 < std < 0.03
    assert model.blocks[1].attn.proj.weight.std().item() < std  # residual projections scaled


def test_resnet50_task_gives_a_finite_loss_in_channels_last(bench):
    task = bench.make_task("resnet50", steps=1, batch=2, image_size=32)
    model = task.build_model()
    assert model.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    images, labels = task.move_batch(task.train_batches(0, Shard())[0], "cpu")
    assert images.shape == (2, 3, 32, 32) and labels.shape == (2,)
    assert images.is_contiguous(memory_format=torch.channels_last)
    loss = task.training_loss(model, (images, labels))
    assert math.isfinite(loss.item())
    plain = bench.make_task("resnet50", steps=1, batch=2, channels_last_weights=False)
    assert plain.build_model().conv1.weight.is_contiguous()


def test_step_clock_times_the_steps_after_warmup(bench):
    clock = bench.StepClock(warmup=2, steps=5, device=torch.device("cpu"))
    for _ in range(5):
        clock()
    assert clock.count == 5 and clock.timed_steps == 3
    assert clock.seconds is not None and clock.seconds >= 0
    with pytest.raises(ValueError, match="warmup"):
        bench.StepClock(warmup=0, steps=5, device=torch.device("cpu"))


def test_unknown_model_is_refused_with_the_known_ones(bench):
    with pytest.raises(ValueError, match="resnet50, lm"):
        bench.make_task("vit", steps=1)


def test_classification_loss_flattens_tokens(bench):
    logits = torch.zeros(2, 3, 4)
    targets = torch.zeros(2, 3, dtype=torch.long)
    assert np.isclose(bench.classification_loss(logits, targets).item(), math.log(4))


@pytest.fixture(scope="module")
def reshard():
    yield from _benchmark_module("reshard")


RESHARD = {"items": 64, "batch": 8, "seq_len": 8, "vocab": 32, "dim": 16, "layers": 2,
           "heads": 2}  # fmt: skip


def test_the_reshard_task_trains_the_same_items_per_step_on_any_world_size(reshard):
    """What makes a resume on another number of ranks exact: step k takes the same items
    whether 8 ranks or 2 share them."""
    steps: dict[int, list[set[tuple[int, ...]]]] = {}
    for world in (8, 2, 1):
        task = reshard.ReshardTask(RESHARD, world)
        assert isinstance(task, TrainTask)
        per_rank = [task.train_batches(1, Shard(r, world)) for r in range(world)]
        assert {len(b) for b in per_rank} == {64 // 8}  # every rank: one batch per step
        steps[world] = [
            {tuple(row.tolist()) for rank in per_rank for row in rank[k].tokens}
            for k in range(64 // 8)
        ]
    assert steps[8] == steps[2] == steps[1]
    seqs = reshard.counting(np.random.default_rng(0), 5, 6, 32)
    strides = (seqs[:, 1:] - seqs[:, :-1]) % 32  # each sequence counts by one stride, 1 to 4
    assert all(len(set(row.tolist())) == 1 and 1 <= row[0] <= 4 for row in strides)
    with pytest.raises(SystemExit, match="does not divide"):
        reshard.ReshardTask(RESHARD, 3)


@pytest.fixture(scope="module")
def runner():
    yield from _benchmark_module("distributed")


def _row(n: int, eff: float, runner: str = "trainer", vs_plain: float | None = 1.0) -> dict:
    return {
        "kind": "throughput", "status": "ok", "mode": "eager", "n": n, "strategy": "ddp",
        "runner": runner, "model": "resnet50", "scaling_efficiency": eff,
        "vs_plain": vs_plain if runner == "trainer" else None,
    }  # fmt: skip


def test_targets_judge_scaling_on_gpus_with_the_8_gpu_goal(runner):
    rows = [_row(1, 1.0), _row(2, 0.96), _row(4, 0.94), _row(8, 0.93, vs_plain=0.96)]
    out = {t["target"]: t for t in runner.targets(rows, 8, cuda=True)}
    eager = "ResNet-50 trainer ddp eager: scaling efficiency >= {} on {} GPUs"
    assert out[eager.format(0.95, 2)]["met"] is True
    assert out[eager.format(0.95, 4)]["met"] is False
    assert (
        out[eager.format(0.92, 8)]["met"] is True
        and out[eager.format(0.92, 8)]["measured"] == "0.930"
    )
    assert out["resnet50 eager n=8: trainer >= 0.97 x plain loop"]["met"] is False
    compiled = out["ResNet-50 trainer ddp compiled: scaling efficiency >= 0.92 on 8 GPUs"]
    assert compiled["met"] is None and compiled["measured"] == "not run"
    # on two GPUs the 8-GPU goal is not listed; the 4-GPU one names why it did not run
    two = {t["target"]: t for t in runner.targets(rows[:2], 2, cuda=True)}
    assert eager.format(0.92, 8) not in two
    assert two[eager.format(0.95, 4)]["measured"] == "not run (--gpus 2)"


def test_targets_of_cpu_processes_are_not_judged(runner):
    rows = [_row(1, 1.0), _row(2, 0.99), _row(8, 0.1)]
    out = runner.targets(rows, 8, cuda=False)
    assert out and all(t["met"] is None for t in out)
    assert all("CPU processes" in t["measured"] for t in out)
