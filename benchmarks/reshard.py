"""A checkpoint written on N ranks, resumed on M: the trainer's sharded FSDP checkpoints across
world sizes, checked against an uninterrupted run.

Three launches of the same training (a small GPT on synthetic token sequences, a fixed global
batch dealt to the ranks by :class:`~abyssal.contracts.task.Shard`, FSDP with one shard per
process, ``fsdp.sharded_checkpoints``):

1. ``whole``: M ranks, uninterrupted, every step (and ``wide``: the same on N ranks, which
   shows how far two world sizes' float sums drift apart without any resume);
2. ``cut``: N ranks, every process stopped (``os._exit``) right after the checkpoint at step
   ``--cut``, as after a crash of the whole job; the checkpoint holds one file per rank;
3. ``resumed``: M ranks resuming that run (another world size: the optimizer state and the
   weights are resharded, the data position is carried in items).

The report gives the shard files the cut wrote, the resumed run's steps, and the largest
difference between the resumed and the uninterrupted final weights and validation losses, with
the seconds of each launch. On the CPU the processes talk over gloo (``--device cpu``, the code
path on any machine); on GPUs over NCCL, one GPU per rank (``--device cuda``: N GPUs needed).

Example:
    python benchmarks/reshard.py --device cpu --write-ranks 8 --resume-ranks 2 \
        --out benchmarks/results/reshard_cpu_8to2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "src"))

from abyssal.contracts.task import Shard  # noqa: E402
from abyssal.core.devices import derive_seed  # noqa: E402
from distributed_models import GPT  # noqa: E402


class Tokens:
    """A batch of token sequences (inputs and next-token targets); ``len`` is its item count,
    which a resume on another number of ranks counts in."""

    def __init__(self, tokens: torch.Tensor) -> None:
        self.tokens = tokens

    def __len__(self) -> int:
        return len(self.tokens)


def counting(rng: np.random.Generator, n: int, length: int, vocab: int) -> torch.Tensor:
    """``n`` sequences that count from a random start by a random stride of 1 to 4 (modulo
    ``vocab``): learnable, so the losses show training going on."""
    start = rng.integers(0, vocab, (n, 1))
    stride = rng.integers(1, 5, (n, 1))
    return torch.from_numpy((start + stride * np.arange(length)) % vocab).long()


class ReshardTask:
    """Next-token prediction on ``items`` random sequences; ``batch`` is the global batch, each
    rank taking its dealt share, so any world size trains the same steps."""

    def __init__(self, spec: Mapping[str, Any], world_size: int) -> None:
        self.spec = spec
        rng = np.random.default_rng(0)
        self.data = counting(rng, spec["items"], spec["seq_len"] + 1, spec["vocab"])
        self.val = counting(rng, 32, spec["seq_len"] + 1, spec["vocab"])
        if spec["batch"] % world_size:
            raise SystemExit(f"global batch {spec['batch']} does not divide over {world_size}")
        self.per_rank = spec["batch"] // world_size

    def build_model(self) -> nn.Module:
        s = self.spec
        return GPT(s["vocab"], s["dim"], s["layers"], s["heads"], s["seq_len"])

    def train_batches(self, epoch: int, shard: Shard) -> list[Tokens]:
        rows = shard.take(len(self.data), seed=derive_seed(0, epoch))
        return [Tokens(self.data[rows[i : i + self.per_rank]])
                for i in range(0, len(rows), self.per_rank)]  # fmt: skip

    def move_batch(self, batch: Tokens, device: Any) -> Tokens:
        return Tokens(batch.tokens.to(device))

    def training_loss(self, model: nn.Module, batch: Tokens) -> torch.Tensor:
        logits = model(batch.tokens[:, :-1])
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)), batch.tokens[:, 1:].reshape(-1))

    def val_batches(self, shard: Shard) -> list[Tokens]:
        return [Tokens(self.val[shard.take(len(self.val))])]

    def validation_step(self, model: nn.Module, batch: Tokens) -> dict[str, torch.Tensor]:
        logits = model(batch.tokens[:, :-1]).float()
        loss = F.cross_entropy(logits.transpose(1, 2), batch.tokens[:, 1:], reduction="none")
        return {"loss": loss.mean(dim=1)}

    def validation_metrics(self, outputs: Mapping[str, np.ndarray]) -> dict[str, float]:
        return {"val_loss": float(np.mean(outputs["loss"]))}


def worker(spec: dict[str, Any]) -> None:
    """One rank of one launch (under torchrun)."""
    from abyssal.contracts.train_config import FSDPConfig, TrainConfig
    from abyssal.train.api import fit_task

    torch.set_num_threads(1)
    world, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
    task = ReshardTask(spec, world)
    cfg = TrainConfig(
        epochs=spec["epochs"], lr=spec["lr"], progress=False, patience=0,
        eval_every_steps=spec["cut"], clip_grad_norm=1.0, device=spec["device"],
        strategy="fsdp", deterministic=spec["device"] == "cpu",
        fsdp=FSDPConfig(sharded_checkpoints=True, shard_modules=["Block"]),
    )  # fmt: skip

    def on_step(state: Any) -> None:
        if state.global_step == spec.get("exit_at"):  # the step after the checkpoint's
            os._exit(3)  # every process stops, as after a crash of the whole job

    fit = fit_task(task, cfg, metric="val_loss", mode="min", home=spec["home"],
                   on_step=on_step, resume=spec.get("resume"))  # fmt: skip
    if fit is not None and rank == 0:
        params = {k: v.detach().float().cpu().flatten().tolist()
                  for k, v in fit.model.state_dict().items()}  # fmt: skip
        Path(spec["out"]).write_text(json.dumps({"params": params, "history": fit.history}))


def launch(folder: Path, name: str, ranks: int, spec: dict[str, Any]) -> dict[str, Any]:
    """Run ``ranks`` processes of the worker; returns code, seconds, output and the stderr tail."""
    spec = {**spec, "out": str(folder / f"{name}.json")}
    path = folder / f"{name}.spec.json"
    path.write_text(json.dumps(spec))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR"):
        env.pop(key, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
           str(ranks), str(Path(__file__).resolve()), "--worker", str(path)]  # fmt: skip
    started = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=spec["timeout"])
    out = Path(spec["out"])
    return {
        "code": done.returncode,
        "seconds": round(time.perf_counter() - started, 2),
        "result": json.loads(out.read_text()) if out.exists() else None,
        "stderr": done.stderr[-2000:],
    }


def flat(result: Mapping[str, Any]) -> np.ndarray:
    return np.concatenate([np.asarray(v) for _, v in sorted(result["params"].items())])


def run(args: argparse.Namespace) -> dict[str, Any]:
    from abyssal.train.checkpoint import read_checkpoint

    folder = Path(args.work).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    spec = {"items": args.items, "batch": args.batch, "seq_len": args.seq_len, "vocab": args.vocab,
            "dim": args.dim, "layers": args.layers, "heads": args.heads, "epochs": args.epochs,
            "lr": args.lr, "cut": args.cut, "device": args.device,
            "timeout": args.timeout}  # fmt: skip
    whole = launch(folder, "whole", args.resume_ranks, {**spec, "home": str(folder / "h_whole")})
    wide = launch(folder, "wide", args.write_ranks, {**spec, "home": str(folder / "h_wide")})
    home = folder / "h_cut"
    stop = {**spec, "home": str(home), "exit_at": args.cut + 1}
    cut = launch(folder, "cut", args.write_ranks, stop)
    runs = sorted(p.name for p in (home / "runs").iterdir()) if (home / "runs").exists() else []
    checkpoint: dict[str, Any] = {}
    if len(runs) == 1:
        ckpt = read_checkpoint(home / "runs" / runs[0] / "checkpoints", "last")
        folder_ = ckpt.sharded_folder
        shards = sorted(p.name for p in folder_.iterdir()) if folder_ is not None else []
        state = ckpt.state
        checkpoint = {"run": runs[0], "global_step": state.global_step,
                      "world_size": state.world_size, "items_in_epoch": state.items_in_epoch,
                      "shard_files": [s for s in shards if s.endswith(".distcp")]}  # fmt: skip
    resumed = launch(folder, "resumed", args.resume_ranks,
                     {**spec, "home": str(home), "resume": runs[0] if runs else None})  # fmt: skip
    out: dict[str, Any] = {
        "spec": spec, "write_ranks": args.write_ranks, "resume_ranks": args.resume_ranks,
        "checkpoint": checkpoint,
    }  # fmt: skip
    launches = {"whole": whole, "wide": wide, "cut": cut, "resumed": resumed}
    out["seconds"] = {k: v["seconds"] for k, v in launches.items()}
    out["codes"] = {k: v["code"] for k, v in launches.items()}
    if whole["result"] and resumed["result"]:
        a, b = flat(whole["result"]), flat(resumed["result"])
        hw, hr = whole["result"]["history"], resumed["result"]["history"]
        out |= {
            "parameters": int(a.size),
            "max_abs_param_diff": float(np.max(np.abs(a - b))),
            "max_rel_param_diff": float(np.max(np.abs(a - b) / (np.abs(a) + 1e-6))),
            "wide_max_abs_param_diff": (
                float(np.max(np.abs(a - flat(wide["result"])))) if wide["result"] else None
            ),
            "whole_steps": [r["step"] for r in hw],
            "resumed_steps": [r["step"] for r in hr],
            "whole_val_loss": [r["val_loss"] for r in hw],
            "resumed_val_loss": [r["val_loss"] for r in hr],
        }
    else:
        out["errors"] = {k: v["stderr"] for k, v in (("whole", whole), ("resumed", resumed))
                         if v["result"] is None}  # fmt: skip
    return out


def markdown(result: Mapping[str, Any], env: Mapping[str, Any]) -> str:
    c, n, m = result["checkpoint"], result["write_ranks"], result["resume_ranks"]
    lines = [
        f"# A checkpoint written on {n} ranks, resumed on {m}",
        "",
        f"Measured {env['time']} on {env['machine']}; torch {env['torch']}; abyssal commit "
        f"{env['commit']}. Command: `{env['command']}`",
        "",
        f"FSDP with sharded checkpoints, {result['spec']['device']} "
        f"({'gloo' if result['spec']['device'] == 'cpu' else 'NCCL'}); a GPT of "
        f"{result.get('parameters', '?')} parameters ({result['spec']['layers']} blocks, dim "
        f"{result['spec']['dim']}) on {result['spec']['items']} synthetic sequences, global batch "
        f"{result['spec']['batch']}, {result['spec']['epochs']} epochs.",
        "",
        "| what | value |",
        "|---|---|",
        f"| cut: every process stopped after the checkpoint at step | {c.get('global_step')} "
        f"(world size {c.get('world_size')}, {c.get('items_in_epoch')} items into the epoch) |",
        f"| shard files in that checkpoint | {len(c.get('shard_files', []))} |",
        f"| resumed on {m} ranks: evaluation steps | {result.get('resumed_steps')} |",
        f"| uninterrupted on {m} ranks: evaluation steps | {result.get('whole_steps')} |",
        f"| largest difference of final weights, resumed vs uninterrupted | "
        f"{result.get('max_abs_param_diff', float('nan')):.3g} (relative "
        f"{result.get('max_rel_param_diff', float('nan')):.3g}) |",
        f"| for scale: the same, uninterrupted on {n} ranks vs on {m} (float sums in another "
        f"order) | {_num(result.get('wide_max_abs_param_diff'))} |",
        f"| final val_loss, resumed / uninterrupted | "
        f"{_last(result.get('resumed_val_loss'))} / {_last(result.get('whole_val_loss'))} |",
        f"| seconds: uninterrupted on {m} / on {n} / cut on {n} / resumed on {m} | "
        f"{' / '.join(str(result['seconds'][k]) for k in ('whole', 'wide', 'cut', 'resumed'))} |",
        f"| exit codes: uninterrupted on {m} / on {n} / cut / resumed | "
        f"{result['codes']['whole']} / {result['codes']['wide']} / {result['codes']['cut']} "
        f"(stopped on purpose after the checkpoint) / {result['codes']['resumed']} |",
    ]
    return "\n".join(lines) + "\n"


def _num(value: Any) -> str:
    return "-" if value is None else f"{value:.3g}"


def _last(values: Any) -> str:
    return f"{values[-1]:.5f}" if values else "-"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--write-ranks", type=int, default=8, help="ranks that write the checkpoint")
    p.add_argument("--resume-ranks", type=int, default=2, help="ranks that resume it")
    p.add_argument("--items", type=int, default=256)
    p.add_argument("--batch", type=int, default=32, help="global batch (divisible by both)")
    p.add_argument("--seq-len", type=int, default=32)
    p.add_argument("--vocab", type=int, default=256)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument(
        "--cut", type=int, default=12, help="checkpoint every CUT steps; stop after the first"
    )
    p.add_argument("--timeout", type=float, default=900.0)
    p.add_argument("--work", default="/tmp/abyssal-reshard")
    p.add_argument("--commit", help="the commit measured (the copy may lack git)")
    p.add_argument("--out", help="results file stem (.json and .md)")
    args = p.parse_args(argv)
    if args.worker:
        worker(json.loads(Path(args.worker).read_text()))
        return
    result = run(args)
    env = {
        "time": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.platform()}, {os.cpu_count()} CPU cores"
        + (f", {torch.cuda.get_device_name(0)}" if args.device == "cuda" else ""),
        "torch": torch.__version__,
        "commit": args.commit or _commit(),
        "command": "python benchmarks/reshard.py " + " ".join(sys.argv[1:]),
    }
    result["environment"] = env
    text = markdown(result, env)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out + ".json").write_text(json.dumps(result, indent=1) + "\n")
        Path(args.out + ".md").write_text(text)


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                              capture_output=True, text=True).stdout.strip() or "?"  # fmt: skip
    except OSError:
        return "?"


if __name__ == "__main__":
    main()
