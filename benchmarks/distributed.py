"""Distributed training benchmark: throughput and scaling of the trainer's ``ddp``, ``fsdp`` and
``parameter_server`` strategies against a hand-written PyTorch DDP loop, on synthetic data.

One call measures every configuration that fits the machine: for each number of GPUs ``n`` in
1, 2, 4, ... up to ``--gpus``, each model (torchvision ResNet-50; a GPT-style language model),
eager and ``torch.compile``:

- the plain DDP loop (``distributed_models.plain_ddp_loop``) and the trainer under ``ddp`` (and
  ``fsdp``) in the same ``torchrun`` launch, one after the other, with the same model, batch per
  GPU, bf16 autocast, channels_last, AdamW, clipping and data;
- scaling efficiency = throughput(n) / (n x throughput(1)); trainer / plain = the trainer's
  throughput over the plain loop's at the same n and mode;
- the memory demonstration: a language model whose fp32 parameters, gradients and AdamW state
  exceed a per-process GPU memory cap (``torch.cuda.set_per_process_memory_fraction``) runs out
  of memory under ``ddp`` and trains under ``fsdp`` (with CPU offload on one GPU; sharded
  without offload on ``--gpus`` GPUs), with the peak memory of each rank;
- ``parameter_server``: ``n`` workers on the GPUs and one server process on the CPU.

Throughput is timed from the end of step ``--warmup`` to the end of step ``--steps`` (the device
synchronised at both ends), summed over the training processes. Each launch is a ``torchrun``
subprocess; every rank writes its own record, merged here. Results are written after every
launch, so a run stopped by ``--budget-s`` (remaining configurations recorded as skipped) or
killed keeps what it measured.

Usage:
    python benchmarks/distributed.py --quick                      # CPU, gloo, tiny sizes
    PYTHONPATH=src python3 benchmarks/distributed.py --gpus 1 --commit SHA --out $OUT/dist_cuda

Writes ``benchmarks/results/distributed_<cuda|cpu>.json`` and ``.md`` (``--out`` overrides).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).parent))
from environment import environment, write_result

RESULTS = Path(__file__).parent / "results"
GIB = 2**30
SIZES = {
    "full": {
        "resnet50": {"batch": 256, "image_size": 224},
        "lm": {"batch": 16, "vocab": 50304, "dim": 768, "layers": 12, "heads": 12, "seq_len": 1024},
        # 354M parameters: 5.3 GiB of fp32 parameters, gradients and AdamW moments; about
        # 0.8 GiB of activations and logits per 512-token sequence
        "memory": {
            "batch": 1,
            "vocab": 50304,
            "dim": 1024,
            "layers": 24,
            "heads": 16,
            "seq_len": 512,
        },
    },
    "quick": {
        "resnet50": {"batch": 2, "image_size": 32},
        "lm": {"batch": 2, "vocab": 128, "dim": 32, "layers": 2, "heads": 2, "seq_len": 16},
        "memory": {"batch": 2, "vocab": 128, "dim": 32, "layers": 2, "heads": 2, "seq_len": 16},
    },
}
LR, WEIGHT_DECAY = 3e-4, 1e-4


# ---------------------------------------------------------------- the plan (launches and jobs)


def plan(args: argparse.Namespace, cuda: bool) -> list[dict]:
    """The launches, most important first: eager, the memory demonstration, compiled, then the
    parameter server. A launch is ``{"nproc", "jobs"}``; its jobs run one after the other."""
    sizes = SIZES["quick" if args.quick else "full"]
    counts = [n for n in (1, 2, 4, 8, 16) if n <= args.gpus]
    modes = {"off": [False], "on": [True], "both": [False, True]}[args.compile]
    parts = set(args.parts.split(","))
    launches: list[dict] = []
    for compiled in modes:
        for model in args.models.split(","):
            for n in counts:
                jobs = [_job(args, sizes, model, "plain", "ddp", compiled, n)]
                jobs.append(_job(args, sizes, model, "trainer", "ddp", compiled, n))
                if "fsdp" in parts and (cuda or n > 1) and (not compiled or model == "lm"):
                    jobs.append(_fsdp_job(args, sizes, model, compiled, n))
                launches.append({"nproc": n, "jobs": jobs})
        if not compiled and "memory" in parts:
            launches += _memory_launches(args, sizes, cuda, counts[-1])
    if "ps" in parts:
        for n in sorted({1, counts[-1]}):
            job = _job(args, sizes, args.ps_model, "trainer", "parameter_server", False, n)
            job["steps"], job["warmup"] = args.ps_steps, args.ps_warmup
            launches.append({"nproc": n + 1, "jobs": [job]})
    return launches


def _job(
    args: argparse.Namespace,
    sizes: dict,
    model: str,
    runner: str,
    strategy: str,
    compiled: bool,
    n: int,
) -> dict:
    mode = "compiled" if compiled else "eager"
    extra = {"resnet50": {"batch": args.batch}, "lm": {"batch": args.lm_batch}}.get(model, {})
    return {
        "id": f"{model}-{mode}-{runner}-{strategy}-n{n}",
        "kind": "throughput",
        "model": model,
        "runner": runner,
        "strategy": strategy,
        "mode": mode,
        "compile": compiled,
        "n": n,
        "sizes": {**sizes[model], **{k: v for k, v in extra.items() if v}},
        "steps": args.steps,
        "warmup": args.warmup,
        "device": args.device,
        "precision": "auto",
        "clip": args.clip,
        "validate": not compiled,  # a compiled model would compile again for inference
        "cpu_offload": False,
        "memory_cap_gib": None,
        "ps_staleness": args.ps_staleness,
        "lr": LR,
        "weight_decay": WEIGHT_DECAY,
        "note": None,
    }


def _fsdp_job(args: argparse.Namespace, sizes: dict, model: str, compiled: bool, n: int) -> dict:
    job = _job(args, sizes, model, "trainer", "fsdp", compiled, n)
    if model == "resnet50":  # FSDP2 shards contiguous parameters only; the images stay NHWC
        job["sizes"]["channels_last_weights"] = False
        job["note"] = "weights NCHW (FSDP2 refuses channels_last parameters), inputs NHWC"
    return job


def _memory_launches(args: argparse.Namespace, sizes: dict, cuda: bool, most: int) -> list[dict]:
    """ddp (expected to run out of memory) and fsdp under the cap, on one GPU (fsdp with CPU
    offload) and on ``most`` GPUs (fsdp sharded, no offload)."""
    if not cuda:
        return []
    launches = []
    for n in sorted({1, most}):
        for strategy in ("ddp", "fsdp"):
            job = _job(args, sizes, "lm", "trainer", strategy, False, n)
            offload = strategy == "fsdp" and n == 1
            job.update(
                kind="memory",
                sizes=sizes["memory"],
                steps=args.memory_steps,
                warmup=1,
                memory_cap_gib=args.memory_cap_gib,
                cpu_offload=offload,
                validate=False,
                id=f"memory-lm-{strategy}{'-offload' if offload else ''}-n{n}",
            )
            launches.append({"nproc": n, "jobs": [job]})
    return launches


# ---------------------------------------------------------------- running the launches


def run_all(args: argparse.Namespace, cuda: bool, save: Any) -> list[dict]:
    """Run every planned launch within the budget; ``save(rows)`` after each."""
    deadline = time.time() + args.budget_s
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="abyssal-dist-") as tmp:
        for index, launch in enumerate(plan(args, cuda)):
            names = ", ".join(j["id"] for j in launch["jobs"])
            if time.time() > deadline - 10:
                print(f"[skip] {names}: time budget spent", flush=True)
                rows += [_skipped(j, "time budget spent") for j in launch["jobs"]]
                continue
            print(f"[launch {index + 1}] {launch['nproc']} process(es): {names}", flush=True)
            records = _launch(launch, Path(tmp) / f"launch{index}", deadline, args)
            for job in launch["jobs"]:
                row = merge(job, records.get(job["id"], []))
                rows.append(row)
                print(f"    {summary_line(row)}", flush=True)
            save(derive(rows))
    return derive(rows)


def _launch(launch: dict, folder: Path, deadline: float, args: argparse.Namespace) -> dict:
    """One ``torchrun`` subprocess running the launch's jobs; each rank's records by job id."""
    folder.mkdir(parents=True)
    for job in launch["jobs"]:
        job["port"] = _free_port()
    spec = {
        "jobs": launch["jobs"],
        "deadline": deadline,
        "folder": str(folder),
        "cudnn_benchmark": args.cudnn_benchmark,
    }
    (folder / "spec.json").write_text(json.dumps(spec))
    nproc = launch["nproc"]
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        str(Path(__file__).resolve().parent / "distributed_models.py"),
        str(folder / "spec.json"),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // nproc))}
    log = folder / "log.txt"
    with log.open("w") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)  # fmt: skip
        try:
            code = proc.wait(timeout=max(1.0, deadline - time.time()) + args.grace_s)
        except subprocess.TimeoutExpired:
            _stop(proc)
            code = "killed (time budget spent)"
    records: dict[str, list[dict]] = {}
    for path in sorted(folder.glob("*/rank*.json")):
        records.setdefault(path.parent.name, []).append(json.loads(path.read_text()))
    failed = any(r.get("status") == "error" for rs in records.values() for r in rs)
    if code != 0 or failed:
        print(f"    launch ended with {code}; log tail:\n{_tail(log, 40)}", flush=True)
    if code != 0:
        for job in launch["jobs"]:
            records.setdefault(job["id"], [{"status": "error", "error": f"launch: {code}"}])
    return records


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _stop(proc: subprocess.Popen) -> None:
    """End the launch's process group (torchrun and its workers), started by us."""
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=wait)
            return


def _tail(path: Path, lines: int) -> str:
    text = path.read_text(errors="replace").splitlines() if path.exists() else []
    return "\n".join("      " + line for line in text[-lines:])


def _skipped(job: dict, reason: str) -> dict:
    return {**merge(job, []), "status": "skipped", "error": reason}


# ---------------------------------------------------------------- results


def _describe(job: dict) -> dict:
    keep = ("id", "kind", "model", "runner", "strategy", "mode", "n", "steps", "warmup", "sizes")
    out = {k: job[k] for k in keep}
    out.update(batch=job["sizes"]["batch"], cpu_offload=job["cpu_offload"])
    out.update(memory_cap_gib=job["memory_cap_gib"], clip=job["clip"], note=job["note"])
    return out


def merge(job: dict, records: list[dict]) -> dict:
    """One row from the ranks' records: throughput summed over the training processes."""
    row = _describe(job)
    bad = [r for r in records if r.get("status") not in ("ok", None)]
    training = [r for r in records if r.get("trains", True) and r.get("seconds")]
    row["status"] = bad[0]["status"] if bad else ("ok" if training else "error")
    row["error"] = bad[0].get("error") if bad else (None if training else "no rank reported")
    if not records:
        row["error"] = "no rank reported (see the launch log above)"
    items = sum(job["sizes"]["batch"] * r["timed_steps"] / r["seconds"] for r in training)
    row["items_per_s"] = items or None
    seq = job["sizes"].get("seq_len")
    row["tokens_per_s"] = items * seq if seq and items else None
    row["step_ms"] = (
        1000 * sum(r["seconds"] / r["timed_steps"] for r in training) / len(training)
        if training
        else None
    )
    ranked = sorted(records, key=lambda r: r.get("rank", 0))
    row["peak_gib_per_rank"] = [_gib(r.get("peak_allocated")) for r in ranked]
    row["job_peak_gib_per_rank"] = [_gib(r.get("job_peak_allocated")) for r in ranked]
    row["cpu_maxrss_gib_per_rank"] = [_gib(r.get("cpu_maxrss")) for r in ranked]
    row["trains_per_rank"] = [r.get("trains", True) for r in ranked]
    first = ranked[0] if ranked else {}
    for key in ("val_loss", "last_loss", "state_bytes", "wall_s", "after_error"):
        row[key] = first.get(key)
    return row


def _gib(value: float | None) -> float | None:
    return None if value is None else round(value / GIB, 3)


def derive(rows: list[dict]) -> list[dict]:
    """Add scaling efficiency (against n = 1 of the same model, mode, runner, strategy) and the
    trainer / plain-loop ratio (same model, mode and n)."""

    def find(**match: Any) -> dict | None:
        for r in rows:
            usable = r["kind"] == "throughput" and r["status"] == "ok" and r["items_per_s"]
            if usable and all(r[k] == v for k, v in match.items()):
                return r
        return None

    for row in rows:
        row["scaling_efficiency"] = row["vs_plain"] = None
        if row["kind"] != "throughput" or not row["items_per_s"]:
            continue
        same = {k: row[k] for k in ("model", "mode", "runner", "strategy")}
        one = find(**same, n=1)
        if one is not None:
            row["scaling_efficiency"] = row["items_per_s"] / (row["n"] * one["items_per_s"])
        plain = find(model=row["model"], mode=row["mode"], runner="plain", n=row["n"])
        if row["runner"] == "trainer" and plain is not None:
            row["vs_plain"] = row["items_per_s"] / plain["items_per_s"]
    return rows


def summary_line(row: dict) -> str:
    if row["status"] != "ok":
        return f"{row['id']}: {row['status']} {row.get('error') or ''}".strip()[:300]
    peak = ", ".join(f"{p:.2f}" for p in row["peak_gib_per_rank"] if p is not None) or "-"
    return (
        f"{row['id']}: {_rate(row)}, {row['step_ms']:.1f} ms/step, peak GiB/rank [{peak}], "
        f"val_loss {row['val_loss']}, wall {row['wall_s']:.0f} s"
    )


def _rate(row: dict) -> str:
    if row["tokens_per_s"]:
        return f"{row['tokens_per_s']:,.0f} tok/s"
    return f"{row['items_per_s']:,.0f} img/s" if row["items_per_s"] else "-"


# scaling efficiency of the trainer's ResNet-50 under ddp, per number of GPUs
SCALING_TARGETS = {2: 0.95, 4: 0.95, 8: 0.92}


def targets(rows: list[dict], gpus: int, cuda: bool = True) -> list[dict]:
    """The issue's targets, each with what was measured and whether it was met. Without
    ``cuda`` the processes share the CPU's cores: the figures show the code path and no target
    is judged (``met`` None)."""
    out = []
    ok = [r for r in rows if r["kind"] == "throughput" and r["status"] == "ok"]
    for mode in ("eager", "compiled"):
        for n, goal in SCALING_TARGETS.items():
            hit = [r for r in ok if r["mode"] == mode and r["n"] == n and r["strategy"] == "ddp"]
            hit = [r for r in hit if r["runner"] == "trainer" and r["model"] == "resnet50"]
            if not hit and n > gpus and n > 4:
                continue  # the 8-GPU target appears where a run could reach it
            reason = f"not run (--gpus {gpus})" if n > gpus else "not run"
            measured = f"{hit[0]['scaling_efficiency']:.3f}" if hit else reason
            met = bool(hit) and (hit[0]["scaling_efficiency"] or 0) >= goal
            name = f"ResNet-50 trainer ddp {mode}: scaling efficiency >= {goal} on {n} GPUs"
            out.append({"target": name, "measured": measured, "met": met if hit else None})
    for r in ok:
        if r["runner"] == "trainer" and r["strategy"] == "ddp" and r["vs_plain"]:
            out.append(
                {
                    "target": f"{r['model']} {r['mode']} n={r['n']}: trainer >= 0.97 x plain loop",
                    "measured": f"{r['vs_plain']:.3f}",
                    "met": r["vs_plain"] >= 0.97,
                }
            )
    compiled = [r for r in rows if r["mode"] == "compiled" and r["runner"] == "trainer"]
    if compiled:
        good = [r["id"] for r in compiled if r["status"] == "ok"]
        out.append(
            {
                "target": "compiled training available (train.compile=true)",
                "measured": f"{len(good)}/{len(compiled)} compiled trainer runs ok",
                "met": len(good) == len(compiled),
            }
        )
    out += _memory_targets(rows)
    if not cuda:
        for t in out:
            t["measured"] += " (CPU processes: the code path, not a target's measure)"
            t["met"] = None
    return out


def _memory_targets(rows: list[dict]) -> list[dict]:
    out = []
    memory = [r for r in rows if r["kind"] == "memory"]
    for n in sorted({r["n"] for r in memory}):
        ddp = next((r for r in memory if r["n"] == n and r["strategy"] == "ddp"), None)
        fsdp = next((r for r in memory if r["n"] == n and r["strategy"] == "fsdp"), None)
        if ddp is None or fsdp is None:
            continue
        how = "with CPU offload" if fsdp["cpu_offload"] else "sharded, no offload"
        out.append(
            {
                "target": f"LM state over the {ddp['memory_cap_gib']} GiB cap on {n} GPU(s): "
                f"ddp out of memory, fsdp ({how}) trains",
                "measured": f"ddp {ddp['status']}, fsdp {fsdp['status']}",
                "met": ddp["status"] == "oom" and fsdp["status"] == "ok",
            }
        )
    return out


def markdown(result: dict) -> str:
    env, s = result["environment"], result["settings"]
    gpu = env["machine"].get("gpu")
    where = f"{env['gpu_count']} x {gpu} (" if gpu else "CPU processes only ("
    lines = [
        f"# Distributed training on {result['tag']}",
        "",
        f"Measured {env['date']} on {where}{env['machine']['cpu']}, "
        f"{env['machine']['cores']} cores), torch {env['versions']['torch']} (CUDA "
        f"{env['cuda']}, NCCL {env['nccl']}), torchvision {env['versions']['torchvision']}, "
        f"abyssal commit {env['git_commit']}. Command: `{result['command']}`",
        "",
        f"Synthetic data on the device; per-GPU batch: ResNet-50 {s['resnet50']}, LM {s['lm']}; "
        f"steps {s['steps']} with the first {s['warmup']} untimed; precision {s['precision']}; "
        f"AdamW lr {LR}, weight decay {WEIGHT_DECAY} (>= 2-D tensors); gradient clipping "
        f"{s['clip']} in both the trainer and the plain loop; cudnn.benchmark "
        f"{s['cudnn_benchmark']}; train.deterministic false. Items/s sum over the training "
        "processes; scaling efficiency = items/s(N) / (N x items/s(1)) of the same row kind; "
        "'/ plain DDP' = the row's throughput over the plain DDP loop's at the same N and mode.",
        "",
        "| model | mode | runner | strategy | N | throughput | step ms | scaling eff. | "
        "/ plain DDP | peak GiB/rank | val_loss | status |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        if r["kind"] == "throughput":
            lines.append(_table_row(r))
    memory = [r for r in result["rows"] if r["kind"] == "memory"]
    if memory:
        state = next((r["state_bytes"] for r in memory if r.get("state_bytes")), None)
        lines += [
            "",
            "## Memory: a model whose training state does not fit the capped GPU",
            "",
            f"Each process may use at most {s['memory_cap_gib']} GiB of its GPU "
            "(`torch.cuda.set_per_process_memory_fraction`). The LM "
            f"({memory[0]['sizes']}) holds "
            + (f"{state / GIB:.2f} GiB" if state else "(unknown)")
            + " of fp32 parameters, gradients and AdamW moments (16 bytes per parameter). Peak "
            "memory is `torch.cuda.max_memory_allocated` when the last step ends, or, for a run "
            "out of memory, before the allocation that failed.",
            "",
            "| strategy | N | CPU offload | status | peak GPU GiB/rank | CPU RSS GiB/rank "
            "| tokens/s | note |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in memory:
            peak = r["peak_gib_per_rank"] if r["status"] == "ok" else r["job_peak_gib_per_rank"]
            lines.append(
                f"| {r['strategy']} | {r['n']} | {r['cpu_offload']} | {r['status']} | "
                f"{_list(peak)} | "
                f"{_list(r['cpu_maxrss_gib_per_rank'])} | {_num(r['tokens_per_s'])} | "
                f"{_note(r)} |"
            )
    lines += ["", "## Targets", "", "| target | measured | met |", "|---|---|---|"]
    for t in result["targets"]:
        met = {True: "yes", False: "no", None: "not measured"}[t["met"]]
        lines.append(f"| {t['target']} | {t['measured']} | {met} |")
    lines += ["", "Anchor (plain PyTorch, torch 2.11, H200, bf16, batch 256): ResNet-50 about "
              "4,700 images/s eager, 6,700 compiled on one GPU; plain DDP scaling 0.977 on 2 "
              "GPUs, 0.972 on 4.", ""]  # fmt: skip
    return "\n".join(lines)


def _table_row(r: dict) -> str:
    cells = [
        r["model"],
        r["mode"],
        r["runner"],
        r["strategy"],
        str(r["n"]),
        _rate(r),
        _num(r["step_ms"], 1),
        _num(r["scaling_efficiency"], 3),
        _num(r["vs_plain"], 3),
        _list(r["peak_gib_per_rank"]),
        _num(r["val_loss"], 4),
        f"{r['status']}: {_note(r)}" if _note(r) else r["status"],
    ]
    return "| " + " | ".join(cells) + " |"


def _num(value: float | None, digits: int = 0) -> str:
    if value is None or value != value:  # None or NaN
        return "-"
    return f"{value:,.{digits}f}"


def _list(values: list) -> str:
    shown = [f"{v:.2f}" for v in values if v is not None]
    return ", ".join(shown) or "-"


def _note(r: dict) -> str:
    text = r.get("error") or r.get("after_error") or r.get("note") or ""
    return text.replace("|", "/").replace("\n", " ")[:160]


# ---------------------------------------------------------------- entry point


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--gpus", type=int, default=None, help="largest N (default: all GPUs, or 2)")
    p.add_argument("--models", default="resnet50,lm")
    p.add_argument("--parts", default="fsdp,memory,ps", help="beyond ddp: fsdp, memory, ps")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps per run")
    p.add_argument("--warmup", type=int, default=None, help="untimed first steps")
    p.add_argument("--batch", type=int, default=None, help="ResNet-50 images per GPU (256)")
    p.add_argument("--lm-batch", type=int, default=None, help="LM sequences per GPU (16)")
    p.add_argument("--compile", choices=("both", "on", "off"), default=None)
    p.add_argument("--clip", type=float, default=1.0, help="gradient clip norm; 0: none")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--cudnn-benchmark", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--memory-cap-gib", type=float, default=4.0)
    p.add_argument("--memory-steps", type=int, default=4)
    p.add_argument("--ps-model", default="resnet50")
    p.add_argument("--ps-steps", type=int, default=None)
    p.add_argument("--ps-warmup", type=int, default=None)
    p.add_argument("--ps-staleness", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="tiny sizes on CPU processes (gloo)")
    p.add_argument(
        "--budget-s", type=float, default=None, help="skip what would start later (520; quick 170)"
    )
    p.add_argument("--grace-s", type=float, default=20.0, help="past the budget, then kill")
    p.add_argument("--commit", default=None, help="the commit measured (the copy may lack git)")
    p.add_argument("--out", type=Path, default=None, help="results file stem")
    args = p.parse_args(argv)
    quick = args.quick
    if quick:
        args.device = "cpu"
    defaults = {
        "gpus": 2 if quick or not torch.cuda.is_available() else torch.cuda.device_count(),
        "steps": 4 if quick else 60,
        "warmup": 1 if quick else 10,
        "compile": "off" if quick else "both",
        "ps_steps": 4 if quick else 20,
        "ps_warmup": 1 if quick else 5,
        "budget_s": 170.0 if quick else 520.0,
    }
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.clip = args.clip or None
    if args.device != "cpu" and torch.cuda.is_available() and args.gpus > torch.cuda.device_count():
        p.error(f"--gpus {args.gpus}, but this machine has {torch.cuda.device_count()} GPU(s)")
    if not 1 <= args.warmup < args.steps or not 1 <= args.ps_warmup < args.ps_steps:
        p.error("need 1 <= --warmup < --steps (and the same for --ps-*)")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    cuda = args.device != "cpu" and torch.cuda.is_available()
    tag = "cuda" if cuda else ("cpu_quick" if args.quick else "cpu")
    out = args.out or RESULTS / f"distributed_{tag}"
    result: dict[str, Any] = {"tag": tag, "command": "python " + " ".join(sys.argv)}
    result["environment"] = _environment(args.commit)
    result["settings"] = {
        "resnet50": args.batch or SIZES["quick" if args.quick else "full"]["resnet50"]["batch"],
        "lm": args.lm_batch or SIZES["quick" if args.quick else "full"]["lm"]["batch"],
        "steps": args.steps,
        "warmup": args.warmup,
        "precision": "bf16 autocast" if cuda else "fp32",
        "clip": args.clip,
        "cudnn_benchmark": args.cudnn_benchmark,
        "memory_cap_gib": args.memory_cap_gib,
        "gpus": args.gpus,
        "budget_s": args.budget_s,
    }

    def save(rows: list[dict]) -> None:
        result.update(rows=rows, targets=targets(rows, args.gpus, cuda))
        _write(result, out)

    started = time.perf_counter()
    save(run_all(args, cuda, save))
    result["wall_s"] = round(time.perf_counter() - started, 1)
    write_result(result, out, markdown)


def _write(result: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    out.with_suffix(".md").write_text(markdown(result))


def _environment(commit: str | None) -> dict:
    env = environment(("torch", "torchvision", "numpy"))
    if commit:
        env["git_commit"] = commit
    cuda = torch.cuda.is_available()
    env["gpu_count"] = torch.cuda.device_count() if cuda else 0
    env["gpu_memory_gib"] = (
        round(torch.cuda.get_device_properties(0).total_memory / GIB, 1) if cuda else None
    )
    env["cuda"] = torch.version.cuda
    env["nccl"] = str(torch.cuda.nccl.version()) if cuda else None
    return env


if __name__ == "__main__":
    main()
