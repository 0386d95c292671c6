"""The verbs of the ``abyssal`` command. Each handler calls one library function and prints."""

from __future__ import annotations

import argparse
import json
from typing import Any

from abyssal import __version__
from abyssal.core.display import fmt, table


def register_all(sub: argparse._SubParsersAction) -> None:
    """Add every verb to the CLI."""
    from abyssal.cli.bench import add_bench
    from abyssal.cli.decide import add_decide
    from abyssal.cli.deploy import add_deploy
    from abyssal.cli.feedback import add_feedback
    from abyssal.cli.finetune import add_finetune, add_merge
    from abyssal.cli.govern import add_audit
    from abyssal.cli.new import add_new
    from abyssal.cli.pipeline import add_pipeline
    from abyssal.cli.serve import add_alert_rules, add_keys, add_serve
    from abyssal.cli.ui import add_ui

    for add in (
        _solutions,
        add_new,
        _config,
        _generate,
        _train,
        add_finetune,
        add_merge,
        _evaluate,
        add_bench,
        add_decide,
        add_feedback,
        _predict,
        _optimize,
        add_serve,
        add_keys,
        add_alert_rules,
        add_pipeline,
        add_deploy,
        add_audit,
        add_ui,
        _models,
        _runs,
        _version,
    ):
        add(sub)


# -- solutions, config, version --------------------------------------------------------------


def _solutions(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "solutions", help="list the registered solutions (abyssal's and installed plugins')"
    )
    p.add_argument("--check", action="store_true", help="also import each one and show any error")
    p.set_defaults(handler=cmd_solutions)


def cmd_solutions(args: argparse.Namespace) -> int:
    from abyssal.core.errors import AbyssalError
    from abyssal.solutions import SOLUTIONS, solution_class

    def origin(name: str) -> str:
        plugin = SOLUTIONS.origin(name)
        return "abyssal" if plugin is None else f"{plugin.package} {plugin.version}"

    def status(name: str) -> str:
        try:
            solution_class(name)
        except AbyssalError as e:
            return f"error: {e}"
        return "ok"

    heads = ["solution", "from", "what it does", *(["import"] if args.check else [])]
    rows = [[n, origin(n), SOLUTIONS.summary(n), *([status(n)] if args.check else [])]
            for n in SOLUTIONS]  # fmt: skip
    print(table(heads, rows))
    for name, who in SOLUTIONS.conflicts().items():
        print(f"solution '{name}' is claimed by {who}: unusable until one is removed")
    if not args.check and any(SOLUTIONS.origin(n) for n in SOLUTIONS):
        print("plugins are listed from their metadata, not imported: `abyssal solutions --check` "
              "imports each one and shows its error, if any")  # fmt: skip
    return 0


def _registries() -> list[Any]:
    """Every registry plugins may extend (importing them imports torch)."""
    from abyssal.data.tables import READERS
    from abyssal.govern.audit import AUDIT_CHECKS
    from abyssal.nn.backbones import BACKBONES
    from abyssal.nn.encoders import ENCODERS
    from abyssal.nn.fusion import FUSIONS
    from abyssal.nn.variants import VARIANTS
    from abyssal.pipeline.steps import STEPS
    from abyssal.serve.cache import CACHES
    from abyssal.solutions import SOLUTIONS
    from abyssal.train.optim import OPTIMIZERS, SCHEDULES
    from abyssal.train.strategy import STRATEGIES

    return [
        SOLUTIONS, STRATEGIES, OPTIMIZERS, SCHEDULES, ENCODERS, BACKBONES, FUSIONS, VARIANTS,
        READERS, CACHES, STEPS, AUDIT_CHECKS,
    ]  # fmt: skip


def _config(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("config", help="show a solution's config keys, defaults and help")
    p.add_argument("solution", help="solution name, e.g. fraud")
    p.add_argument("--yaml", action="store_true", help="print the defaults as a YAML file")
    p.set_defaults(handler=cmd_config)


def cmd_config(args: argparse.Namespace) -> int:
    import yaml

    from abyssal.core.config import config_help, config_to_dict
    from abyssal.solutions import get_solution

    cls = get_solution(args.solution).config_cls
    if args.yaml:
        print(yaml.safe_dump(config_to_dict(cls()), sort_keys=False), end="")
    else:
        print(table(["key", "default", "help"], config_help(cls)))
    return 0


def _version(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "version", help="print the abyssal, torch and Python versions and installed plugins"
    )
    p.set_defaults(handler=cmd_version)


def cmd_version(args: argparse.Namespace) -> int:
    import platform

    import torch

    print(f"abyssal {__version__}")
    print(f"torch {torch.__version__} (CUDA available: {torch.cuda.is_available()})")
    print(f"python {platform.python_version()} on {platform.platform()}")
    rows = [[p.group, p.name, p.package, p.version] for r in _registries() for p in r.plugins()]
    if rows:
        print(table(["plugin group", "name", "package", "version"], rows))
    else:
        print("plugins: none installed")
    for registry in _registries():
        for name, who in registry.conflicts().items():
            print(f"{registry.kind} '{name}' is claimed by {who}: unusable until one is removed")
    return 0


# -- data -------------------------------------------------------------------------------------


def _generate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "generate",
        help="write a solution's sample data (see `abyssal generate SOLUTION --help-options`)",
    )
    p.add_argument("solution", help="solution name, e.g. fraud")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="sample options")
    p.add_argument("--out", help="folder to write to")
    p.add_argument("--help-options", action="store_true", help="list the solution's sample options")
    p.set_defaults(handler=cmd_generate)


def cmd_generate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from abyssal.core.config import config_help, load_config
    from abyssal.core.errors import ConfigError
    from abyssal.solutions import get_solution

    solution = get_solution(args.solution)
    if solution.sample_config_cls is None:
        raise ConfigError(f"solution '{args.solution}' has no sample data to generate")
    if args.help_options:
        print(table(["key", "default", "help"], config_help(solution.sample_config_cls)))
        return 0
    if not args.out:
        raise ConfigError("generate needs --out FOLDER")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; give a folder")
    options = load_config(solution.sample_config_cls, None, args.overrides)
    lines = solution.generate_sample(options, out)
    print(f"wrote {args.solution} sample data to {out}/")
    for line in lines:
        print(f"  {line}")
    return 0


# -- train, evaluate, predict -----------------------------------------------------------------


def _train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a solution and register the model version")
    p.add_argument("solution", help="solution name, e.g. fraud")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    p.add_argument("--config", help="YAML config file (see `abyssal config SOLUTION --yaml`)")
    p.add_argument(
        "--resume", metavar="RUN", help="continue run RUN (or 'latest') from its checkpoint"
    )
    p.add_argument("--name", help="model name in the store (default: the solution name)")
    p.add_argument("--alias", help="point this alias (e.g. candidate) at the new version")
    p.add_argument(
        "--nproc",
        type=_positive,
        metavar="N",
        help="start N processes on this host with torchrun (one per GPU, or N CPU processes); "
        "needs a distributed train.strategy (ddp, fsdp, parameter_server)",
    )
    p.set_defaults(handler=cmd_train)


def cmd_train(args: argparse.Namespace) -> int:
    from abyssal.solutions import get_solution
    from abyssal.train.api import train

    if args.nproc is not None:
        from abyssal.cli.launch import launch_torchrun

        return launch_torchrun(args.nproc, args.argv)
    out = train(
        args.solution,
        args.config,
        args.overrides,
        resume=args.resume,
        model_name=args.name,
        alias=args.alias,
    )
    if out is None:  # another process of a distributed launch reports
        return 0
    print(f"\nrun {out.run.id}: registered {out.version.ref}")
    _print_metrics(get_solution(args.solution).metric_layout, out.metrics)
    return 0


def _print_metrics(layout: Any, metrics: dict[str, Any]) -> None:
    headers, rows = layout.table(metrics)
    if rows:
        print(table(headers, rows))
    extras = layout.extra_values(metrics)
    if extras:
        print("  ".join(f"{k}={fmt(v)}" for k, v in extras.items()))
    for split, headers, matrix in layout.confusion_tables(metrics):
        print(f"confusion matrix ({split}):")
        print(table(headers, matrix))


def _evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="evaluate a model version on its (or other) data")
    p.add_argument("model", help="model ref: NAME, NAME:VERSION or NAME:ALIAS")
    p.add_argument(
        "overrides", nargs="*", metavar="key=value", help="config overrides, e.g. data.path="
    )
    p.add_argument("--json", action="store_true", help="print metrics as JSON")
    p.set_defaults(handler=cmd_evaluate)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from abyssal.bench.evaluate import evaluate

    ev = evaluate(args.model, args.overrides)
    if args.json:
        print(json.dumps({"model": ev.ref, "data": ev.data, "metrics": ev.metrics}, indent=2))
        return 0
    print(f"{ev.ref} on {ev.data}")
    _print_metrics(ev.layout, ev.metrics)
    return 0


def _predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="predict new data with a registered model")
    p.add_argument("solution", help="solution name, e.g. fraud")
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="changes to the model's stored config, e.g. live.on_unknown_account=add",
    )
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--input", help="the data to predict (CSV or Parquet; an image, a folder)")
    what.add_argument(
        "--images", dest="input", help="image solutions: a folder of images, one image, or a CSV"
    )
    what.add_argument(
        "--volumes",
        dest="input",
        help="nodule: a folder of per-nodule volumes, one volume, or a table of nodule_id/path",
    )
    what.add_argument(
        "--scan",
        help="nodule: a whole CT scan (NIfTI, MetaImage, or a DICOM folder); needs --candidates",
    )
    p.add_argument(
        "--candidates",
        metavar="CSV",
        help="with --scan: LUNA16-style seriesuid,coordX,coordY,coordZ (world mm) to score",
    )
    p.add_argument("--model", help="model ref (default: SOLUTION:production if set, else latest)")
    p.add_argument("--out", help="write the predictions here (CSV or Parquet)")
    p.add_argument(
        "--explain", metavar="DIR", help="write explanations (Grad-CAM heat maps as PNG) here"
    )
    p.add_argument(
        "--top", type=_count, default=10, help="how many items of each kind to print (>= 0)"
    )
    p.add_argument(
        "--point",
        help="the operating point the decisions use (default: the version's default one, when "
        "it has kept points: abyssal decide points)",
    )
    p.set_defaults(handler=cmd_predict)


def cmd_predict(args: argparse.Namespace) -> int:
    from abyssal.core.errors import AbyssalError
    from abyssal.solutions.loading import load_model

    if (args.scan is None) != (args.candidates is None):
        raise AbyssalError("--scan and --candidates go together: a scan and its candidate list")
    loaded = load_model(args.model or _default_ref(args.solution), overrides=args.overrides)
    if loaded.solution.name != args.solution:
        raise AbyssalError(
            f"{loaded.version.ref} is a '{loaded.solution.name}' model, not '{args.solution}'"
        )
    options: dict[str, Any] = {} if args.explain is None else {"explain": args.explain}
    if args.scan is not None:
        options["candidates"] = args.candidates
    import pandas as pd

    from abyssal.decide.frames import (
        decide_file,
        decide_rows,
        kept_point,
        log_decided,
        summary_line,
    )

    point = kept_point(loaded, args.point)  # a bad --point is refused before any work
    report = loaded.solution.predict_file(loaded, args.scan or args.input, out=args.out, **options)
    print(report.render(top=args.top))
    if point is None:
        return 0
    frame = getattr(report, "frame", getattr(report, "scores", None))
    if args.out is not None:
        decided = decide_file(loaded, args.out, point)
        print(f"{summary_line(decided, point)}; each row's decision and reason in {args.out}")
    elif isinstance(frame, pd.DataFrame):
        decided = decide_rows(loaded, frame, point)
        print(f"{summary_line(decided, point)} (--out FILE: each row's decision and reason)")
    else:
        print(f"decisions ({point.name}): written per row with --out FILE")
        return 0
    logged = log_decided(loaded, decided)
    if logged:
        print(f"{logged} decisions logged for feedback (abyssal feedback add "
              f"{loaded.version.name} LABELS.csv)")  # fmt: skip
    return 0


def _positive(text: str) -> int:
    """An argparse type: a whole number >= 1."""
    value = _count(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _sizes(text: str) -> list[int]:
    """An argparse type: comma-separated whole numbers >= 1, e.g. ``1,32``."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts:
        raise argparse.ArgumentTypeError("expected sizes such as 1,32")
    return [_positive(p) for p in parts]


def _count(text: str) -> int:
    """An argparse type: a whole number >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _default_ref(name: str) -> str:
    from abyssal.core.store import ModelStore

    return f"{name}:production" if "production" in ModelStore().aliases(name) else f"{name}:latest"


# -- optimize -----------------------------------------------------------------------------------


def _optimize(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "optimize",
        help="build faster versions of a model (compile, ONNX, INT8, CUDA graphs, placement), "
        "measure them and register the winners",
    )
    p.add_argument("model", help="model ref: NAME, NAME:VERSION or NAME:ALIAS")
    p.add_argument(
        "overrides", nargs="*", metavar="key=value", help="config overrides, e.g. data.path="
    )
    p.add_argument("--target", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument(
        "--methods",
        help="comma-separated methods or groups (compile, onnx, int8, cudagraphs, ...; "
        "default: every method for the target; --methods help lists them)",
    )
    p.add_argument(
        "--batch-sizes",
        type=_sizes,
        default=[1, 32],
        help="measured batch sizes, comma-separated (default 1,32)",
    )
    p.add_argument(
        "--target-batch", type=_positive, default=1, help="the batch size the guard compares at"
    )
    p.add_argument(
        "--tolerance",
        type=float,
        default=0.01,
        help="largest allowed loss of the validation metric, in its units (default 0.01)",
    )
    p.add_argument(
        "--min-gain",
        type=float,
        default=0.05,
        help="how much faster (p50, fraction) than the parent a candidate must be (default 0.05)",
    )
    p.add_argument(
        "--reps", type=_positive, default=100, help="timed calls per measurement at most"
    )
    p.add_argument(
        "--keep", choices=("best", "all"), default="best", help="register the best or all winners"
    )
    p.add_argument("--picture", help="write the graph coloured by device here (SVG)")
    p.add_argument("--json", help="write the full report here (JSON)")
    p.set_defaults(handler=cmd_optimize)


def cmd_optimize(args: argparse.Namespace) -> int:
    from pathlib import Path

    from abyssal.optimize import method_rows, optimize_version

    if args.methods == "help":
        print(table(["method", "target", "what it does"], method_rows()))
        return 0
    methods = [m.strip() for m in args.methods.split(",") if m.strip()] if args.methods else None
    report = optimize_version(
        args.model,
        target=args.target,
        methods=methods,
        keep=args.keep,
        overrides=args.overrides,
        picture=Path(args.picture) if args.picture else None,
        log=print,
        batch_sizes=args.batch_sizes,
        target_batch=args.target_batch,
        tolerance=args.tolerance,
        min_gain=args.min_gain,
        reps=args.reps,
    )
    print()
    print(report.render())
    if args.json:
        from abyssal.core.atomic import write_text_atomic

        write_text_atomic(Path(args.json), json.dumps(report.to_dict(), indent=2, default=str))
    return 0


# -- models and runs --------------------------------------------------------------------------


def _models(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list, show, alias and compare model versions")
    msub = p.add_subparsers(title="actions", metavar="ACTION")
    lst = msub.add_parser("list", help="list model versions")
    lst.add_argument("name", nargs="?", help="only this model")
    lst.set_defaults(handler=cmd_models_list)
    show = msub.add_parser("show", help="show one version: metrics, config, lineage")
    show.add_argument("model", help="model ref")
    show.set_defaults(handler=cmd_models_show)
    alias = msub.add_parser("alias", help="point an alias (e.g. production) at a version")
    alias.add_argument("model", help="model ref, e.g. fraud:3")
    alias.add_argument("alias", help="alias name, e.g. production")
    alias.set_defaults(handler=cmd_models_alias)
    cmp = msub.add_parser("compare", help="compare two versions: metric deltas, config changes")
    cmp.add_argument("a", help="model ref")
    cmp.add_argument("b", help="model ref")
    cmp.set_defaults(handler=cmd_models_compare)
    gc = msub.add_parser("gc", help="delete files no version uses (and dead writers' temp files)")
    gc.add_argument("--dry-run", action="store_true", help="list what would go, delete nothing")
    gc.set_defaults(handler=cmd_models_gc)
    p.set_defaults(handler=cmd_models_list, name=None)


def cmd_models_list(args: argparse.Namespace) -> int:
    from abyssal.core.store import ModelStore

    versions = ModelStore().list_versions(args.name)
    rows = [
        [v.ref, v.solution, v.created_at[:19], ",".join(v.aliases), *_headline(v), v.run_id]
        for v in versions
    ]
    print(table(["version", "solution", "created", "aliases", "metric", "value", "run"], rows))
    return 0


def _headline(version: Any) -> list[Any]:
    """The version's headline metric (its solution's choice when it was registered)."""
    name = version.config.get("headline_metric") or "test_auprc"
    return [name, version.metrics.get(name)]


def cmd_models_show(args: argparse.Namespace) -> int:
    from abyssal.core.store import ModelStore

    print(json.dumps(ModelStore().resolve(args.model).to_dict(), indent=2, default=str))
    return 0


def cmd_models_alias(args: argparse.Namespace) -> int:
    from abyssal.core.store import ModelStore

    store = ModelStore()
    mv = store.resolve(args.model)
    store.set_alias(mv.name, args.alias, mv.version)
    print(f"{mv.name}:{args.alias} -> {mv.ref}")
    return 0


def cmd_models_compare(args: argparse.Namespace) -> int:
    from abyssal.core.store import ModelStore

    cmp = ModelStore().compare(args.a, args.b)
    rows = [[k, v.get("a"), v.get("b"), v.get("delta")] for k, v in cmp["metrics"].items()]
    print(table(["metric", cmp["a"], cmp["b"], "delta"], rows))
    changes = {k: v for k, v in cmp["config_changes"].items() if not k.startswith("optimization")}
    print(f"\nconfig changes: {len(changes)}; same weights: {cmp['same_weights']}")
    for key, (a, b) in changes.items():
        print(f"  {key}: {a!r} -> {b!r}")
    _print_optimization(ModelStore(), cmp["a"], cmp["b"])
    return 0


def _print_optimization(store: Any, ref_a: str, ref_b: str) -> None:
    """When one version was optimized from the other, the measurements of that one run."""
    for parent, child in ((ref_a, ref_b), (ref_b, ref_a)):
        opt = store.resolve(child).config.get("optimization")
        if not opt or opt.get("parent") != parent:
            continue
        m = opt["measurements"]
        rows = []
        for size in m["parent"]:
            p, c = m["parent"][size], m["candidate"].get(size)
            if c:
                rows.append(
                    [
                        size,
                        p["p50_ms"],
                        c["p50_ms"],
                        p["p99_ms"],
                        c["p99_ms"],
                        p["p50_ms"] / c["p50_ms"],
                    ]
                )
        print(
            f"\n{child} is {parent} optimized with {opt['method']} for {opt['target']}; "
            "measured together in one run:"
        )
        print(
            table(
                [
                    "batch",
                    f"p50 ms {parent}",
                    f"p50 ms {child}",
                    f"p99 ms {parent}",
                    f"p99 ms {child}",
                    "speed-up",
                ],
                rows,
            )
        )
        size_a, size_b = m.get("parent_size_bytes"), m.get("size_bytes")
        if size_a and size_b:
            print(f"size {size_a / 1e6:.2f} MB -> {size_b / 1e6:.2f} MB ({size_a / size_b:.2f}x)")
        if m.get("metric") and m.get("metric_delta") is not None:
            print(
                f"{m['metric']} change {m['metric_delta']:+.4f}; largest output difference "
                f"{fmt(m.get('max_abs_diff'))}"
            )


def cmd_models_gc(args: argparse.Namespace) -> int:
    from abyssal.core.store import ModelStore

    report = ModelStore().gc(dry_run=args.dry_run)
    rows = [[str(item.path), item.bytes, item.reason] for item in report.items]
    if rows:
        print(table(["file", "bytes", "why"], rows))
    verb = "would delete" if args.dry_run else "deleted"
    print(f"{verb} {len(rows)} files, {report.total_bytes:,} bytes")
    return 0


def _runs(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("runs", help="list runs, or show one")
    p.add_argument("run", nargs="?", help="run id (or 'latest') to show")
    p.set_defaults(handler=cmd_runs)


def cmd_runs(args: argparse.Namespace) -> int:
    from abyssal.core.runs import Run, list_runs

    if args.run:
        run = Run.open(args.run)
        shown = {**run.info, "status": run.status, "locked_by": run.locked_by()}
        print(json.dumps(shown, indent=2, default=str))
        return 0
    rows = [[r.id, r.kind, r.status, ",".join(r.info.get("outputs", []))] for r in list_runs()]
    print(table(["run", "kind", "status", "outputs"], rows))
    return 0
