"""Validation across processes: each rank scores its shard, the outputs are gathered over
torch.distributed (gloo, two real CPU processes), and metrics computed on the whole set equal a
single process's, where averaging the ranks' own AUPRCs would not."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from abyssal.contracts.task import Shard
from abyssal.core.config import load_config
from abyssal.core.devices import seed_everything
from abyssal.solutions import get_solution
from abyssal.train.strategy import LocalStrategy
from abyssal.train.trainer import validate_task

OVERRIDES = [
    "data.synthetic_users=300",
    "data.synthetic_rings=3",
    "data.synthetic_days=14",
    "model.hidden=16",
    "model.heads=2",
]

RANK_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import torch, torch.distributed as dist
    rank, world, init, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    overrides = json.loads(sys.argv[5])
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    torch.set_num_threads(1)
    from abyssal.contracts.task import Shard
    from abyssal.core.config import load_config
    from abyssal.core.devices import seed_everything
    from abyssal.solutions import get_solution
    from abyssal.train.strategy import LocalStrategy, gather_outputs
    from abyssal.train.trainer import validate_task

    class OwnShard(LocalStrategy):
        shard = Shard(rank, world)
        is_main = rank == 0

    class GlooStrategy(OwnShard):
        def gather(self, outputs):
            return gather_outputs(outputs)

    sol = get_solution("fraud")
    cfg = load_config(sol.config_cls, None, overrides)
    task = sol.task(cfg, sol.prepare(cfg))
    seed_everything(0)
    model = task.build_model()
    gathered = validate_task(task, model, GlooStrategy(), torch.device("cpu"))
    own = validate_task(task, model, OwnShard(), torch.device("cpu"))
    rows = len(task.val_batches(Shard(rank, world))[0].nodes)
    dist.destroy_process_group()
    json.dump({"gathered": gathered, "own": own, "rows": rows}, open(out, "w"))
    """
)


@pytest.fixture(scope="module")
def single_process() -> dict:
    sol = get_solution("fraud")
    cfg = load_config(sol.config_cls, None, OVERRIDES)
    task = sol.task(cfg, sol.prepare(cfg))
    seed_everything(0)
    model = task.build_model()
    metrics = validate_task(task, model, LocalStrategy(), torch.device("cpu"))
    return {"metrics": metrics, "rows": len(task.val_batches(Shard())[0].nodes)}


def test_two_gloo_ranks_gather_outputs_into_single_process_metrics(tmp_path, single_process):
    world = 2
    init = f"file://{tmp_path / 'rendezvous'}"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                RANK_SCRIPT,
                str(rank),
                str(world),
                init,
                str(tmp_path / f"rank{rank}.json"),
                json.dumps(OVERRIDES),
            ],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in range(world)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(world)]
    expected = single_process["metrics"]
    assert sum(r["rows"] for r in ranks) == single_process["rows"]
    assert min(r["rows"] for r in ranks) > 0
    for r in ranks:
        assert r["gathered"].keys() == expected.keys()
        for key, value in expected.items():
            assert r["gathered"][key] == pytest.approx(value, abs=1e-9), key
    averaged = sum(r["own"]["val_auprc"] for r in ranks) / world
    assert averaged != pytest.approx(expected["val_auprc"], abs=1e-6)
