"""Fraud benchmark on Bitcoin-OTC: GAT + temporal features vs gradient-boosted trees, ten splits,
and the latency of scoring new edges incrementally against the live graph.

Usage:
    python benchmarks/fraud.py [--data ../shared/datasets/bitcoin_otc] [--splits 0-9] [--epochs 200]

Writes ``benchmarks/results/fraud_bitcoin_otc.json`` and ``.md``. Detection metrics are on each
split's test nodes (TGBase splits; Recall@K with K = the number of frauds in the test split).
Latency: the graph is built from the first 95% of edges by time, then each of the remaining 5% is
added and scored one at a time (features of both accounts updated, their neighbourhood rescored).
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from abyssal.solutions.fraud.bitcoin_otc import load_bitcoin_otc
from abyssal.solutions.fraud.graph import graph_from_edges
from abyssal.solutions.fraud.live import LiveScorer
from abyssal.solutions.loading import load_model
from abyssal.train.api import train
from environment import environment, interval_cell, parse_numbers, provenance, write_result

METRICS = ("auroc", "auprc", "macro_f1", "recall_at_k")
MODELS = {
    "GAT + temporal (abyssal)": "",
    "GBDT, own features": "gbdt_own_",
    "GBDT, neighbour-aggregated (XGBGraph-style)": "gbdt_graph_",
}
WINDOWS = "[86400,604800,2592000]"
RESULTS = Path(__file__).parent / "results"


def run_split(data: str, k: int, epochs: int, home: str) -> tuple[dict, str]:
    overrides = [
        "data.source=bitcoin_otc",
        f"data.path={data}",
        f"data.split={k}",
        f"data.windows={WINDOWS}",
        f"train.epochs={epochs}",
        "train.progress=false",
    ]
    t0 = time.perf_counter()
    out = train("fraud", None, overrides, home=home)
    print(
        f"split {k}: {time.perf_counter() - t0:.0f} s, "
        + ", ".join(f"{n} AUPRC {out.metrics[p + 'test_auprc']:.3f}" for n, p in MODELS.items()),
        flush=True,
    )
    return out.metrics, out.version.ref


def summarise(per_split: list[dict]) -> dict:
    summary = {}
    for name, prefix in MODELS.items():
        summary[name] = {}
        for m in METRICS:
            values = np.array([s[f"{prefix}test_{m}"] for s in per_split])
            summary[name][m] = {"mean": float(values.mean()), "std": float(values.std(ddof=0))}
    return summary


def latency(data: str, ref: str, home: str, new_frac: float, threads: int) -> dict:
    """Stream the latest ``new_frac`` of edges into the graph of the rest, one at a time, twice:
    scoring only the new edge's accounts, and also rescoring their whole neighbourhood."""
    from abyssal.core.store import ModelStore

    torch.set_num_threads(threads)
    loaded = load_model(ref, ModelStore(home))
    otc = load_bitcoin_otc(data)
    edges = otc.edges.sort_values(["timestamp"], kind="stable").reset_index(drop=True)
    cut = int(len(edges) * (1 - new_frac))
    out = {
        "history_edges": cut,
        "new_edges": len(edges) - cut,
        "torch_threads": threads,
        "neighbour_cap": loaded.cfg.model.neighbour_cap,
    }
    for mode, neighbourhood in (("score", False), ("score_and_neighbourhood", True)):
        graph = graph_from_edges(edges.iloc[:cut], otc.labels, loaded.cfg.data.windows)
        out["history_nodes"] = graph.num_nodes
        scorer = LiveScorer(loaded.model, graph, "add", rescore_neighbourhood=neighbourhood)
        gc.collect()
        gc.freeze()  # the long-lived graph state need not be traversed by every collection
        lat, rescored = [], []
        for row in edges.iloc[cut:].itertuples(index=False):
            s = scorer.score_edge(row.source, row.target, row.timestamp, row.rating)
            lat.append(s.latency_ms)
            rescored.append(s.rescored)
        gc.unfreeze()
        lat = np.array(lat)
        out[mode] = {
            **{f"p{q}": float(np.percentile(lat, q)) for q in (50, 90, 99)},
            "max": float(lat.max()),
            "mean": float(lat.mean()),
            "mean_nodes_rescored": float(np.mean(rescored)),
            "max_nodes_rescored": int(np.max(rescored)),
        }
    return out


def markdown(result: dict) -> str:
    lines = [
        "# Fraud benchmark: Bitcoin-OTC",
        "",
        provenance(result),
        "",
        f"Test-split detection metrics, mean ± std over TGBase splits {result['splits']} "
        "(Recall@K: K = frauds in the test split); last column: the 95% bootstrap interval of "
        "the test AUPRC within one split (median of the splits' bounds).",
        "",
        "| model | AUROC | AUPRC | macro-F1 | Recall@K | AUPRC 95% interval in a split |",
        "|---|---|---|---|---|---|",
    ]
    for name, ms in result["summary"].items():
        prefix = MODELS[name]
        cells = " | ".join(f"{ms[m]['mean']:.3f} ± {ms[m]['std']:.3f}" for m in METRICS)
        within = interval_cell(result["per_split"], f"{prefix}test_auprc")
        lines.append(f"| {name} | {cells} | {within} |")
    lat = result["latency"]
    lines += [
        "",
        f"Incremental scoring latency per new edge: {lat['new_edges']} edges "
        "(the latest 5% by time) "
        f"streamed one at a time into a graph of {lat['history_nodes']} accounts and "
        f"{lat['history_edges']} edges, torch threads {lat['torch_threads']}, "
        f"model.neighbour_cap {lat.get('neighbour_cap')}, in ms:",
        "",
        "| mode | p50 | p90 | p99 | max | nodes rescored (mean / max) |",
        "|---|---|---|---|---|---|",
    ]
    for mode, label in (
        ("score", "score the edge's two accounts"),
        ("score_and_neighbourhood", "... and rescore their neighbourhood"),
    ):
        m = lat[mode]
        lines.append(
            f"| {label} | {m['p50']:.2f} | {m['p90']:.2f} | {m['p99']:.2f} | {m['max']:.2f} | "
            f"{m['mean_nodes_rescored']:.0f} / {m['max_nodes_rescored']} |"
        )
    lines.append("")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default="../shared/datasets/bitcoin_otc")
    p.add_argument("--splits", default="0-9", help="e.g. 0-9 or 0,3")
    p.add_argument("--epochs", type=int, default=200)
    p.add_argument(
        "--threads",
        type=int,
        default=torch.get_num_threads(),
        help="torch threads for the latency run (default: torch's default, one per core)",
    )
    p.add_argument("--out", default=str(RESULTS / "fraud_bitcoin_otc"))
    args = p.parse_args()
    splits = parse_numbers(args.splits)
    with tempfile.TemporaryDirectory() as home:
        runs = [run_split(args.data, k, args.epochs, home) for k in splits]
        lat = latency(args.data, runs[0][1], home, 0.05, args.threads)
    result = {
        "command": "python " + " ".join(sys.argv),
        "environment": environment(),
        "splits": splits,
        "summary": summarise([m for m, _ in runs]),
        "per_split": [{k: v for k, v in m.items() if "test_" in k} for m, _ in runs],
        "latency": lat,
    }
    write_result(result, args.out, markdown)


if __name__ == "__main__":
    main()
