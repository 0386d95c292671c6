"""Distributed training on the CPU with real gloo process groups started by torchrun: DDP equals
one process with the same global batch, FSDP equals DDP, a checkpoint written by two processes
resumes on one (and on two, exactly, after a rank is killed), and launches the hardware cannot
run are refused at start with what to change."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from abyssal.contracts.train_config import TrainConfig
from abyssal.core.errors import AbyssalError
from abyssal.train.checkpoint import read_checkpoint
from abyssal.train.strategy import make_strategy

ROOT = Path(__file__).resolve().parents[2]
TOY = Path(__file__).with_name("distributed_toy.py")
BASE = {
    "epochs": 3,
    "lr": 0.01,
    "progress": False,
    "patience": 0,
    "eval_every_steps": 3,
    "clip_grad_norm": 1.0,
    "device": "cpu",
}
# 96 items, global batch 16: 6 steps an epoch, 18 in all; evaluations (and checkpoints) every 3


def launch(tmp: Path, name: str, nproc: int, spec: dict[str, Any], timeout: float = 120) -> Any:
    """Run the toy script in ``nproc`` processes (one plain process when 0); the completed
    process, with the spec's output file parsed into ``.result`` when written."""
    spec = {"home": str(tmp / "home"), "batch": 16, "out": str(tmp / f"{name}.json"), **spec}
    spec["train"] = {**BASE, **spec.get("train", {})}
    path = tmp / f"{name}.spec.json"
    path.write_text(json.dumps(spec))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR"):
        env.pop(key, None)
    cmd = [sys.executable, str(TOY), str(path)]
    if nproc:
        run = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc)]
        cmd = [sys.executable, *run, str(TOY), str(path)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    out = Path(spec["out"])
    done.result = json.loads(out.read_text()) if out.exists() else None  # type: ignore[attr-defined]
    return done


def params(result: dict[str, Any]) -> np.ndarray:
    return np.concatenate([np.asarray(v) for _, v in sorted(result["params"].items())])


def ok(done: Any) -> dict[str, Any]:
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.result is not None
    return done.result


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One process, global batch 16: the reference every strategy must reproduce."""
    tmp = tmp_path_factory.mktemp("single")
    return ok(launch(tmp, "single", 0, {"train": {"strategy": "local"}}))


@pytest.fixture(scope="module")
def ddp(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("ddp")
    return ok(launch(tmp, "ddp", 2, {"train": {"strategy": "ddp"}}))


def test_ddp_on_two_processes_equals_one_process_with_the_same_global_batch(single, ddp):
    assert len(ddp["history"]) == len(single["history"]) == 6
    np.testing.assert_allclose(params(ddp), params(single), rtol=1e-5, atol=1e-6)
    assert [r["step"] for r in ddp["history"]] == [r["step"] for r in single["history"]]
    np.testing.assert_allclose(
        [r["val_loss"] for r in ddp["history"]],
        [r["val_loss"] for r in single["history"]],
        rtol=1e-5,
    )
    assert single["history"][-1]["val_loss"] < 0.5 * single["history"][0]["val_loss"]


def test_ddp_with_gradient_accumulation_equals_one_process(tmp_path, single):
    """Two processes, per-process batch 4 accumulated twice (no_sync on the first micro-batch):
    the same steps as one process with batch 16."""
    spec = {"batch": 8, "train": {"strategy": "ddp", "grad_accum_steps": 2}}
    out = ok(launch(tmp_path, "accum", 2, spec))
    np.testing.assert_allclose(params(out), params(single), rtol=1e-5, atol=1e-6)


def test_the_trainer_on_two_workers_and_a_parameter_server_equals_one_process(tmp_path, single):
    """Staleness 0: the server averages both workers' gradients and takes one step."""
    spec = {"train": {"strategy": "parameter_server", "parameter_server": {"staleness": 0}}}
    out = ok(launch(tmp_path, "ps", 3, spec))
    np.testing.assert_allclose(params(out), params(single), rtol=1e-5, atol=1e-6)


def test_fsdp_on_two_processes_matches_ddp(tmp_path, ddp):
    out = ok(launch(tmp_path, "fsdp", 2, {"train": {"strategy": "fsdp"}}))
    # reduce-scatter and all-reduce may add in another order: equal up to float rounding
    np.testing.assert_allclose(params(out), params(ddp), rtol=1e-4, atol=1e-5)


def test_a_checkpoint_of_two_fsdp_processes_resumes_on_one_process(tmp_path, single):
    """Stopped mid-epoch at step 9 (checkpoint at step 9), resumed by a single process: the same
    model, optimizer state and data position, so the end equals an uninterrupted run."""
    first = launch(tmp_path, "cut", 2, {"train": {"strategy": "fsdp"}, "exit_at": 10})
    assert first.returncode != 0 and first.result is None
    run_id = _only_run(tmp_path / "home")
    ckpt = read_checkpoint(tmp_path / "home" / "runs" / run_id / "checkpoints", "last")
    state = ckpt.state
    assert (state.global_step, state.world_size, state.batches_in_epoch) == (9, 2, 3)
    assert state.items_in_epoch == 48
    shards = sorted(p.name for p in ckpt.sharded_folder.iterdir())  # one file per process
    assert shards == [".metadata", "__0_0.distcp", "__1_0.distcp"]
    spec = {"train": {"strategy": "local"}, "resume": run_id}
    resumed = ok(launch(tmp_path, "resumed", 0, spec))
    np.testing.assert_allclose(params(resumed), params(single), rtol=1e-5, atol=1e-6)
    assert [r["step"] for r in resumed["history"]] == [3, 6, 9, 12, 15, 18]


def test_a_sharded_checkpoint_resumes_exactly_on_the_same_fsdp_processes(tmp_path):
    whole = ok(launch(tmp_path, "whole", 2, {"train": {"strategy": "fsdp"}}))
    home = tmp_path / "cut_home"
    spec = {"train": {"strategy": "fsdp"}, "exit_at": 10, "home": str(home)}
    assert launch(tmp_path, "cut", 2, spec).returncode != 0
    spec = {"train": {"strategy": "fsdp"}, "resume": _only_run(home), "home": str(home)}
    resumed = ok(launch(tmp_path, "resumed", 2, spec))
    np.testing.assert_allclose(params(resumed), params(whole), rtol=1e-6, atol=1e-7)


def test_full_state_fsdp_checkpoints_resume_on_one_process(tmp_path, single):
    train = {"strategy": "fsdp", "fsdp": {"sharded_checkpoints": False}}
    assert launch(tmp_path, "cut", 2, {"train": train, "exit_at": 10}).returncode != 0
    run_id = _only_run(tmp_path / "home")
    ckpt = read_checkpoint(tmp_path / "home" / "runs" / run_id / "checkpoints", "last")
    assert ckpt.sharded_folder is None and ckpt.optimizer_state() is not None
    spec = {"train": {"strategy": "local"}, "resume": run_id}
    resumed = ok(launch(tmp_path, "resumed", 0, spec))
    np.testing.assert_allclose(params(resumed), params(single), rtol=1e-5, atol=1e-6)


def test_a_damaged_shard_falls_back_to_the_previous_checkpoint(tmp_path):
    assert launch(tmp_path, "cut", 2, {"train": {"strategy": "fsdp"}, "exit_at": 10}).returncode
    folder = tmp_path / "home" / "runs" / _only_run(tmp_path / "home") / "checkpoints"
    shard = read_checkpoint(folder, "last").sharded_folder / "__1_0.distcp"
    shard.write_bytes(shard.read_bytes()[:-8])  # torn by a crash or a full disk
    ckpt = read_checkpoint(folder, "last")
    assert ckpt.state.global_step == 6 and "__1_0.distcp" in ckpt.note


def test_a_killed_rank_stops_the_job_and_the_last_checkpoint_resumes_exactly(tmp_path, ddp):
    start = time.monotonic()
    spec = {"train": {"strategy": "ddp", "timeout_s": 30}, "kill_at": 11, "kill_rank": 1}
    killed = launch(tmp_path, "killed", 2, spec)
    assert killed.returncode != 0 and killed.result is None
    assert time.monotonic() - start < 90  # the survivor did not wait forever
    run_id = _only_run(tmp_path / "home")
    folder = tmp_path / "home" / "runs" / run_id / "checkpoints"
    assert read_checkpoint(folder, "last").state.global_step == 9  # intact, verified
    resumed = ok(launch(tmp_path, "again", 2, {"train": {"strategy": "ddp"}, "resume": run_id}))
    np.testing.assert_allclose(params(resumed), params(ddp), rtol=1e-6, atol=1e-7)


def test_resuming_with_another_model_shape_is_refused(tmp_path):
    first = launch(tmp_path, "cut", 0, {"train": {"strategy": "local"}, "exit_at": 4})
    assert first.returncode != 0
    run_id = _only_run(tmp_path / "home")
    spec = {"train": {"strategy": "local"}, "resume": run_id, "hidden": 8}
    again = launch(tmp_path, "other", 0, spec)
    assert again.returncode != 0
    assert "holds another model" in again.stderr and "0.weight" in again.stderr


def test_resuming_a_sharded_checkpoint_with_another_model_shape_is_refused(tmp_path):
    assert launch(tmp_path, "cut", 2, {"train": {"strategy": "fsdp"}, "exit_at": 4}).returncode
    spec = {"train": {"strategy": "local"}, "resume": _only_run(tmp_path / "home"), "hidden": 8}
    again = launch(tmp_path, "other", 0, spec)
    assert again.returncode != 0
    assert "does not fit this model" in again.stderr


def test_fsdp_on_one_cpu_process_is_refused_with_what_to_change(tmp_path):
    done = launch(tmp_path, "fsdp1", 1, {"train": {"strategy": "fsdp"}})
    assert done.returncode != 0
    assert "nothing to shard over" in done.stderr and "train.strategy=local" in done.stderr


def test_local_strategy_under_a_torchrun_launch_of_two_is_refused(tmp_path):
    done = launch(tmp_path, "local2", 2, {"train": {"strategy": "local"}})
    assert done.returncode != 0
    assert "train.strategy=local trains in one process" in done.stderr


def _clean_env(monkeypatch: pytest.MonkeyPatch, **env: str) -> None:
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)


def test_ddp_without_a_launch_says_how_to_launch(monkeypatch):
    _clean_env(monkeypatch)
    with pytest.raises(AbyssalError, match="--nproc N"):
        make_strategy(TrainConfig(strategy="ddp"))


def test_nccl_on_cpus_is_refused(monkeypatch):
    _clean_env(monkeypatch, RANK="0", WORLD_SIZE="1")
    with pytest.raises(AbyssalError, match="nccl needs CUDA devices"):
        make_strategy(TrainConfig(strategy="ddp", backend="nccl", device="cpu"))


def test_more_processes_than_gpus_or_missing_cuda_is_refused(monkeypatch):
    import torch

    _clean_env(monkeypatch, RANK="0", WORLD_SIZE="2", LOCAL_WORLD_SIZE="2")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(AbyssalError, match="2 processes on this host but 1 GPU"):
        make_strategy(TrainConfig(strategy="ddp", device="cuda"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(AbyssalError, match="needs CUDA"):
        make_strategy(TrainConfig(strategy="ddp", device="cuda"))


def test_an_unknown_strategy_lists_the_known_ones():
    with pytest.raises(AbyssalError, match="choose one of: ddp, fsdp, local"):
        make_strategy(TrainConfig(strategy="horovod"))


def _only_run(home: Path) -> str:
    runs = sorted(p.name for p in (home / "runs").iterdir() if p.is_dir())
    assert len(runs) == 1, runs
    return runs[0]


def test_abyssal_train_nproc_registers_one_version_that_loads_on_one_cpu(tmp_path):
    """`abyssal train fraud --nproc 2 train.strategy=ddp`: two processes, one run, one version
    (rank 0's), which evaluates on one CPU like any other."""
    env = {**os.environ, "ABYSSAL_HOME": str(tmp_path / "home"), "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = str(ROOT / "src")
    args = [
        "data.synthetic_users=300",
        "data.synthetic_days=14",
        "model.hidden=16",
        "model.heads=2",
        "baselines=false",
        "train.epochs=2",
        "train.progress=false",
    ]
    cmd = [sys.executable, "-m", "abyssal", "train", "fraud", "--nproc", "2"]
    done = subprocess.run(
        [*cmd, "train.strategy=ddp", *args], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("registered fraud:1") == 1 and "fraud:2" not in done.stdout
    assert len(list((tmp_path / "home" / "runs").iterdir())) == 1
    evaluate = [sys.executable, "-m", "abyssal", "evaluate", "fraud:1", "train.device=cpu"]
    again = subprocess.run(evaluate, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "AUPRC" in again.stdout
