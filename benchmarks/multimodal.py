"""The multimodal layer measured on spoken and written digits (the AV-MNIST protocol, built by
``multimodal_data.py`` from FSDD recordings and scikit-learn digits, each modality degraded):
test accuracy of audio alone, image alone, late fusion (score averaging), concatenation and
cross-modal attention, over several seeds, with the fused-over-best-single gain and its 95 %
interval across seeds (Student's t).

Every run goes through ``abyssal.train.api.train("multimodal", ...)`` with
``configs/multimodal/avdigits.yaml`` (training on FSDD's training recordings, 15 % of them for
validation, testing on its test recordings: indices 0-4 of every digit and speaker). The single
modality rows are models trained on that modality alone (the other encoder ``none``), with the
early-fusion head (a transformer layer over the modality's tokens, then a masked mean), so that
they have the token-level layers the cross-attention model has. ``--merge`` combines result files
(a later file's run replaces an earlier one of the same variant and seed).

``--dataset flickr8k`` measures image-text retrieval on Flickr8k instead (dual encoder against
cross-attention re-ranking; ``multimodal_retrieval.py``, whose flags follow).

Usage:
    python benchmarks/multimodal.py --seeds 0-4 --out benchmarks/results/multimodal_avdigits
    python benchmarks/multimodal.py --dataset flickr8k --seeds 0-2  # -> multimodal_flickr8k
    python benchmarks/multimodal.py --seeds 0 --epochs 1 --out /tmp/smoke       # smoke run
    python benchmarks/multimodal.py --merge a.json b.json --out results/multimodal_avdigits
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from environment import env_line, environment, md_table, parse_numbers, write_result
from environment import target_row as _target
from multimodal_data import PairOptions, build

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "multimodal" / "avdigits.yaml"
PACKAGES = ("torch", "torchvision", "numpy", "scipy", "scikit-learn")
VARIANTS = {
    "audio": ["model.image=none", "model.fusion=early"],
    "image": ["model.audio=none", "model.fusion=early"],
    "late": ["model.fusion=late"],
    "concat": ["model.fusion=concat"],
    "cross_attention": ["model.fusion=cross_attention"],
}
LABELS = {
    "audio": "audio alone (transformer head over its tokens)",
    "image": "image alone (transformer head over its tokens)",
    "late": "late fusion (mean of per-modality scores)",
    "concat": "concatenation",
    "cross_attention": "cross-modal attention",
}
FUSED = ("late", "concat", "cross_attention")
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}
"""Two-sided 95 % Student's t quantiles by degrees of freedom."""


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def run(args: argparse.Namespace, pairs: Path, home: Path, record: dict) -> None:
    from abyssal.train.api import train

    for seed in parse_numbers(args.seeds):
        for variant in args.variants:
            overrides = [
                f"data.path={pairs / 'train.csv'}",
                f"data.test_path={pairs / 'test.csv'}",
                f"train.seed={seed}",
                f"data.split_seed={seed}",
                "train.progress=false",
                *VARIANTS[variant],
            ]
            if args.epochs:
                overrides.append(f"train.epochs={args.epochs}")
            started = time.perf_counter()
            out = train("multimodal", CONFIG, overrides, model_name=f"{variant}-{seed}", home=home)
            m = out.metrics
            record["runs"].append(
                {
                    "variant": variant,
                    "seed": seed,
                    "test_accuracy": m["test_accuracy"],
                    "val_accuracy": m["val_accuracy"],
                    "test_macro_f1": m["test_macro_f1"],
                    "best_epoch": m.get("best_epoch"),
                    "seconds": round(time.perf_counter() - started, 1),
                    "only": {k: v for k, v in m.items() if k.endswith("_only_accuracy")},
                }
            )
            log(f"seed {seed} {variant}: test accuracy {m['test_accuracy']:.4f}")


def interval(values: list[float]) -> tuple[float, float, float]:
    """Mean and the 95 % t-interval of the mean (NaN bounds for one value)."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, math.nan, math.nan
    half = T95.get(len(values) - 1, 1.96) * statistics.stdev(values) / math.sqrt(len(values))
    return mean, mean - half, mean + half


def summarise(record: dict) -> None:
    by = {}
    for r in record["runs"]:
        by.setdefault(r["variant"], {})[r["seed"]] = r["test_accuracy"]
    summary = {}
    for variant, seeds in by.items():
        mean, low, high = interval(list(seeds.values()))
        summary[variant] = {"mean": mean, "low": low, "high": high, "seeds": len(seeds)}
    for fused in FUSED:
        if fused not in by or "audio" not in by or "image" not in by:
            continue
        common = sorted(set(by[fused]) & set(by["audio"]) & set(by["image"]))
        gains = [by[fused][s] - max(by["audio"][s], by["image"][s]) for s in common]
        if gains:
            mean, low, high = interval(gains)
            best = statistics.fmean(max(by["audio"][s], by["image"][s]) for s in common)
            summary[fused].update(gain=mean, gain_low=low, gain_high=high, relative=mean / best)
    record["summary"] = summary
    ca = summary.get("cross_attention", {})
    record["targets"] = [
        _target(
            "cross-modal attention above the best single modality (article: +21 %)",
            "-"
            if "gain" not in ca
            else f"{ca['gain']:+.4f} [{ca['gain_low']:+.4f}, {ca['gain_high']:+.4f}] "
            f"({100 * ca['relative']:+.1f} % relative)",
            None if "gain" not in ca or ca["seeds"] < 2 else ca["gain_low"] > 0,
        )
    ]


def markdown(record: dict) -> str:
    lines = ["# Multimodal fusion on spoken and written digits (AV-MNIST protocol)", ""]
    for source in record.get("sources") or [record]:
        lines += [env_line(source["environment"], source["command"], PACKAGES), ""]
    opts = record["pairs"]["options"]
    lines += [
        f"Data: FSDD recordings ({record['pairs']['recordings']['train']} training, "
        f"{record['pairs']['recordings']['test']} test: FSDD's indices 0-4) with white noise at "
        f"{opts['snr_db']:g} dB SNR, each paired with a scikit-learn digit image of the same "
        f"class ({opts['image_size']} px, pixel noise {opts['image_noise']:g}, "
        f"{100 * opts['occlude']:.0f} % of pixels blacked out; no image in both splits). "
        "Accuracy on the 300 test pairs; mean over seeds with a 95 % t-interval; gain = fused "
        "minus the better single modality of the same seed.",
        "",
        "## Results",
        "",
    ]
    rows = []
    for variant in VARIANTS:
        s = record["summary"].get(variant)
        if s is None:
            continue
        gain = "-"
        if "gain" in s:
            gain = f"{s['gain']:+.4f} [{s['gain_low']:+.4f}, {s['gain_high']:+.4f}]"
            gain += f" ({100 * s['relative']:+.1f} %)"
        per_seed = " ".join(
            f"{r['test_accuracy']:.3f}" for r in record["runs"] if r["variant"] == variant
        )
        rows.append([LABELS[variant], str(s["seeds"]), f"{s['mean']:.4f}",
                     f"[{s['low']:.4f}, {s['high']:.4f}]", gain, per_seed])  # fmt: skip
    lines += md_table(
        ["model", "seeds", "test accuracy", "95% CI", "gain over best single", "per seed"], rows
    )
    lines += ["", *record.get("notes", [])] if record.get("notes") else []
    lines += ["", "## Targets", ""]
    targets = [[t["target"], t["measured"], t["status"]] for t in record["targets"]]
    lines += md_table(["target", "measured", "status"], targets)
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--fsdd", type=Path, default=ROOT.parent / "shared" / "datasets" / "fsdd")
    p.add_argument("--seeds", default="0-4")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--epochs", type=int, default=0, help="override train.epochs (0: the config's)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "multimodal_avdigits"))
    p.add_argument("--commit", help="the git commit measured (where git is not available)")
    p.add_argument("--merge", nargs="*", default=[], help="result files to combine")
    p.add_argument("--note", action="append", default=[], help="--merge: a note to add")
    args = p.parse_args(argv)
    args.variants = [v for v in args.variants.split(",") if v]
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        p.error(f"unknown variants {unknown}; choose from {list(VARIANTS)}")
    return args


def merge(files: list[str], notes: list[str]) -> dict[str, Any]:
    """Runs of several result files; a later file's run replaces an earlier one of the same
    variant and seed."""
    runs: dict[tuple[str, int], dict] = {}
    record: dict[str, Any] = {"sources": [], "notes": [f"- {n}" for n in notes]}
    for file in files:
        part = json.loads(Path(file).read_text())
        record["sources"] += part.get("sources") or [
            {"environment": part["environment"], "command": part["command"]}
        ]
        record["pairs"] = part["pairs"]
        for run in part["runs"]:
            runs[(run["variant"], run["seed"])] = run
    record["runs"] = sorted(
        runs.values(), key=lambda r: (r["seed"], list(VARIANTS).index(r["variant"]))
    )
    return record


def main(argv: list[str] | None = None) -> int:
    given = sys.argv[1:] if argv is None else list(argv)
    pick = argparse.ArgumentParser(add_help=False)
    pick.add_argument("--dataset", choices=("avdigits", "flickr8k"), default="avdigits")
    chosen, rest = pick.parse_known_args(given)
    if chosen.dataset == "flickr8k":
        from multimodal_retrieval import main as retrieval

        return retrieval(rest, "python benchmarks/multimodal.py " + " ".join(given))
    args = parse_args(rest)
    if args.merge:
        record = merge(args.merge, args.note)
        summarise(record)
        write_result(record, args.out, markdown)
        return 0
    env = environment(PACKAGES)
    if args.commit:
        env["git_commit"] = args.commit
    record: dict[str, Any] = {
        "environment": env,
        "command": "python benchmarks/multimodal.py "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "runs": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        pairs = Path(tmp) / "pairs"
        record["pairs"] = build(args.fsdd, pairs, PairOptions())
        log(f"pairs: {record['pairs']['recordings']}")
        run(args, pairs, Path(tmp) / "home", record)
    summarise(record)
    write_result(record, args.out, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
