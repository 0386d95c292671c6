"""Fraud benchmark on the built-in SYNTHETIC transactions (the quick start's data): detection
metrics of the model and both tree baselines, and live-scoring latency per new transaction.

Usage:
    python benchmarks/fraud_synthetic.py [--seeds 0] [--epochs 60]

For each seed: generate the default synthetic data (2,000 users, 12 planted rings, 60 days), keep
the latest 2% as the stream of new transactions (as `abyssal generate fraud` does), train on the
rest with `configs/fraud/quickstart.yaml`, then score the stream one transaction at a time, first
scoring only each transaction's accounts, then also rescoring their neighbourhood (each
account's ``model.neighbour_cap`` most recent counterparties). Writes
``benchmarks/results/fraud_synthetic.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from abyssal.core.store import ModelStore
from abyssal.data.tables import write_table
from abyssal.solutions.fraud.live import LiveScorer
from abyssal.solutions.fraud.predict import history_graph
from abyssal.solutions.fraud.sample import split_stream
from abyssal.solutions.fraud.synthetic import generate_transactions
from abyssal.solutions.loading import load_model
from abyssal.train.api import train
from environment import environment, interval_cell, provenance, write_result
from fraud import METRICS, MODELS, RESULTS

CONFIG = Path(__file__).parents[1] / "configs" / "fraud" / "quickstart.yaml"


def run_seed(seed: int, epochs: int, work: Path) -> dict:
    history, new = split_stream(generate_transactions(seed=seed).transactions, 0.02)
    path = write_table(history, work / f"transactions-{seed}.csv")
    out = train(
        "fraud",
        CONFIG,
        [f"data.path={path}", f"train.epochs={epochs}", "train.progress=false"],
        home=work,
    )
    print(
        f"seed {seed}: "
        + ", ".join(f"{n} AUPRC {out.metrics[p + 'test_auprc']:.3f}" for n, p in MODELS.items()),
        flush=True,
    )
    loaded = load_model(out.version.ref, ModelStore(work))
    rows = new.drop(columns=["label"]).to_dict("records")
    latency = {}
    for mode, neighbourhood in (("score", False), ("score_and_neighbourhood", True)):
        scorer = LiveScorer(
            loaded.model, history_graph(loaded.cfg), rescore_neighbourhood=neighbourhood
        )
        gc.collect()
        gc.freeze()
        lat = np.array([scorer.score_transaction(r).latency_ms for r in rows])
        gc.unfreeze()
        latency[mode] = {f"p{q}": float(np.percentile(lat, q)) for q in (50, 90, 99)}
        latency[mode]["max"] = float(lat.max())
    metrics = {k: v for k, v in out.metrics.items() if "test_" in k}
    return {
        "seed": seed,
        "neighbour_cap": loaded.cfg.model.neighbour_cap,
        "transactions": len(history),
        "new": len(rows),
        "metrics": metrics,
        "latency": latency,
    }


def _cell(metrics: dict, key: str) -> str:
    value = f"{metrics[key]:.3f}"
    return f"{value} {interval_cell([metrics], key, 2)}" if f"{key}_low" in metrics else value


def markdown(result: dict) -> str:
    lines = [
        "# Fraud benchmark: synthetic transactions",
        "",
        provenance(result),
        "",
        "SYNTHETIC data from `abyssal.solutions.fraud.synthetic` (defaults: 2,000 users, "
        "12 planted rings, 60 days); one random split of labelled accounts per seed, so each "
        "test figure rests on about 14 fraudulent accounts. AUPRC with its 95% bootstrap "
        "interval over the test accounts.",
        "",
        "| seed | model | AUROC | AUPRC | macro-F1 | Recall@K |",
        "|---|---|---|---|---|---|",
    ]
    for run in result["runs"]:
        for name, prefix in MODELS.items():
            cells = " | ".join(_cell(run["metrics"], f"{prefix}test_{m}") for m in METRICS)
            lines.append(f"| {run['seed']} | {name} | {cells} |")
    lines += [
        "",
        f"Live scoring latency per new transaction ({result['torch_threads']} torch threads, "
        f"model.neighbour_cap {result['runs'][0].get('neighbour_cap')}), ms:",
        "",
        "| seed | mode | p50 | p90 | p99 | max |",
        "|---|---|---|---|---|---|",
    ]
    for run in result["runs"]:
        for mode, m in run["latency"].items():
            lines.append(
                f"| {run['seed']} | {mode} | {m['p50']:.2f} | {m['p90']:.2f} | "
                f"{m['p99']:.2f} | {m['max']:.2f} |"
            )
    return "\n".join([*lines, ""])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", default="0", help="comma-separated generator seeds")
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--out", default=str(RESULTS / "fraud_synthetic"))
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as work:
        runs = [run_seed(int(s), args.epochs, Path(work)) for s in args.seeds.split(",")]
    result = {
        "command": "python " + " ".join(sys.argv),
        "environment": environment(),
        "torch_threads": torch.get_num_threads(),
        "runs": runs,
    }
    write_result(result, args.out, markdown)


if __name__ == "__main__":
    main()
