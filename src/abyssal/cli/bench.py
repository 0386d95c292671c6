"""``abyssal bench``: benchmark suites (``list``, ``show``), scoring model versions on them with
intervals and paired tests (``run``), and the kept leaderboards (``runs``, ``report``)."""

from __future__ import annotations

import argparse
import json
import shlex
import sys

from abyssal.core.display import table


def add_bench(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench", help="benchmark suites: leaderboards with intervals, paired tests, robustness"
    )
    bsub = p.add_subparsers(title="actions", metavar="ACTION")
    ls = bsub.add_parser("list", help="the suites that ship with abyssal")
    ls.set_defaults(handler=cmd_bench_list)
    show = bsub.add_parser("show", help="a suite's tasks: data, metrics, anchors, perturbations")
    show.add_argument("suite", help="a shipped suite's name or a suite file")
    show.set_defaults(handler=cmd_bench_show)
    run = bsub.add_parser("run", help="score model versions on a suite and write its leaderboard")
    run.add_argument("suite", help="a shipped suite's name or a suite file")
    run.add_argument(
        "models",
        nargs="+",
        metavar="MODEL",
        help="model refs (fraud:3, tabular:production); kfold tasks: one version per fold, "
        "joined by commas (nodule:1,nodule:2,...)",
    )
    run.add_argument("--task", action="append", help="only this task (repeatable)")
    run.add_argument("--datasets", metavar="DIR", help="the data folder ${datasets} names")
    run.add_argument(
        "--var",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a suite variable ${NAME} (repeatable)",
    )
    run.add_argument("--device", help="where to score (cpu, cuda, cuda:1; default: cpu)")
    run.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples (1000)")
    run.add_argument("--confidence", type=float, default=0.95, help="interval level (0.95)")
    run.add_argument("--seed", type=int, default=0, help="the resampling seed (0)")
    run.add_argument("--out", metavar="DIR", help="also write the leaderboard files here")
    run.add_argument("--json", action="store_true", help="print the leaderboard JSON")
    run.set_defaults(handler=cmd_bench_run)
    runs = bsub.add_parser("runs", help="the kept leaderboards, newest first")
    runs.set_defaults(handler=cmd_bench_runs)
    report = bsub.add_parser("report", help="print a kept leaderboard as markdown")
    report.add_argument("id", help="the bench run's id (abyssal bench runs)")
    report.set_defaults(handler=cmd_bench_report)
    p.set_defaults(handler=lambda _args: p.print_help() or 2)


def cmd_bench_list(args: argparse.Namespace) -> int:
    from abyssal.bench.suite import load_suite, shipped_suites

    rows = []
    for name in shipped_suites():
        suite = load_suite(name)
        solutions = sorted({t.solution for t in suite.tasks})
        rows.append([name, ", ".join(solutions), ", ".join(t.name for t in suite.tasks),
                     suite.title])  # fmt: skip
    print(table(["suite", "solution", "tasks", "what"], rows))
    return 0


def cmd_bench_show(args: argparse.Namespace) -> int:
    from abyssal.bench.suite import load_suite, suite_path

    suite = load_suite(args.suite)
    print(f"{suite.name}: {suite.title}  ({suite_path(args.suite)})")
    if suite.description:
        print(suite.description.strip())
    for t in suite.tasks:
        print(f"\ntask {t.name} ({t.solution}): {t.title}")
        print(f"  data overrides: {' '.join(t.data) or '(the model config as stored)'}")
        proto = t.protocol
        extra = f", fold field {proto.key}" if proto.kind == "kfold" else ""
        extra += f", resampled by {proto.group}" if proto.group else ""
        print(f"  protocol: {proto.kind}{extra}")
        print(f"  metrics: {', '.join(t.metrics)} (ranked by {t.primary})")
        if t.perturbations:
            print(f"  perturbations: {', '.join(t.perturbations)}")
        for s in t.slices:
            print(f"  slice {s.name}: {s.where}")
        for a in t.anchors:
            print(f"  anchor {a.name}: {a.metric} {a.value:g} ({a.source})")
    return 0


def cmd_bench_run(args: argparse.Namespace) -> int:
    from abyssal.bench.report import render_markdown, write_leaderboard
    from abyssal.bench.runner import run_suite
    from abyssal.bench.suite import load_suite
    from abyssal.core.errors import ConfigError

    variables = {}
    for item in args.var:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ConfigError(f"--var '{item}': write NAME=VALUE")
        variables[name.strip()] = value
    suite = load_suite(args.suite)
    command = "abyssal " + " ".join(shlex.quote(a) for a in getattr(args, "argv", sys.argv[1:]))
    board = run_suite(
        suite,
        args.models,
        tasks=args.task,
        datasets=args.datasets,
        variables=variables,
        device=args.device,
        resamples=args.resamples,
        confidence=args.confidence,
        seed=args.seed,
        command=command,
    )
    folder = write_leaderboard(board, out=args.out)
    if args.json:
        print(json.dumps(board, indent=2))
    else:
        print(render_markdown(board))
    print(f"leaderboard: {folder}/leaderboard.html", file=sys.stderr)
    return 0


def cmd_bench_runs(args: argparse.Namespace) -> int:
    from abyssal.bench.report import list_boards

    rows = [
        [b["id"], b["suite"], ", ".join(b.get("models", [])), b.get("created", "")]
        for b in list_boards()
    ]
    if not rows:
        print("no bench runs yet: abyssal bench run SUITE MODEL...")
        return 0
    print(table(["id", "suite", "models", "created"], rows))
    return 0


def cmd_bench_report(args: argparse.Namespace) -> int:
    from abyssal.bench.report import read_board, render_markdown

    print(render_markdown(read_board(args.id)), end="")
    return 0
