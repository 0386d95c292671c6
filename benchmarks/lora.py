"""Financial PhraseBank: LoRA (ranks 4, 8, 16) against full fine-tuning and a frozen base
(linear probe), over several training seeds; and length-bucketed against fixed-size batches.

Every run trains through ``abyssal.train.api.train("text", configs/text/phrasebank.yaml, ...)`` on
the 50 %-agreement file (``--data``, ``data.format=phrasebank``) with one fixed stratified split
(``data.split_seed=0``), base model ``--base`` (``model.base``), in a temporary abyssal home or
``--home``. Parts (``--parts``, all by default), each written to the results after every run:

- ``methods``: for each seed of ``--seeds`` and each method of ``--methods``: ``full``
  (model.tuning=full, ``--full-lr``), ``lora4``/``lora8``/``lora16`` (model.tuning=lora, lora.r=r,
  lora.alpha=2r, lora.target_modules=auto, ``--lora-lr``) and ``frozen`` (only the head trains,
  ``--frozen-lr``). Each run records its version, wall time, peak memory (CUDA: the run's
  ``max_memory_allocated``; CPU: the process's max RSS, a high-water mark since it started), its
  metrics and its files' size (adapter and whole version). Runs go seed-major: a seed starts only
  if the time spent plus the slowest whole seed so far fits ``--budget-s``, so a budget cut leaves
  whole seeds (a started seed's runs stop only once the budget is spent); what does not run is
  recorded as skipped.
- ``batching``: full fine-tuning on the first seed with ``data.batching=buckets`` and with
  ``data.batching=fixed``: training tokens/s, padding efficiency, wall time, and the speed-up.

Usage:
    python benchmarks/lora.py --quick               # CPU smoke run, a few steps, a temporary folder
    PYTHONPATH=src python3 benchmarks/lora.py --device cuda --base PATH --commit SHA
    python benchmarks/lora.py --seeds 3,4 --merge benchmarks/results/lora_phrasebank.json

``--merge FILE`` keeps the parts of an earlier result, and of its ``methods`` part the runs (ok or
failed) whose (seed, method) this invocation does not run, so seeds cut by a budget can run later.
Writes ``benchmarks/results/lora_phrasebank.json`` and ``.md`` (``--out`` overrides; ``--quick``
writes to the temporary folder and prints the report).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from environment import (
    env_line,
    environment,
    md_table,
    parse_numbers,
    write_result,
)
from environment import number_cell as _f
from environment import target_row as _target

PACKAGES = ("torch", "transformers", "peft")  # the versions the results name
ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
CONFIG = ROOT / "configs" / "text" / "phrasebank.yaml"
DATA = ROOT.parent / "shared" / "datasets" / "financial_phrasebank" / "Sentences_50Agree.txt"
PARTS = ("methods", "batching")
METHODS = ("full", "lora4", "lora8", "lora16", "frozen")
QUICK = {"seeds": [0], "epochs": 1, "max_steps": 3, "methods": ["full", "lora8", "frozen"]}
SHARE_MAX = 0.02  # LoRA's trainable share target
ANCHORS = (
    "Published anchors, not measured here: LoRA on RoBERTa-base matched full fine-tuning on GLUE "
    "in Hu et al. 2021 (87.2 vs 86.4 average); FinBERT (Araci 2019) reports about 0.86 accuracy "
    "on Financial PhraseBank."
)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


@dataclass
class Bench:
    """One benchmark invocation: its arguments, store, results so far and merged runs."""

    args: argparse.Namespace
    home: Path
    out: Path
    result: dict[str, Any]
    cuda: bool
    carried: list[dict] = field(default_factory=list)  # --merge: earlier runs of `methods`
    started: float = field(default_factory=time.perf_counter)

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def spent(self) -> str | None:
        """Why no further run may start (``--budget-s`` spent), else ``None``."""
        budget = self.args.budget_s
        if budget is None or self.elapsed() <= budget:
            return None
        return f"time budget spent ({self.elapsed():.0f} s > {budget:.0f} s)"

    def save(self) -> None:
        """Write the results so far (JSON and markdown), silently."""
        self.result["targets"] = targets(self.result)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.out.with_suffix(".json").write_text(json.dumps(self.result, indent=2))
        self.out.with_suffix(".md").write_text(markdown(self.result))


# ---------------------------------------------------------------- training runs


def base_overrides(args: argparse.Namespace, seed: int) -> list[str]:
    """What every run shares: the data and its fixed split, the base model, device and epochs."""
    out = [f"data.path={args.data}", "data.format=phrasebank", "data.split_seed=0",
           f"model.base={args.base}", f"train.device={args.device}",
           f"train.epochs={args.epochs}", f"train.seed={seed}", "train.progress=false",
           "train.deterministic=false"]  # fmt: skip
    if args.max_steps is not None:
        out.append(f"train.max_steps={args.max_steps}")
    return [*out, *args.override]


def method_overrides(method: str, args: argparse.Namespace) -> list[str]:
    """How ``method`` tunes the base: full, frozen or LoRA of rank ``lora<r>`` (alpha 2r)."""
    if method == "full":
        return ["model.tuning=full", f"train.lr={args.full_lr}"]
    if method == "frozen":
        return ["model.tuning=frozen", f"train.lr={args.frozen_lr}"]
    r = int(method.removeprefix("lora"))
    return ["model.tuning=lora", f"lora.r={r}", f"lora.alpha={2 * r}",
            "lora.target_modules=auto", f"train.lr={args.lora_lr}"]  # fmt: skip


def peak_memory(cuda: bool) -> dict:
    """The run's peak memory in MiB and what it measures."""
    if cuda:
        import torch

        mib = torch.cuda.max_memory_allocated() / 2**20
        return {"peak_mem_mib": round(mib, 1), "peak_mem_kind": "cuda max_memory_allocated"}
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    mib = rss / 2**20 if sys.platform == "darwin" else rss / 2**10
    return {"peak_mem_mib": round(mib, 1), "peak_mem_kind": "process max RSS (high-water mark)"}


def version_files(version: Any) -> dict:
    """The version's own files: each (name, role, bytes), the adapter's bytes and the total."""
    files = [{"name": a.name, "role": a.role, "size": a.size} for a in version.artifacts]
    return {
        "artifacts": files,
        "adapter_bytes": sum(f["size"] or 0 for f in files if f["role"] == "adapter"),
        "version_bytes": sum(f["size"] or 0 for f in files),
    }


def split_of(version: Any) -> dict:
    """The stored config's split and batching (the config file may set its own fractions)."""
    data = (version.config.get("solution_config") or {}).get("data") or {}
    keys = ("val_frac", "test_frac", "split_seed", "batching", "batch_size", "max_tokens")
    return {k: data.get(k) for k in keys}


def fit(bench: Bench, label: str, overrides: list[str], name: str) -> dict:
    """Train one model version; how long it took, its peak memory, files and metrics."""
    import torch

    from abyssal.train.api import train

    log(f"{label}: training {name} ({len(overrides)} overrides)")
    if bench.cuda:
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    out = train("text", bench.args.config, overrides, model_name=name, home=bench.home)
    wall = time.perf_counter() - start
    if out is None:
        raise RuntimeError("train returned no outcome (not the main process?)")
    m = out.metrics
    record = {"status": "ok", "ref": out.version.ref, "overrides": overrides,
              "wall_s": round(wall, 1), **peak_memory(bench.cuda), **version_files(out.version),
              "data": out.version.lineage.get("data"), "split": split_of(out.version),
              "metrics": dict(m)}  # fmt: skip
    log(
        f"{label}: {record['ref']} in {wall:.0f} s; test accuracy {_f(m.get('test_accuracy'))}, "
        f"macro-F1 {_f(m.get('test_macro_f1'))}, trainable {_pct(m.get('trainable_share'))}, "
        f"{_f(m.get('train_tokens_per_s'), 0)} tokens/s, peak {record['peak_mem_mib']} MiB"
    )
    return record


def run_one(bench: Bench, row: dict, overrides: list[str], name: str) -> bool:
    """Fill ``row`` with one run (or why it was skipped or failed); whether it did not fail."""
    label = " ".join(f"{k} {v}" for k, v in row.items())
    why = bench.spent()
    if why:
        row.update(status="skipped", reason=why)
        log(f"{label}: skipped, {why}")
        return True
    try:
        row.update(fit(bench, label, overrides, name))
        return True
    except Exception as exc:  # the other runs still go; the error is in the results
        traceback.print_exc()
        row.update(status="failed", overrides=overrides, error=f"{type(exc).__name__}: {exc}"[:500])
        return False


def part_methods(bench: Bench, rec: dict) -> bool:
    args, ok, slowest = bench.args, True, 0.0
    plan = {(s, m) for s in args.seeds for m in args.methods}
    rec["runs"] = [r for r in bench.carried if (r["seed"], r["method"]) not in plan]
    for seed in args.seeds:
        seed_start = time.perf_counter()
        budget = args.budget_s
        cut = budget is not None and bench.elapsed() + slowest > budget
        for method in args.methods:
            row = {"seed": seed, "method": method}
            rec["runs"].append(row)
            if cut:
                reason = f"seed would not fit the budget ({bench.elapsed():.0f} + {slowest:.0f} s)"
                row.update(status="skipped", reason=reason)
                continue
            overrides = [*base_overrides(args, seed), *method_overrides(method, args)]
            ok = run_one(bench, row, overrides, f"phrasebank-{method}") and ok
            rec["summary"] = summarize(rec["runs"])
            bench.save()
        if cut:
            log(f"seed {seed}: skipped, it would not fit --budget-s")
        slowest = max(slowest, time.perf_counter() - seed_start)
    rec["summary"] = summarize(rec["runs"])
    return ok


def part_batching(bench: Bench, rec: dict) -> bool:
    args, ok = bench.args, True
    seed = args.seeds[0]
    rec.update(seed=seed, runs={})
    for batching in ("buckets", "fixed"):
        row = rec["runs"][batching] = {"batching": batching, "seed": seed}
        overrides = [*base_overrides(args, seed), *method_overrides("full", args)]
        overrides.append(f"data.batching={batching}")
        ok = run_one(bench, row, overrides, f"phrasebank-batching-{batching}") and ok
        bench.save()
    rec.update(speedup(rec["runs"]))
    return ok


def speedup(runs: dict) -> dict:
    """Buckets over fixed: training tokens/s ratio, and fixed's wall time over buckets'."""
    b, f = runs.get("buckets", {}), runs.get("fixed", {})
    rate = [r.get("metrics", {}).get("train_tokens_per_s") for r in (b, f)]
    wall = [r.get("wall_s") for r in (f, b)]
    return {"tokens_per_s_speedup": rate[0] / rate[1] if all(rate) else None,
            "wall_speedup": wall[0] / wall[1] if all(wall) else None}  # fmt: skip


# ---------------------------------------------------------------- summary and targets


def mean_sd(values: list[float | None]) -> tuple[float | None, float | None, int]:
    """Mean, sample standard deviation (``None`` below two values) and count of the numbers."""
    xs = [v for v in values if v is not None and not math.isnan(v)]
    if not xs:
        return None, None, 0
    return statistics.fmean(xs), statistics.stdev(xs) if len(xs) >= 2 else None, len(xs)


def summarize(runs: list[dict]) -> dict[str, dict]:
    """Per method, over its finished runs: sizes, scores (mean, sd, n), time, memory; and its
    mean macro-F1 over full fine-tuning's."""
    done = [r for r in runs if r.get("status") == "ok"]
    order = [*METHODS, *sorted({r["method"] for r in done} - set(METHODS))]
    out: dict[str, dict] = {}
    for method in order:
        rs = [r for r in done if r["method"] == method]
        if not rs:
            continue
        s: dict[str, Any] = {"n": len(rs), "seeds": sorted(r["seed"] for r in rs)}
        for key in ("trainable_params", "total_params", "trainable_share"):
            s[key] = rs[0]["metrics"].get(key)
        for key in ("test_accuracy", "test_macro_f1", "val_macro_f1", "train_tokens_per_s"):
            values = [r["metrics"].get(key) for r in rs]
            s[f"{key}_mean"], s[f"{key}_sd"], s[f"{key}_n"] = mean_sd(values)
        s["wall_s_mean"] = mean_sd([r["wall_s"] for r in rs])[0]
        s["peak_mem_mib_max"] = max(r["peak_mem_mib"] for r in rs)
        s["peak_mem_kind"] = rs[0]["peak_mem_kind"]
        s["adapter_bytes"] = max(r["adapter_bytes"] for r in rs)
        s["version_bytes"] = max(r["version_bytes"] for r in rs)
        out[method] = s
    full = out.get("full", {}).get("test_macro_f1_mean")
    for s in out.values():
        mine = s["test_macro_f1_mean"]
        s["f1_ratio_to_full"] = mine / full if full and mine is not None else None
    return out


def ratio_target(summary: dict, name: str, threshold: float) -> dict:
    """The best LoRA rank's mean macro-F1 over full fine-tuning's against ``threshold``."""
    ratios = {m: s["f1_ratio_to_full"] for m, s in summary.items() if m.startswith("lora")}
    ratios = {m: r for m, r in ratios.items() if r is not None}
    if not ratios:
        return _target(name, "no LoRA and full fine-tuning runs to compare", None)
    (best, hi), (worst, lo) = (f(ratios.items(), key=lambda kv: kv[1]) for f in (max, min))
    every = "yes" if lo >= threshold else "no"
    measured = (
        f"best {best} {hi:.3f}, worst {worst} {lo:.3f} (mean test macro-F1 over seeds; full "
        f"{summary['full']['test_macro_f1_mean']:.4f}); every rank: {every}"
    )
    return _target(name, measured, hi >= threshold)


def targets(result: dict) -> list[dict]:
    """The issue's targets from the measured numbers (none counts from a quick run)."""
    summary = summarize(result["parts"].get("methods", {}).get("runs", []))
    name = f"trainable share <= {100 * SHARE_MAX:.0f} % (LoRA)"
    rows = []
    for method, s in summary.items():
        share = s["trainable_share"]
        if method.startswith("lora"):
            measured = f"{_pct(share)} ({_count(s['trainable_params'])} parameters)"
            met = None if share is None else share <= SHARE_MAX
            rows.append(_target(f"{name}, {method}", measured, met))
    rows = rows or [_target(name, "no LoRA run", None)]
    rows.append(ratio_target(summary, "LoRA macro-F1 >= 0.95 of full fine-tuning", 0.95))
    rows.append(ratio_target(summary, "goal: LoRA >= 0.99 of full", 0.99))
    if result["settings"]["quick"]:
        for row in rows:
            row["measured"] += " (quick smoke run: does not count)"
            row["status"] = "not measured"
    return rows


# ---------------------------------------------------------------- report


def _pct(share: float | None) -> str:
    return "-" if share is None else f"{100 * share:.2f} %"


def _count(n: float | None) -> str:
    return "-" if n is None else f"{int(n):,}"


def _size(n: int | None) -> str:
    if not n:
        return "-"
    return f"{n / 2**20:.2f} MiB" if n >= 2**20 else f"{n / 2**10:.1f} KiB"


def _pm(s: dict, key: str) -> str:
    mean, sd = s[f"{key}_mean"], s[f"{key}_sd"]
    return "-" if mean is None else f"{mean:.4f} ± {_f(sd)}"


def settings_line(s: dict, runs: list[dict]) -> str:
    first = next((r for r in runs if r.get("status") == "ok"), {})
    split = first.get("split") or {}
    steps = f", at most {s['max_steps']} steps" if s["max_steps"] else ""
    quick = "; QUICK smoke run, nothing here counts" if s["quick"] else ""
    if any(r.get("merged_from") for r in runs):
        quick += " (plus runs merged from an earlier result, marked 'merged')"
    return (
        f"Settings: base {s['base']}, {s['epochs']} epochs{steps}, device {s['device']}; "
        f"learning rates full {s['full_lr']}, LoRA {s['lora_lr']} (alpha = 2r, target modules "
        f"auto), frozen {s['frozen_lr']}; seeds {s['seeds']}{quick}. Data: {s['data']} "
        f"({s['data_rows']} rows){': ' + first['data'] if first.get('data') else ''}; split "
        f"stratified, seed 0, validation {split.get('val_frac', '?')}, test "
        f"{split.get('test_frac', '?')}; batching {split.get('batching', '?')}."
    )


MEMORY_NOTES = {
    "cuda max_memory_allocated": "torch.cuda.max_memory_allocated, reset before each run",
    "process max RSS (high-water mark)": "the process's max RSS, a high-water mark since it "
    "started (it never falls from one run to the next)",
}
SUMMARY_COLUMNS = ["method", "n", "trainable params", "trainable share", "test accuracy",
                   "test macro-F1", "macro-F1 / full", "train s (mean)", "peak MiB (max)",
                   "adapter on disk", "version on disk"]  # fmt: skip


def summary_lines(summary: dict) -> list[str]:
    rows = [[m, str(s["n"]), _count(s["trainable_params"]), _pct(s["trainable_share"]),
             _pm(s, "test_accuracy"), _pm(s, "test_macro_f1"), _f(s["f1_ratio_to_full"], 3),
             _f(s["wall_s_mean"], 1), _f(s["peak_mem_mib_max"], 0), _size(s["adapter_bytes"]),
             _size(s["version_bytes"])] for m, s in summary.items()]  # fmt: skip
    kinds = {s["peak_mem_kind"] for s in summary.values()}
    memory = [MEMORY_NOTES.get(k, k) for k in sorted(kinds)]
    return [
        "Scores: mean ± sample standard deviation over the n seeds that ran ('-': fewer than "
        f"two). Peak memory: {'; '.join(memory) or '-'}.",
        "",
        *md_table(SUMMARY_COLUMNS, rows),
    ]


def seed_lines(runs: list[dict]) -> list[str]:
    headers = ["seed", "method", "status", "version", "test accuracy", "test macro-F1",
               "val macro-F1", "epochs", "wall s", "peak MiB", "tokens/s"]  # fmt: skip
    rows = []
    for r in sorted(runs, key=lambda r: (r["seed"], _method_rank(r["method"]))):
        m = r.get("metrics", {})
        status = r.get("status", "running") + (" (merged)" if r.get("merged_from") else "")
        rows.append([str(r["seed"]), r["method"], status, r.get("ref", "-"),
                     _f(m.get("test_accuracy")), _f(m.get("test_macro_f1")),
                     _f(m.get("val_macro_f1")), _f(m.get("epochs_run"), 0),
                     _f(r.get("wall_s"), 1), _f(r.get("peak_mem_mib"), 0),
                     _f(m.get("train_tokens_per_s"), 0)])  # fmt: skip
    reasons = sorted({r.get("reason") or r.get("error") for r in runs if r.get("status") != "ok"})
    return [*md_table(headers, rows), *("", *(f"- {x}" for x in reasons if x))]


def _method_rank(method: str) -> int:
    return METHODS.index(method) if method in METHODS else len(METHODS)


def batching_lines(p: dict) -> list[str]:
    headers = ["batching", "status", "version", "train tokens/s", "padding efficiency",
               "wall s", "epochs", "test macro-F1"]  # fmt: skip
    rows = []
    for name, r in p.get("runs", {}).items():
        m = r.get("metrics", {})
        rows.append([name, r["status"], r.get("ref", "-"), _f(m.get("train_tokens_per_s"), 0),
                     _f(m.get("train_padding_efficiency"), 3), _f(r.get("wall_s"), 1),
                     _f(m.get("epochs_run"), 0), _f(m.get("test_macro_f1"))])  # fmt: skip
    return [
        f"Full fine-tuning, seed {p.get('seed')}, the same epochs; tokens/s counts the real "
        "(unpadded) tokens of the training batches per second of training.",
        "",
        *md_table(headers, rows),
        "",
        f"Speed-up of buckets over fixed: {_f(p.get('tokens_per_s_speedup'), 2)}x training "
        f"tokens/s, {_f(p.get('wall_speedup'), 2)}x wall time (fixed's over buckets').",
    ]


def part_header(title: str, p: dict) -> list[str]:
    lines = ["", f"## {title}", ""]
    if "environment" in p:  # merged from an earlier result
        lines += [env_line(p["environment"], p["command"], PACKAGES), ""]
    if p.get("status") not in ("ok", None):
        lines += [f"Status: {p['status']}. {p.get('error') or p.get('reason') or ''}".strip(), ""]
    return lines


def markdown(result: dict) -> str:
    parts = result["parts"]
    runs = parts.get("methods", {}).get("runs", [])
    lines = [
        "# LoRA vs full fine-tuning on Financial PhraseBank (50 % agreement)",
        "",
        env_line(result["environment"], result["command"], PACKAGES),
        "",
        settings_line(result["settings"], runs),
        "",
        ANCHORS,
    ]
    if "methods" in parts:
        lines += part_header("Methods: full, LoRA r = 4, 8, 16, frozen", parts["methods"])
        lines += [*summary_lines(summarize(runs)), "", "### Per seed", "", *seed_lines(runs)]
    if "batching" in parts:
        lines += part_header("Batching: length buckets vs fixed batches", parts["batching"])
        lines += batching_lines(parts["batching"])
    lines += ["", "## Targets", ""]
    rows = [[t["target"], t["measured"], t["status"]] for t in result["targets"]]
    return "\n".join([*lines, *md_table(["target", "measured", "status"], rows), ""])


# ---------------------------------------------------------------- entry point

RUNNERS = {"methods": part_methods, "batching": part_batching}


def run_parts(bench: Bench) -> bool:
    """Run the chosen parts in order; whether every run that started succeeded."""
    ok = True
    for name in bench.args.parts:
        rec = bench.result["parts"][name] = {"status": "running"}
        log(f"{name}: starting")
        start = time.perf_counter()
        try:
            ok = RUNNERS[name](bench, rec) and ok
            rec["status"] = "ok"
        except Exception as exc:
            traceback.print_exc()
            rec.update(status="failed", error=f"{type(exc).__name__}: {exc}"[:500])
            ok = False
        rec["wall_s"] = round(time.perf_counter() - start, 1)
        log(f"{name}: {rec['status']} in {rec['wall_s']:.0f} s")
        bench.save()
    return ok


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=DATA, help="Sentences_50Agree.txt")
    p.add_argument("--config", type=Path, default=CONFIG, help="the text solution's config")
    p.add_argument("--parts", default=",".join(PARTS), help="comma list of " + ", ".join(PARTS))
    p.add_argument(
        "--methods", default=",".join(METHODS), help="comma list of " + ", ".join(METHODS)
    )
    p.add_argument("--seeds", default="0,1,2,3,4", help="training seeds: '0,1,2' or '0-4'")
    p.add_argument("--base", default="minilm", help="model.base: minilm or a model folder")
    p.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto", help="training")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--max-steps", type=int, default=None, help="train.max_steps (the config's)")
    p.add_argument("--full-lr", type=float, default=5e-5)
    p.add_argument("--lora-lr", type=float, default=5e-4)
    p.add_argument("--frozen-lr", type=float, default=2e-3)
    p.add_argument("--override", action="append", default=[], help="KEY=VALUE for every run")
    p.add_argument("--home", type=Path, default=None, help="abyssal home (default: temporary)")
    p.add_argument("--merge", type=Path, default=None, help="keep the parts of this result")
    p.add_argument("--budget-s", type=float, default=None, help="skip runs once this is spent")
    p.add_argument("--commit", default=None, help="the commit measured (the copy may lack git)")
    p.add_argument("--out", type=Path, default=None, help="results file stem")
    p.add_argument("--quick", action="store_true", help="tiny CPU smoke run (a few steps)")
    args = p.parse_args(argv)
    args.parts = _choose(p, "parts", args.parts, PARTS)
    args.methods = _choose(p, "methods", args.methods, METHODS)
    args.seeds = parse_numbers(args.seeds)
    if args.quick:
        args.device = "cpu"
        for key, value in QUICK.items():
            setattr(args, key, value)
    args.data = args.data.resolve()
    return args


def _choose(p: argparse.ArgumentParser, what: str, text: str, known: tuple[str, ...]) -> list:
    chosen = [x.strip() for x in text.split(",") if x.strip()]
    unknown = [x for x in chosen if x not in known]
    if unknown:
        p.error(f"unknown {what} {unknown}; choose from {', '.join(known)}")
    return [x for x in known if x in chosen]


def count_rows(path: Path) -> int | None:
    """Non-empty lines of the data file (PhraseBank: one labelled sentence a line)."""
    try:
        return sum(1 for line in path.read_bytes().splitlines() if line.strip())
    except OSError:
        return None


def new_result(args: argparse.Namespace, cuda: bool, home: Path) -> tuple[dict, list[dict]]:
    """The result skeleton (command, environment, settings, the parts ``--merge`` keeps) and the
    earlier ``methods`` runs that part may carry over."""
    env = environment(("torch", "transformers", "peft", "numpy"))
    env["git_commit"] = args.commit or env["git_commit"]
    keys = ("base", "epochs", "max_steps", "full_lr", "lora_lr", "frozen_lr", "seeds",
            "methods", "override", "budget_s", "quick")  # fmt: skip
    settings = {k: getattr(args, k) for k in keys}
    settings.update(device="cuda" if cuda else "cpu", data=str(args.data), home=str(home))
    settings.update(data_rows=count_rows(args.data), config=str(args.config))
    result = {"command": "python " + " ".join(sys.argv), "environment": env,
              "settings": settings, "parts": {}}  # fmt: skip
    carried: list[dict] = []
    if args.merge:
        earlier = json.loads(args.merge.read_text())
        source = {k: earlier["environment"].get(k) for k in ("date", "git_commit")}
        for name, part in earlier["parts"].items():
            if name == "methods" and name in args.parts:
                done = [r for r in part.get("runs", []) if r.get("status") in ("ok", "failed")]
                carried += [{**r, "merged_from": r.get("merged_from", source)} for r in done]
            elif name not in args.parts:
                part.setdefault("environment", earlier["environment"])
                part.setdefault("command", earlier["command"])
                result["parts"][name] = part
    return result, carried


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    tmp = tempfile.TemporaryDirectory(prefix="abyssal-lora-")
    home = (args.home or Path(tmp.name) / "home").resolve()
    os.environ["ABYSSAL_HOME"] = str(home)  # the default store, should anything resolve there
    default_out = Path(tmp.name) / "lora_quick" if args.quick else RESULTS / "lora_phrasebank"
    result, carried = new_result(args, cuda, home)
    bench = Bench(args, home, args.out or default_out, result, cuda, carried)
    log(f"lora benchmark: parts {', '.join(args.parts)}; home {home}; results {bench.out}")
    ok = run_parts(bench)
    bench.result["wall_s"] = round(bench.elapsed(), 1)
    bench.result["targets"] = targets(bench.result)
    write_result(bench.result, bench.out, markdown)
    log(f"done in {bench.result['wall_s']:.0f} s: {bench.out.with_suffix('.md')}")
    tmp.cleanup()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
