"""The verbs of the ``abyssal`` command. Each handler calls one library function and prints."""

from __future__ import annotations

import argparse
import json
from typing import Any

from abyssal import __version__
from abyssal.core.display import fmt, table


def register_all(sub: argparse._SubParsersAction) -> None:
    """Add every verb to the CLI."""
    for add in (
        _solutions,
        _config,
        _generate,
        _train,
        _evaluate,
        _predict,
        _models,
        _runs,
        _version,
    ):
        add(sub)


# -- solutions, config, version --------------------------------------------------------------


def _solutions(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("solutions", help="list the registered solutions")
    p.set_defaults(handler=cmd_solutions)


def cmd_solutions(args: argparse.Namespace) -> int:
    from abyssal.solutions import SOLUTIONS

    rows = [[n, SOLUTIONS.summary(n)] for n in SOLUTIONS]
    print(table(["solution", "what it does"], rows))
    return 0


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
    p = sub.add_parser("version", help="print the abyssal, torch and Python versions")
    p.set_defaults(handler=cmd_version)


def cmd_version(args: argparse.Namespace) -> int:
    import platform

    import torch

    print(f"abyssal {__version__}")
    print(f"torch {torch.__version__} (CUDA available: {torch.cuda.is_available()})")
    print(f"python {platform.python_version()} on {platform.platform()}")
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
    p.set_defaults(handler=cmd_train)


def cmd_train(args: argparse.Namespace) -> int:
    from abyssal.solutions import get_solution
    from abyssal.train.api import train

    out = train(
        args.solution,
        args.config,
        args.overrides,
        resume=args.resume,
        model_name=args.name,
        alias=args.alias,
    )
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
    p.add_argument("--input", required=True, help="the data to predict (CSV or Parquet)")
    p.add_argument("--model", help="model ref (default: SOLUTION:production if set, else latest)")
    p.add_argument("--out", help="write the predictions here (CSV or Parquet)")
    p.add_argument(
        "--top", type=_count, default=10, help="how many items of each kind to print (>= 0)"
    )
    p.set_defaults(handler=cmd_predict)


def cmd_predict(args: argparse.Namespace) -> int:
    from abyssal.solutions.loading import load_model

    loaded = load_model(args.model or _default_ref(args.solution), overrides=args.overrides)
    if loaded.solution.name != args.solution:
        from abyssal.core.errors import AbyssalError

        raise AbyssalError(
            f"{loaded.version.ref} is a '{loaded.solution.name}' model, not '{args.solution}'"
        )
    report = loaded.solution.predict_file(loaded, args.input, out=args.out)
    print(report.render(top=args.top))
    return 0


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
    changes = cmp["config_changes"]
    print(f"\nconfig changes: {len(changes)}; same weights: {cmp['same_weights']}")
    for key, (a, b) in changes.items():
        print(f"  {key}: {a!r} -> {b!r}")
    return 0


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
