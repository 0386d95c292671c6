"""A training process killed with SIGKILL, then resumed, ends exactly like an uninterrupted one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from abyssal.core.runs import Run
from abyssal.train.checkpoint import peek_checkpoint

SRC = Path(__file__).resolve().parents[2] / "src"
EPOCHS = 20

SCRIPT = textwrap.dedent(
    f"""
    import hashlib, json, sys, time
    from pathlib import Path

    import torch
    import torch.nn.functional as F
    from torch import nn

    from abyssal.core.runs import Run
    from abyssal.contracts.train_config import TrainConfig
    from abyssal.train.trainer import Trainer

    torch.set_num_threads(1)


    class SlowTask:
        def __init__(self):
            g = torch.Generator().manual_seed(7)
            self.x = torch.randn(64, 4, generator=g)
            self.y = (self.x @ torch.tensor([1.0, -2.0, 0.5, 1.5]) > 0).long()
            self.xv = torch.randn(32, 4, generator=g)
            self.yv = (self.xv @ torch.tensor([1.0, -2.0, 0.5, 1.5]) > 0).long()

        def build_model(self):
            return nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 2))

        def train_batches(self, epoch, shard):
            time.sleep(0.15)  # slow enough for the test to kill us mid-run
            perm = torch.randperm(64, generator=torch.Generator().manual_seed(epoch))
            return [(self.x[perm[i : i + 16]], self.y[perm[i : i + 16]]) for i in range(0, 64, 16)]

        def move_batch(self, batch, device):
            return tuple(t.to(device) for t in batch)

        def training_loss(self, model, batch):
            return F.cross_entropy(model(batch[0]), batch[1])

        def val_batches(self, shard):
            return [(self.xv, self.yv)]

        def validation_step(self, model, batch):
            return {{"logits": model(batch[0]), "label": batch[1]}}

        def validation_metrics(self, outputs):
            logits = torch.from_numpy(outputs["logits"])
            yv = torch.from_numpy(outputs["label"])
            acc = (logits.argmax(1) == self.yv).float().mean().item()
            return {{"accuracy": acc, "val_loss": F.cross_entropy(logits, yv).item()}}


    def weights_hash(model):
        digest = hashlib.sha256()
        for key, value in sorted(model.state_dict().items()):
            digest.update(key.encode() + value.detach().cpu().numpy().tobytes())
        return digest.hexdigest()


    mode, out = sys.argv[1], Path(sys.argv[2])
    cfg = TrainConfig(
        epochs={EPOCHS}, lr=0.02, patience=0, checkpoint_every=1, progress=False, device="cpu"
    )
    run = Run.create("train", "toy", cfg) if mode == "fresh" else Run.open(sys.argv[3])
    result = Trainer(SlowTask(), cfg, run, metric="accuracy").fit(resume=mode == "resume")
    history = [{{k: v for k, v in row.items() if k != "time"}} for row in result.history]
    out.write_text(json.dumps({{
        "run": run.id, "weights": weights_hash(result.model), "best": result.best_metrics,
        "best_epoch": result.best_epoch, "epochs_run": result.epochs_run, "history": history,
    }}))
    """
)


def _start(script: Path, home: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "ABYSSAL_HOME": str(home), "PYTHONPATH": str(SRC)}
    return subprocess.Popen(
        [sys.executable, str(script), *map(str, args)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(proc: subprocess.Popen, out: Path) -> dict:
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, f"training process failed:\n{stdout}\n{stderr}"
    return json.loads(out.read_text())


def _wait_for_epoch(home: Path, proc: subprocess.Popen, epoch: int) -> str:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"process ended early:\n{proc.communicate()[1]}"
        runs = list((home / "runs").glob("*/checkpoints"))
        meta = peek_checkpoint(runs[0], "last") if runs else None
        if meta is not None and meta["state"]["epoch"] >= epoch:
            return runs[0].parent.name
        time.sleep(0.02)
    proc.kill()
    raise AssertionError(f"no checkpoint for epoch {epoch} within 60 s")


def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path):
    script = tmp_path / "train_toy.py"
    script.write_text(SCRIPT)
    straight = _start(script, tmp_path / "home_a", "fresh", tmp_path / "straight.json")
    victim = _start(script, tmp_path / "home_b", "fresh", tmp_path / "unused.json")
    try:
        run_id = _wait_for_epoch(tmp_path / "home_b", victim, 3)
        victim.send_signal(signal.SIGKILL)
        victim.communicate(timeout=30)
    finally:
        if victim.poll() is None:
            victim.kill()
    assert victim.returncode == -signal.SIGKILL
    run = Run.open(run_id, root=tmp_path / "home_b")
    assert run.info["status"] == "running"  # killed: no chance to record anything
    assert run.status == "interrupted"  # ... but nobody holds its lock any more
    killed_at = peek_checkpoint(run.checkpoint_dir, "last")["state"]["epoch"]
    assert 3 <= killed_at < EPOCHS - 1

    resumed_proc = _start(script, tmp_path / "home_b", "resume", tmp_path / "resumed.json", run_id)
    resumed = _finish(resumed_proc, tmp_path / "resumed.json")
    expected = _finish(straight, tmp_path / "straight.json")

    assert resumed["run"] == run_id
    assert resumed["weights"] == expected["weights"]
    assert resumed["history"] == expected["history"]
    assert (resumed["best"], resumed["best_epoch"]) == (expected["best"], expected["best_epoch"])
    assert resumed["epochs_run"] == EPOCHS
    run = Run.open(run_id, root=tmp_path / "home_b")
    assert run.status == "completed"
    assert [row["epoch"] for row in run.metrics_history()] == list(range(EPOCHS))
    assert f"resumed after epoch {killed_at}" in (run.path / "log.txt").read_text()
