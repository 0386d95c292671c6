"""Fraud training at scale: full-graph against neighbour-sampled mini-batches, then a graph of a
million accounts trained sampled.

Usage:
    python benchmarks/fraud_large.py [--device cuda] [--users 1000000] [--max-steps 24] [--quick]

(a) On a SYNTHETIC graph small enough for both (``--compare-users``, default 20,000 users),
train full-graph and sampled (``sampling.batch_size``) with the same model, optimizer and epochs;
report test AUPRC (accounts and transactions), seconds per epoch and peak GPU memory of each.
(b) Generate ``--users`` accounts over ``--days`` days (1,000,000 over 24 days: about 10 million
transactions), prepare the graph, train sampled for ``--epochs`` epochs or ``--max-steps`` steps
(validation sampled too), and report generation + prepare time, seconds per epoch, peak GPU memory
(``torch.cuda.max_memory_allocated``, the final full-graph evaluation included), peak RSS and
test AUPRC. ``--quick`` is a CPU smoke run of both parts on tiny graphs (about a minute).
Writes ``benchmarks/results/fraud_large.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from abyssal.solutions import get_solution
from abyssal.solutions.fraud.config import FraudConfig
from abyssal.train.api import train_prepared
from environment import environment, write_result

RESULTS = Path(__file__).parent / "results"
METRICS = ("test_auprc", "test_auroc", "txn_test_auprc")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


PREFETCH = 0  # train.prefetch_batches for every run (--prefetch)


def config(users: int, days: int, device: str, epochs: int, sampled: dict | None) -> FraudConfig:
    """Synthetic data scaled with ``users`` (12 rings and 300 merchants per 2,000 users at the
    defaults, at least 300 merchants), the default model, no tree baselines."""
    cfg = FraudConfig()
    d = cfg.data
    d.synthetic_users, d.synthetic_days = users, days
    d.synthetic_rings = max(2, users * 12 // 2000)
    d.synthetic_merchants = max(300, users // 200)
    cfg.train.device, cfg.train.epochs, cfg.train.progress = device, epochs, False
    cfg.train.patience = 10**6  # every epoch runs: time per epoch is what is measured
    cfg.baselines = False
    cfg.train.prefetch_batches = PREFETCH
    for key, value in (sampled or {}).items():
        setattr(cfg.sampling, key, value)
    return cfg


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def fit(cfg: FraudConfig, data, work: Path, name: str) -> dict:
    """Train on prepared data; metrics, seconds per epoch (or step) and peak GPU memory."""
    cuda = cfg.train.device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    out = train_prepared(get_solution("fraud"), cfg, data, model_name=name, home=work)
    wall = time.perf_counter() - start
    rows = [row for row in out.fit.history if "time" in row]
    # each row's "time" is the seconds since the previous evaluation (training and validation)
    per_epoch = float(np.mean([r["time"] for r in rows])) if rows else None
    steps = rows[-1]["step"] if rows else None
    trained_s = float(sum(r["time"] for r in rows)) if rows else None
    result = {
        "wall_s": wall,
        "epochs": out.fit.epochs_run,
        "steps": steps,
        "seconds_per_epoch": per_epoch if cfg.train.max_steps is None else None,
        "seconds_per_step": trained_s / steps if steps else None,  # validation included
        "peak_gpu_gb": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
        "peak_rss_gb": peak_rss_gb(),
        **{k: out.metrics.get(k) for k in METRICS},
    }
    log(f"{name}: " + ", ".join(f"{k} {v:.4g}" for k, v in result.items() if v is not None))
    return result


def compare(args, work: Path) -> dict:
    """Part (a): the same settings, full-graph and sampled, on one small graph."""
    full_cfg = config(args.compare_users, 60, args.device, args.compare_epochs, None)
    log(f"(a) preparing {args.compare_users} users")
    data = get_solution("fraud").prepare(full_cfg)
    runs = {"full_batch": fit(full_cfg, data, work, "full")}
    sampled = {"batch_size": args.compare_batch, "transactions_per_batch": args.txn_per_batch}
    cfg = config(args.compare_users, 60, args.device, args.compare_epochs, sampled)
    runs["sampled"] = fit(cfg, data, work, "sampled")
    g = data.graph
    return {
        "users": args.compare_users,
        "nodes": g.num_nodes,
        "transactions": len(g.transactions.user),
        "epochs": args.compare_epochs,
        "sampling": sampled,
        "runs": runs,
    }


def large(args, work: Path) -> dict:
    """Part (b): generate, prepare and train sampled on a large graph."""
    sampled = {
        "batch_size": args.batch,
        "transactions_per_batch": args.txn_per_batch,
        "eval_batch_size": args.eval_batch,
    }
    cfg = config(args.users, args.days, args.device, args.epochs, sampled)
    if args.max_steps:
        cfg.train.max_steps = cfg.train.eval_every_steps = args.max_steps
    log(f"(b) generating and preparing {args.users} users over {args.days} days")
    start = time.perf_counter()
    data = get_solution("fraud").prepare(cfg)
    prepare_s = time.perf_counter() - start
    g = data.graph
    n_txn = len(g.transactions.user)
    log(f"prepared in {prepare_s:.1f}s: {g.num_nodes} nodes, {n_txn} transactions, "
        f"{g.num_edges} edges, peak RSS {peak_rss_gb():.1f} GiB")  # fmt: skip
    task = get_solution("fraud").task(cfg, data)
    batches = task.train_batches(0, task_shard())
    n_batches = len(batches)
    start = time.perf_counter()
    first = next(iter(batches))
    batch_s = time.perf_counter() - start
    log(f"{len(batches)} batches per epoch; one built in {batch_s:.2f}s on the CPU "
        f"({first.graph.x.shape[0]} nodes, {first.graph.edge_index.shape[1]} edges)")  # fmt: skip
    del task, batches, first
    return {
        "users": args.users,
        "days": args.days,
        "nodes": g.num_nodes,
        "transactions": n_txn,
        "edges": g.num_edges,
        "generate_and_prepare_s": prepare_s,
        "batch_build_s": batch_s,
        "batches_per_epoch": n_batches,
        "sampling": sampled,
        "run": fit(cfg, data, work, "large"),
    }


def task_shard():
    from abyssal.contracts.task import Shard

    return Shard()


def markdown(result: dict) -> str:
    a, b = result.get("compare"), result.get("large")
    env = result["environment"]
    lines = [
        "# Fraud benchmark: full-graph and neighbour-sampled training at scale",
        "",
        f"Measured {env['date']} on {env['machine']['cpu']} ({env['machine']['cores']} cores), "
        f"GPU {env['machine']['gpu']}, torch {env['versions']['torch']}, torch_geometric "
        f"{env['versions']['torch_geometric']}, abyssal commit {env['git_commit']}. "
        f"Command: `{result['command']}`",
        "",
    ]
    if a is not None:
        lines += _compare_lines(a)
    if b is not None:
        lines += _large_lines(b)
    return "\n".join([*lines, ""])


def _compare_lines(a: dict) -> list[str]:
    lines = [
        f"(a) SYNTHETIC graph of {a['users']:,} users ({a['nodes']:,} nodes, "
        f"{a['transactions']:,} transactions), {a['epochs']} epochs each, sampling "
        f"{a['sampling']}:",
        "",
        "| training | test AUPRC | test AUROC | txn test AUPRC | s/epoch | peak GPU GiB |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in a["runs"].items():
        lines.append(f"| {name} | {_f(r['test_auprc'])} | {_f(r['test_auroc'])} | "
                     f"{_f(r['txn_test_auprc'])} | {_f(r['seconds_per_epoch'], 2)} | "
                     f"{_f(r['peak_gpu_gb'], 2)} |")  # fmt: skip
    return lines


def _large_lines(b: dict) -> list[str]:
    r = b["run"]
    per_epoch = r["seconds_per_epoch"]
    if per_epoch is None and r["seconds_per_step"]:
        per_epoch = r["seconds_per_step"] * b["batches_per_epoch"]  # estimated from the steps
    return [
        "",
        f"(b) SYNTHETIC graph of {b['users']:,} users over {b['days']} days: {b['nodes']:,} "
        f"nodes, {b['transactions']:,} transactions, {b['edges']:,} edges; sampling "
        f"{b['sampling']}.",
        "",
        "| generate + prepare s | batch build s (CPU) | batches/epoch | s/step | s/epoch "
        "| steps | peak GPU GiB | peak RSS GiB | test AUPRC | txn test AUPRC |",
        "|---|---|---|---|---|---|---|---|---|---|",
        f"| {b['generate_and_prepare_s']:.1f} | {b['batch_build_s']:.2f} | "
        f"{b['batches_per_epoch']} | {_f(r['seconds_per_step'], 2)} | {_f(per_epoch, 1)} | "
        f"{r['steps']} | {_f(r['peak_gpu_gb'], 2)} | {r['peak_rss_gb']:.1f} | "
        f"{_f(r['test_auprc'])} | {_f(r['txn_test_auprc'])} |",
        "",
        "With `--max-steps` the epoch time is estimated as s/step x batches/epoch (a step "
        "includes building its batch on the CPU). Seconds per epoch include validation; "
        "peak GPU memory includes the final full-graph "
        "evaluation. Transaction AUPRC is the full-graph evaluation's, which scores a "
        "transaction from embeddings of the whole graph; sampled training scores each "
        "transaction as of itself.",
    ]


def _f(value, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--users", type=int, default=1_000_000)
    p.add_argument("--days", type=int, default=24)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--max-steps", type=int, default=24, help="(b): stop after this many steps")
    p.add_argument("--batch", type=int, default=16384, help="seed accounts per batch (b)")
    p.add_argument("--eval-batch", type=int, default=65536)
    p.add_argument("--txn-per-batch", type=int, default=1024)
    p.add_argument("--compare-users", type=int, default=20_000)
    p.add_argument("--compare-epochs", type=int, default=20)
    p.add_argument("--compare-batch", type=int, default=2048)
    p.add_argument("--parts", default="compare,large", help="compare, large or both")
    p.add_argument(
        "--prefetch", type=int, default=0, help="train.prefetch_batches: build batches ahead"
    )
    p.add_argument("--quick", action="store_true", help="tiny CPU smoke run")
    p.add_argument("--out", default=str(RESULTS / "fraud_large"))
    args = p.parse_args()
    global PREFETCH
    PREFETCH = args.prefetch
    if args.quick:
        args.device, args.users, args.days, args.epochs, args.max_steps = "cpu", 3000, 10, 1, 3
        args.batch, args.eval_batch, args.txn_per_batch = 512, 1024, 128
        args.compare_users, args.compare_epochs, args.compare_batch = 400, 3, 64
        args.out = str(Path(tempfile.gettempdir()) / "fraud_large_quick")
    parts = {p.strip() for p in args.parts.split(",")}
    result = {"command": "python " + " ".join(sys.argv), "environment": environment()}
    with tempfile.TemporaryDirectory() as work:
        for name, part in (("compare", compare), ("large", large)):
            if name in parts:
                result[name] = part(args, Path(work))
                write_result(result, args.out, markdown)  # what is measured survives a timeout


if __name__ == "__main__":
    main()
