"""Tabular benchmark: the network vs gradient-boosted trees on the two real data sets bundled
with scikit-learn (breast cancer: classification; diabetes: regression), several split seeds.

Usage:
    python benchmarks/tabular.py [--seeds 0-4]

Each seed draws its own train/validation/test split (60/20/20, stratified for classification) and
seeds the network's weights and batches; both models train on the same training rows, pick their
length (epoch, boosting rounds) on the same validation rows, and are scored on the same test rows.
Breast cancer uses the default config (``data.source=breast_cancer``); diabetes uses
``configs/tabular/diabetes.yaml``. Writes ``benchmarks/results/tabular.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from abyssal.train.api import train
from environment import environment, interval_cell, parse_numbers, provenance, write_result

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results"
DATASETS = {
    "breast_cancer": {
        "config": None,
        "overrides": ["data.source=breast_cancer"],
        "metrics": ("auroc", "accuracy", "log_loss"),
        "headers": ("AUROC", "accuracy", "log-loss"),
    },
    "diabetes": {
        "config": ROOT / "configs" / "tabular" / "diabetes.yaml",
        "overrides": [],
        "metrics": ("rmse", "r2", "mae"),
        "headers": ("RMSE", "R²", "MAE"),
    },
}
MODELS = {"network (MLP, abyssal)": "", "boosted trees (HistGradientBoosting)": "gbdt_"}


def run_seed(name: str, seed: int, home: str) -> dict:
    spec = DATASETS[name]
    overrides = [
        *spec["overrides"],
        f"data.split_seed={seed}",
        f"train.seed={seed}",
        "train.progress=false",
    ]
    start = time.perf_counter()
    out = train("tabular", spec["config"], overrides, home=home)
    seconds = time.perf_counter() - start
    shown = ", ".join(
        f"{label.split(' ')[0]} {m} {out.metrics[f'{p}test_{m}']:.4f}"
        for label, p in MODELS.items()
        for m in spec["metrics"][:1]
    )
    print(f"{name} seed {seed}: {seconds:.0f} s, {shown}", flush=True)
    kept = {k: v for k, v in out.metrics.items() if "test_" in k or k.endswith("rounds")}
    return {**kept, "best_epoch": out.metrics["best_epoch"], "seconds": seconds}


def summarise(name: str, runs: list[dict]) -> dict:
    out = {}
    for label, prefix in MODELS.items():
        out[label] = {}
        for metric in DATASETS[name]["metrics"]:
            values = np.array([r[f"{prefix}test_{metric}"] for r in runs])
            out[label][metric] = {"mean": float(values.mean()), "std": float(values.std(ddof=0))}
    return out


def markdown(result: dict) -> str:
    lines = [
        "# Tabular benchmark: network vs boosted trees",
        "",
        provenance(result),
        "",
        f"Test-split metrics, mean ± std over split seeds {result['seeds']} (60/20/20 splits; "
        "each model picks its length on the validation split); last column: the 95% bootstrap "
        "interval of the first metric within one split (median of the seeds' bounds).",
    ]
    for name, summary in result["summary"].items():
        spec = DATASETS[name]
        rows = result["per_seed"][name]
        headline = spec["metrics"][0]
        lines += [
            "",
            f"## {name} ({rows[0]['test_rows']} test rows per seed)",
            "",
            "| model | " + " | ".join(spec["headers"]) + f" | {spec['headers'][0]} 95% interval |",
            "|---|" + "---|" * (len(spec["headers"]) + 1),
        ]
        for label, metrics in summary.items():
            cells = " | ".join(
                f"{metrics[m]['mean']:.4f} ± {metrics[m]['std']:.4f}" for m in spec["metrics"]
            )
            within = interval_cell(rows, f"{MODELS[label]}test_{headline}", 4)
            lines.append(f"| {label} | {cells} | {within} |")
        seconds = np.mean([r["seconds"] for r in rows])
        lines.append("")
        lines.append(f"Mean wall time per run (both models, 2-core CPU): {seconds:.1f} s.")
    lines.append("")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", default="0-4", help="e.g. 0-4 or 0,3")
    p.add_argument("--out", default=str(RESULTS / "tabular"))
    args = p.parse_args()
    seeds = parse_numbers(args.seeds)
    per_seed = {}
    with tempfile.TemporaryDirectory() as home:
        for name in DATASETS:
            per_seed[name] = [run_seed(name, s, home) for s in seeds]
    result = {
        "command": "python " + " ".join(sys.argv),
        "environment": environment(),
        "seeds": seeds,
        "summary": {name: summarise(name, runs) for name, runs in per_seed.items()},
        "per_seed": per_seed,
    }
    write_result(result, args.out, markdown)


if __name__ == "__main__":
    main()
