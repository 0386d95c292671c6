"""Train the model versions each shipped benchmark suite compares, then run the suite with
``abyssal bench`` and keep its leaderboard in ``benchmarks/results/bench/<suite>/``: the tables
the README shows come from these files.

A model already in the store (by name; for a kfold suite, one version per fold) is not trained
again, so a rerun only scores. Training goes through ``abyssal.train.api.train`` with the
configs in ``configs/``; scoring through :func:`abyssal.bench.runner.run_suite`, exactly what
``abyssal bench run SUITE MODEL...`` does (the leaderboard records that command).

    python benchmarks/bench_suites.py --suites tabular-breast-cancer,fraud-bitcoin-otc \\
        --datasets ../shared/datasets --home .bench-home
    python benchmarks/bench_suites.py --suites nodule-lidc --device cuda --train-only --fold 3
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
OUT = ROOT / "benchmarks" / "results" / "bench"


@dataclass
class Candidate:
    """A model a suite compares: its name in the store, how it is trained."""

    name: str
    solution: str
    config: str | None
    overrides: list[str] = field(default_factory=list)
    folds: int = 0  # kfold suites: one version per held-out fold (data.test_fold)


CANDIDATES: dict[str, list[Candidate]] = {
    "tabular-breast-cancer": [
        Candidate("bc-mlp", "tabular", None, ["data.source=breast_cancer", "data.split_seed=0"]),
        Candidate(
            "bc-mlp-small",
            "tabular",
            None,
            [
                "data.source=breast_cancer",
                "data.split_seed=0",
                "model.layers=1",
                "model.hidden=8",
                "train.epochs=20",
            ],
        ),
    ],
    "fraud-bitcoin-otc": [
        Candidate(
            "otc-gat-2layers",
            "fraud",
            "fraud/bitcoin_otc.yaml",
            ["data.path=${datasets}/bitcoin_otc", "data.split=0"],
        ),
        Candidate(
            "otc-gat-1layer",
            "fraud",
            "fraud/bitcoin_otc.yaml",
            ["data.path=${datasets}/bitcoin_otc", "data.split=0", "model.layers=1"],
        ),
    ],
    "text-phrasebank": [
        Candidate(
            f"fpb-{method}",
            "text",
            "text/phrasebank.yaml",
            [
                "data.path=${datasets}/financial_phrasebank/Sentences_50Agree.txt",
                "data.split_seed=0",
                "train.progress=false",
                *extra,
            ],
        )
        for method, extra in (
            (
                "lora8",
                [
                    "model.tuning=lora",
                    "lora.r=8",
                    "lora.alpha=16",
                    "lora.target_modules=auto",
                    "train.lr=0.001",
                ],
            ),
            ("frozen", ["model.tuning=frozen", "train.lr=0.003"]),
        )
    ],
    "defect-neu-det": [
        Candidate(
            "neu-resnet50-ce",
            "defect",
            "defect/neu_det.yaml",
            ["data.path=${datasets}/neu_det", "loss.name=cross_entropy"],
        ),
        Candidate(
            "neu-resnet50-focal",
            "defect",
            "defect/neu_det.yaml",
            ["data.path=${datasets}/neu_det", "loss.name=focal"],
        ),
    ],
    "nodule-lidc": [
        Candidate(
            "lidc-fusion-kg",
            "nodule",
            "nodule/lidc.yaml",
            ["data.path=${datasets}/lidc_nodules", "model.fusion=true", "model.knowledge=true"],
            folds=5,
        ),
        Candidate(
            "lidc-resnet18",
            "nodule",
            "nodule/lidc.yaml",
            [
                "data.path=${datasets}/lidc_nodules",
                "model.arch=resnet18",
                "model.knowledge=false",
                "model.segment=false",
                "model.tta=1",
            ],
            folds=5,
        ),
    ],
    "multimodal-avdigits": [
        Candidate(
            f"avd-{fusion.replace('_', '-')}",
            "multimodal",
            "multimodal/avdigits.yaml",
            [
                "data.path=${avdigits}/train.csv",
                "data.test_path=${avdigits}/test.csv",
                f"model.fusion={fusion}",
            ],
        )
        for fusion in ("cross_attention", "late")
    ],
}


def log(message: str) -> None:
    print(f"[bench_suites] {message}", file=sys.stderr, flush=True)


def versions_by_fold(store, name: str) -> dict[int, str]:
    """The latest version of ``name`` per held-out fold (``data.test_fold`` of its config)."""
    out: dict[int, str] = {}
    if name not in store.names():
        return out
    for v in sorted(store.list_versions(name), key=lambda v: v.version):
        fold = v.config.get("solution_config", {}).get("data", {}).get("test_fold")
        if fold is not None:
            out[int(fold)] = v.ref
    return out


def ensure_trained(c: Candidate, args: argparse.Namespace, variables: dict[str, str]) -> str:
    """The model argument for ``c`` (``name:N`` or, for folds, ``name:a,name:b,...``),
    training what the store lacks."""
    from abyssal.bench.suite import resolve_overrides
    from abyssal.core.store import ModelStore
    from abyssal.train.api import train

    store = ModelStore()
    overrides = resolve_overrides(c.overrides, args.datasets, variables)
    overrides += [f"train.device={args.device}", *args.override]
    config = CONFIGS / c.config if c.config else None
    if c.folds:
        have = versions_by_fold(store, c.name)
        wanted = [args.fold] if args.fold is not None else list(range(c.folds))
        for k in wanted:
            if k in have:
                continue
            log(f"training {c.name} fold {k}")
            t0 = time.perf_counter()
            train(c.solution, config, [*overrides, f"data.test_fold={k}"], model_name=c.name)
            log(f"{c.name} fold {k}: {time.perf_counter() - t0:.0f} s")
        have = versions_by_fold(store, c.name)
        return ",".join(have[k] for k in sorted(have))
    existing = store.list_versions(c.name) if c.name in store.names() else []
    if existing:
        return max(existing, key=lambda v: v.version).ref
    log(f"training {c.name}")
    t0 = time.perf_counter()
    out = train(c.solution, config, overrides, model_name=c.name)
    log(f"{c.name}: {time.perf_counter() - t0:.0f} s")
    return out.version.ref


README = ROOT / "README.md"
START, END = "<!-- bench:start -->", "<!-- bench:end -->"


def readme_section(out: Path, suites: list[str]) -> str:
    """The README's leaderboards: per suite, where and how it was measured and each task's
    leaderboard table (as ``abyssal bench`` rendered it), then the leaders under perturbation."""
    from abyssal.bench.report import environment_line, md_table, short_label, task_tables

    lines, robust = [], []
    for name in suites:
        board = json.loads((out / name / "leaderboard.json").read_text())
        link = f"benchmarks/results/bench/{name}/leaderboard.md"
        lines += [f"**{board['title']}** ([full leaderboard]({link}), "
                  f"[HTML](benchmarks/results/bench/{name}/leaderboard.html)). "
                  f"{environment_line(board)}", ""]  # fmt: skip
        for task in board["tasks"]:
            lines += [*md_table(*task_tables(task)["leaderboard"]), ""]
            leader = task["results"][0]
            title = task["titles"][task["primary"]]
            for p in leader["perturbations"]:
                d = p["drop"]
                drop = f"{d['difference']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}]"
                clean = leader["metrics"][task["primary"]]["value"]
                moved = p["metrics"][task["primary"]]["value"]
                robust.append([name, short_label(leader["model"]), title, f"{clean:.4f}",
                               p["name"], f"{moved:.4f}", drop])  # fmt: skip
    if robust:
        lines += ["Each suite's leader on perturbed copies of its test split (drop = clean minus "
                  "perturbed, paired bootstrap interval):", ""]  # fmt: skip
        lines += md_table(
            ["suite", "leader", "metric", "clean", "perturbation", "perturbed", "drop [95% CI]"],
            robust,
        )
    return "\n".join(lines).rstrip() + "\n"


def write_readme(out: Path, suites: list[str]) -> int:
    """Replace the README's text between the bench markers with :func:`readme_section`."""
    text = README.read_text()
    if START not in text or END not in text:
        log(f"README.md has no {START} ... {END} block")
        return 1
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    README.write_text(f"{head}{START}\n{readme_section(out, suites)}{END}{tail}")
    log(f"README.md: {len(suites)} leaderboards")
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--suites", default=",".join(CANDIDATES), help="comma-separated suites")
    p.add_argument("--datasets", default=str(ROOT.parent / "shared" / "datasets"))
    p.add_argument("--var", action="append", default=[], help="NAME=VALUE suite variables")
    p.add_argument("--device", default="cpu")
    p.add_argument("--home", help="ABYSSAL_HOME for the store and runs (default: as set)")
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--resamples", type=int, default=1000)
    p.add_argument("--train-only", action="store_true", help="train what is missing, no bench")
    p.add_argument("--fold", type=int, help="kfold suites with --train-only: only this fold")
    p.add_argument("--only", help="with --train-only: only this candidate (by name)")
    p.add_argument(
        "--readme",
        action="store_true",
        help="rewrite the README's leaderboard section from the kept leaderboards in --out",
    )
    p.add_argument(
        "--render-only",
        action="store_true",
        help="write leaderboard.md and .html again from each suite's leaderboard.json in --out",
    )
    p.add_argument("--override", action="append", default=[], help="key=value for training")
    args = p.parse_args()
    if args.home:
        os.environ["ABYSSAL_HOME"] = str(Path(args.home).resolve())
    variables = dict(v.split("=", 1) for v in args.var)
    from abyssal.bench.report import render_markdown, write_leaderboard
    from abyssal.bench.runner import run_suite
    from abyssal.bench.suite import load_suite

    if args.readme:
        return write_readme(args.out, [n for n in CANDIDATES if (args.out / n).is_dir()])
    if args.render_only:
        from abyssal.bench.report import render_html

        for name in args.suites.split(","):
            folder = args.out / name
            if (folder / "leaderboard.json").is_file():
                board = json.loads((folder / "leaderboard.json").read_text())
                (folder / "leaderboard.md").write_text(render_markdown(board))
                (folder / "leaderboard.html").write_text(render_html(board))
                log(f"{name}: rendered again")
        return 0
    for name in args.suites.split(","):
        chosen = [c for c in CANDIDATES[name] if args.only in (None, c.name)]
        models = [ensure_trained(c, args, variables) for c in chosen]
        if args.train_only:
            continue
        command = ["abyssal", "bench", "run", name, *models, "--datasets", args.datasets]
        used = " ".join(o for t in load_suite(name).tasks for o in t.data)
        command += [f"--var={v}" for v in args.var if "${" + v.split("=", 1)[0] + "}" in used]
        if args.device != "cpu":
            command += ["--device", args.device]
        board = run_suite(
            load_suite(name),
            models,
            datasets=args.datasets,
            variables=variables,
            device=None if args.device == "cpu" else args.device,
            resamples=args.resamples,
            command=" ".join(shlex.quote(c) for c in command),
        )
        folder = write_leaderboard(board, out=args.out / name)
        print(render_markdown(board))
        log(f"{name}: {folder}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
