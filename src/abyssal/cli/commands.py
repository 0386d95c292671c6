"""The verbs of the ``abyssal`` command. Each handler calls one library function and prints."""

from __future__ import annotations

import argparse
import datetime as dt
import json
from typing import Any

from abyssal import __version__
from abyssal.cli.render import METRIC_HEADERS, fmt, metric_rows, table


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
    from abyssal.solutions import SOLUTIONS, SUMMARIES

    print(table(["solution", "what it does"], [[n, SUMMARIES.get(n, "")] for n in SOLUTIONS]))
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
        help="write SYNTHETIC fraud data: transactions.csv (history) and new_transactions.csv",
    )
    p.add_argument("solution", choices=["fraud"], help="the solution whose data to generate")
    p.add_argument("--out", required=True, help="folder to write to")
    p.add_argument("--users", type=int, default=2000, help="number of users (default 2000)")
    p.add_argument("--rings", type=int, default=12, help="planted fraud rings (default 12)")
    p.add_argument("--days", type=int, default=60, help="days of activity (default 60)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--new-frac", type=float, default=0.02, help="share kept as new (default 0.02)")
    p.set_defaults(handler=cmd_generate)


def cmd_generate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from abyssal.core.atomic import write_text_atomic
    from abyssal.data.tables import write_table
    from abyssal.solutions.fraud.synthetic import generate_transactions, split_stream

    data = generate_transactions(
        n_users=args.users, n_rings=args.rings, days=args.days, seed=args.seed
    )
    history, new = split_stream(data.transactions, args.new_frac)
    out = Path(args.out)
    write_table(history, out / "transactions.csv")
    write_table(new.drop(columns=["label"]), out / "new_transactions.csv")
    rings = [{"ring_id": r.ring_id, "members": r.members, "devices": r.devices} for r in data.rings]
    write_text_atomic(out / "planted_rings.json", json.dumps(rings, indent=1))
    fraud = float(data.transactions["label"].mean())
    print(
        f"wrote SYNTHETIC data to {out}/: transactions.csv ({len(history)} rows, "
        f"{fraud:.1%} fraudulent), new_transactions.csv ({len(new)} rows, no labels), "
        f"planted_rings.json ({len(rings)} rings)"
    )
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
    from abyssal.core.store import ModelStore
    from abyssal.train.api import train

    out = train(
        args.solution, args.config, args.overrides, resume=args.resume, model_name=args.name
    )
    if args.alias:
        ModelStore().set_alias(out.version.name, args.alias, out.version.version)
    print(f"\nrun {out.run.id}: registered {out.version.ref}")
    _print_metrics(out.metrics)
    return 0


def _print_metrics(metrics: dict[str, Any]) -> None:
    rows = metric_rows(metrics, ["", "gbdt_own_", "gbdt_graph_", "txn_"])
    if rows:
        print(table(METRIC_HEADERS, rows))
    rest = {k: v for k, v in metrics.items() if k in ("threshold", "best_epoch", "epochs_run")}
    if rest:
        print("  ".join(f"{k}={fmt(v)}" for k, v in rest.items()))


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
    _print_metrics(ev.metrics)
    return 0


def _predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="score new data with a registered model")
    psub = p.add_subparsers(title="solutions", metavar="SOLUTION")
    f = psub.add_parser("fraud", help="score new transactions against the live graph, find rings")
    f.add_argument("--transactions", required=True, help="new transactions (CSV or Parquet)")
    f.add_argument(
        "--model", help="model ref (default: fraud:production if set, else fraud:latest)"
    )
    f.add_argument("--history", help="transactions for the live graph (default: the training data)")
    f.add_argument("--out", help="write per-transaction scores here (CSV or Parquet)")
    f.add_argument(
        "--allow-new-accounts", action="store_true", help="score users never seen before"
    )
    f.add_argument(
        "--no-neighbourhood",
        action="store_true",
        help="score only each transaction's own accounts (faster; no alerts on neighbours)",
    )
    f.add_argument("--top", type=int, default=10, help="how many transactions and rings to print")
    f.set_defaults(handler=cmd_predict_fraud)


def cmd_predict_fraud(args: argparse.Namespace) -> int:
    from abyssal.solutions.fraud.predict import predict_transactions
    from abyssal.solutions.loading import load_model

    overrides = ["live.on_unknown_account=add"] if args.allow_new_accounts else []
    if args.no_neighbourhood:
        overrides.append("live.rescore_neighbourhood=false")
    loaded = load_model(args.model or _default_ref("fraud"), overrides=overrides)
    rep = predict_transactions(loaded, args.transactions, history=args.history, out=args.out)
    s = rep.scores
    print(
        f"{loaded.version.ref}: scored {len(s)} new transactions, {rep.flagged} flagged; "
        f"latency per transaction p50 {rep.latency_ms(50):.2f} ms, p99 {rep.latency_ms(99):.2f} ms"
    )
    alerted = rep.alerted_accounts
    if alerted:
        shown = ", ".join(alerted[: args.top]) + (" ..." if len(alerted) > args.top else "")
        print(f"{len(alerted)} accounts crossed the risk threshold {rep.threshold:.3f}: {shown}")
    top = s.sort_values("risk", ascending=False).head(args.top)
    cols = ["transaction_id", "risk", "user_risk", "counterparty_risk", "flagged"]
    print(table(cols, top[cols].values.tolist()))
    _print_rings(rep.rings, args.top)
    if rep.output is not None:
        print(f"scores written to {rep.output}")
    return 0


def _print_rings(rings: list, top: int) -> None:
    print(f"\n{len(rings)} suspected rings")
    for ring in rings[:top]:
        when = dt.datetime.fromtimestamp(ring.last_seen, dt.UTC).strftime("%Y-%m-%d %H:%M")
        print(
            f"ring {ring.ring_id}: {ring.size} accounts, mean risk {ring.mean_risk:.2f}, "
            f"total amount {ring.total_amount:,.2f}, last seen {when} UTC"
        )
        print(f"  members: {', '.join(ring.members)}")
        for line in ring.evidence()[:6]:
            print(f"  - {line}")


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
    p.set_defaults(handler=cmd_models_list, name=None)


def cmd_models_list(args: argparse.Namespace) -> int:
    from abyssal.core.store import ModelStore

    versions = ModelStore().list_versions(args.name)
    rows = [
        [
            v.ref,
            v.solution,
            v.created_at[:19],
            ",".join(v.aliases),
            v.metrics.get("test_auprc"),
            v.run_id,
        ]
        for v in versions
    ]
    print(table(["version", "solution", "created", "aliases", "test_auprc", "run"], rows))
    return 0


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


def _runs(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("runs", help="list runs, or show one")
    p.add_argument("run", nargs="?", help="run id (or 'latest') to show")
    p.set_defaults(handler=cmd_runs)


def cmd_runs(args: argparse.Namespace) -> int:
    from abyssal.core.runs import Run, list_runs

    if args.run:
        print(json.dumps(Run.open(args.run).info, indent=2, default=str))
        return 0
    rows = [[r.id, r.kind, r.status, ",".join(r.info.get("outputs", []))] for r in list_runs()]
    print(table(["run", "kind", "status", "outputs"], rows))
    return 0
