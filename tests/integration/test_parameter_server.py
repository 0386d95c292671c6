"""The ``parameter_server`` strategy in real processes: workers and servers on CPUs over gloo,
launched by ``torchrun`` (or spawned by hand where a process must die).

A toy regression MLP is trained by a loop that calls the strategy as the trainer does. Checked:
staleness 0 takes the same steps as one process on the global batch (clipping and a changing
learning rate included); staleness 2 converges and keeps its bound; the servers' states round-trip
through ``load_state`` into another topology; a killed worker fails the others within the
timeout; a launch without a worker is refused.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from abyssal.contracts.train_config import ParameterServerConfig, TrainConfig
from abyssal.core.devices import seed_everything
from abyssal.core.errors import AbyssalError
from abyssal.train.distributed import Launch
from abyssal.train.optim import build_optimizer, set_learning_rate
from abyssal.train.parameter_server import ParameterServerStrategy, ShardPlan
from abyssal.train.strategy import LocalStrategy

GLOBAL_BATCH = 16

TOY = textwrap.dedent(
    """
    import torch
    from torch import nn

    GLOBAL_BATCH = 16

    def build_model():
        return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 1))

    def dataset():
        g = torch.Generator().manual_seed(7)
        x = torch.randn(128, 6, generator=g)
        y = x @ torch.randn(6, 1, generator=g) + 0.05 * torch.randn(128, 1, generator=g)
        return x, y

    def global_batch(x, y, step):
        rows = (step * GLOBAL_BATCH + torch.arange(GLOBAL_BATCH)) % len(x)
        return x[rows], y[rows]

    def lr_factor(step, total):
        return 1.0 - 0.5 * step / total
    """
)

RANK_SCRIPT = textwrap.dedent(
    """
    import json, os, signal, sys, time
    import torch
    from toy import build_model, dataset, global_batch, lr_factor
    from abyssal.contracts.train_config import ParameterServerConfig, TrainConfig
    from abyssal.core.devices import seed_everything
    from abyssal.train.optim import build_optimizer, set_learning_rate
    from abyssal.train.strategy import make_strategy

    spec = json.loads(sys.argv[1])
    torch.set_num_threads(1)
    if spec["gate"]:  # start together: a short timeout_s must not count the imports
        open(f"{spec['gate']}.{os.environ['RANK']}", "w").close()
        while not all(os.path.exists(f"{spec['gate']}.{r}") for r in range(3)):
            time.sleep(0.05)
    cfg = TrainConfig(
        strategy="parameter_server", device="cpu", lr=spec["lr"], weight_decay=0.01,
        clip_grad_norm=spec["clip"], timeout_s=spec["timeout_s"],
        parameter_server=ParameterServerConfig(spec["servers"], spec["staleness"]),
    )
    strategy = make_strategy(cfg)
    seed_everything(0)


    def train():
        model = strategy.setup(build_model(), torch.device("cpu"))
        optimizer = build_optimizer(strategy.unwrap(model), cfg)
        scaler = torch.amp.GradScaler("cpu", enabled=False)
        out = {}
        if spec["load"]:
            saved = torch.load(spec["load"], weights_only=True)
            strategy.load_state(model, optimizer, saved["model"], saved["optimizer"])
            out["reloaded"] = {
                "model": strategy.model_state(model),
                "optimizer": strategy.optimizer_state(model, optimizer),
            }
        x, y = dataset()
        starts, returns = [], []
        for step in range(spec["start"], spec["start"] + spec["steps"]):
            if strategy.rank == spec["die_rank"] and step == spec["die_at"]:
                os.kill(os.getpid(), signal.SIGKILL)
            if strategy.rank == spec["slow_rank"]:
                time.sleep(spec["sleep"])
            bx, by = global_batch(x, y, step)
            part = slice(strategy.rank, None, strategy.world_size)
            bx, by = bx[part], by[part]
            torch.nn.functional.mse_loss(model(bx), by).backward()
            set_learning_rate(optimizer, lr_factor(step, spec["total"]))
            starts.append(time.monotonic())
            strategy.step(model, optimizer, scaler, cfg.clip_grad_norm)
            returns.append(time.monotonic())
        out["model"] = strategy.model_state(model)
        out["optimizer"] = strategy.optimizer_state(model, optimizer)
        with open(f"{spec['out']}.{strategy.rank}.json", "w") as times:
            json.dump({"push": starts, "return": returns}, times)
        if strategy.is_main:
            torch.save(out, spec["out"])


    ok = False
    try:  # as the trainer's api does: serve or train, then close (at once after an error)
        if strategy.trains:
            train()
        else:
            strategy.serve(build_model, cfg)
        ok = True
    finally:
        strategy.close(ok=ok)
    """
)


def _spec(tmp_path: Path, **changes) -> dict:
    spec = {
        "servers": 1,
        "staleness": 0,
        "lr": 0.02,
        "clip": 6.0,  # some steps clipped, some not
        "timeout_s": 60.0,
        "steps": 6,
        "start": 0,
        "total": 12,
        "load": None,
        "out": str(tmp_path / "result.pt"),
        "slow_rank": None,
        "sleep": 0.0,
        "die_rank": None,
        "die_at": -1,
        "gate": None,
    }
    return {**spec, **changes}


def _write_scripts(folder: Path) -> Path:
    (folder / "toy.py").write_text(TOY)
    script = folder / "rank.py"
    script.write_text(RANK_SCRIPT)
    return script


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(folder: Path) -> dict[str, str]:
    path = os.pathsep.join([str(folder), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path}


def _torchrun(folder: Path, nproc: int, spec: dict, timeout: float = 120) -> None:
    script = _write_scripts(folder)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc)]
    cmd += ["--master-port", str(_free_port()), str(script), json.dumps(spec)]
    done = subprocess.run(
        cmd, env=_env(folder), capture_output=True, text=True, timeout=timeout, cwd=folder
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]


def _toy():
    namespace: dict = {}
    exec(TOY, namespace)
    return namespace


def _train_locally(steps: int, start: int = 0, state: dict | None = None, clip: float = 6.0):
    """One process on the whole global batch: the reference."""
    toy = _toy()
    cfg = TrainConfig(device="cpu", lr=0.02, weight_decay=0.01, clip_grad_norm=clip)
    seed_everything(0)
    model = toy["build_model"]()
    optimizer = build_optimizer(model, cfg)
    strategy, scaler = LocalStrategy(cfg), torch.amp.GradScaler("cpu", enabled=False)
    if state is not None:
        strategy.load_state(model, optimizer, state["model"], state["optimizer"])
    x, y = toy["dataset"]()
    for step in range(start, start + steps):
        bx, by = toy["global_batch"](x, y, step)
        # the mean of the two workers' mean losses (equal halves): the mean over the batch
        loss = (
            nn.functional.mse_loss(model(bx[0::2]), by[0::2])
            + nn.functional.mse_loss(model(bx[1::2]), by[1::2])
        ) / 2
        loss.backward()
        set_learning_rate(optimizer, toy["lr_factor"](step, 12))
        strategy.step(model, optimizer, scaler, cfg.clip_grad_norm)
    return model, optimizer


def _assert_close_states(got: dict, want: dict, atol: float = 1e-5) -> None:
    assert set(got) == set(want)
    for key in want:
        torch.testing.assert_close(got[key], want[key], atol=atol, rtol=0, msg=key)


def _assert_close_optimizers(got: dict, want: dict, atol: float = 1e-5) -> None:
    assert got["param_groups"] == want["param_groups"]
    assert sorted(got["state"]) == sorted(want["state"]) == list(range(4))
    for index, state in want["state"].items():
        assert set(got["state"][index]) == set(state)
        for key, value in state.items():
            torch.testing.assert_close(got["state"][index][key], value, atol=atol, rtol=0)


@pytest.fixture(scope="module")
def synchronous_run(tmp_path_factory) -> Path:
    """Two workers and one server at staleness 0, 6 steps; the main worker's saved states."""
    folder = tmp_path_factory.mktemp("ps_sync")
    _torchrun(folder, 3, _spec(folder))
    return folder / "result.pt"


def test_staleness_zero_equals_one_process_on_the_global_batch(synchronous_run):
    saved = torch.load(synchronous_run, weights_only=True)
    model, optimizer = _train_locally(6)
    _assert_close_states(saved["model"], model.state_dict())
    _assert_close_optimizers(saved["optimizer"], optimizer.state_dict())
    seed_everything(0)
    untrained = _toy()["build_model"]().state_dict()
    assert not torch.allclose(saved["model"]["0.weight"], untrained["0.weight"], atol=1e-3)


def test_state_round_trips_into_one_worker_and_two_servers(tmp_path, synchronous_run):
    # resume the 2-worker, 1-server run on 1 worker and 2 servers, 6 more steps
    spec = _spec(tmp_path, servers=2, load=str(synchronous_run), start=6)
    _torchrun(tmp_path, 3, spec)
    saved = torch.load(synchronous_run, weights_only=True)
    resumed = torch.load(tmp_path / "result.pt", weights_only=True)
    _assert_close_states(resumed["reloaded"]["model"], saved["model"], atol=0)
    _assert_close_optimizers(resumed["reloaded"]["optimizer"], saved["optimizer"], atol=0)
    model, optimizer = _train_locally(6, start=6, state=saved)
    _assert_close_states(resumed["model"], model.state_dict())
    _assert_close_optimizers(resumed["optimizer"], optimizer.state_dict())


def test_bounded_staleness_converges_and_keeps_the_bound(tmp_path):
    steps, bound = 40, 2
    spec = _spec(tmp_path, staleness=bound, steps=steps, total=steps, slow_rank=1, sleep=0.03)
    _torchrun(tmp_path, 3, spec)
    fast = json.loads((tmp_path / "result.pt.0.json").read_text())
    slow = json.loads((tmp_path / "result.pt.1.json").read_text())
    # worker 0 got the answer to its push i only after worker 1 had pushed i - bound
    assert all(fast["return"][i] > slow["push"][i - bound] for i in range(bound, steps))
    # and it did run ahead: it finished a step before the slow worker pushed the one before
    assert any(fast["return"][i] < slow["push"][i - 1] for i in range(1, steps))
    toy = _toy()
    x, y = toy["dataset"]()
    seed_everything(0)
    model = toy["build_model"]()
    start = nn.functional.mse_loss(model(x), y).item()
    model.load_state_dict(torch.load(tmp_path / "result.pt", weights_only=True)["model"])
    end = nn.functional.mse_loss(model(x), y).item()
    assert end < 0.1 * start, (start, end)


def test_a_killed_worker_fails_the_others_within_the_timeout(tmp_path):
    script = _write_scripts(tmp_path)
    # 10 s: long enough that a slow, loaded machine does not time out before the kill
    spec = _spec(tmp_path, timeout_s=10.0, steps=200, total=200, die_rank=1, die_at=3)
    spec["gate"] = str(tmp_path / "ready")
    port, procs = _free_port(), []
    for rank in range(3):
        env = {**_env(tmp_path), "RANK": str(rank), "WORLD_SIZE": "3", "LOCAL_RANK": str(rank)}
        env.update(LOCAL_WORLD_SIZE="3", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        procs.append(
            subprocess.Popen(
                [sys.executable, str(script), json.dumps(spec)],
                env=env,
                cwd=tmp_path,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    outputs, deadline = [], time.monotonic() + 90
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=max(1.0, deadline - time.monotonic()))[0])
    except subprocess.TimeoutExpired:
        pytest.fail("a process still runs 90 s after a worker was killed (timeout_s=10)")
    finally:
        for proc in procs:
            proc.kill()
    assert procs[1].returncode == -9, outputs[1][-3000:]
    assert procs[0].returncode != 0 and procs[2].returncode != 0, outputs
    assert "worker 0 got no answer within train.timeout_s=10s" in outputs[0], outputs[0][-2000:]
    assert "no message from the workers within train.timeout_s=10s" in outputs[2], outputs[2][
        -2000:
    ]


def test_a_launch_without_workers_is_refused(tmp_path):
    script = _write_scripts(tmp_path)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"]
    cmd += ["--master-port", str(_free_port()), str(script), json.dumps(_spec(tmp_path, servers=2))]
    done = subprocess.run(cmd, env=_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "train.parameter_server.servers=2 leaves no worker among the 2 launched" in (
        done.stdout + done.stderr
    )


@pytest.mark.parametrize("servers, world", [(1, 1), (3, 3), (4, 2)])
def test_servers_must_leave_a_worker(servers, world):
    cfg = TrainConfig(parameter_server=ParameterServerConfig(servers=servers))
    with pytest.raises(AbyssalError, match=f"leaves no worker among the {world} launched"):
        ParameterServerStrategy(cfg, launch=Launch(0, world, 0, world))


def test_outside_torchrun_the_error_says_how_to_launch(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with pytest.raises(AbyssalError, match="torchrun --nproc-per-node N"):
        ParameterServerStrategy(TrainConfig(strategy="parameter_server"))


def test_nccl_is_refused():
    cfg = TrainConfig(backend="nccl")
    with pytest.raises(AbyssalError, match=r"train\.backend=gloo"):
        ParameterServerStrategy(cfg, launch=Launch(0, 2, 0, 2))


def test_shards_are_dealt_largest_first_to_the_least_loaded_server():
    sizes = [("a", 10), ("b", 70), ("c", 30), ("d", 30), ("e", 5)]
    plan = ShardPlan.deal(sizes, 2)
    assert plan.names == (("b", "e"), ("a", "c", "d"))  # model order within a server
    assert plan.numels == (75, 70)
    assert ShardPlan.deal(sizes, 3).numels == (70, 40, 35)
    with pytest.raises(AbyssalError, match="only 5 trainable parameter tensor"):
        ShardPlan.deal(sizes, 6)
