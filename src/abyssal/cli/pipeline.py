"""``abyssal pipeline``: run a pipeline file (validate, train, performance test, gate, deploy or
retrain) and show how its last run ended; ``abyssal pipeline webhook``: let an Alertmanager alert
start a run."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def add_pipeline(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "pipeline", help="validate data, train, test, gate and deploy (or retrain) in one run"
    )
    psub = p.add_subparsers(title="actions", metavar="ACTION")
    run = psub.add_parser("run", help="run a pipeline file; a rerun skips finished steps")
    run.add_argument("file", help="the pipeline YAML")
    run.add_argument("overrides", nargs="*", metavar="key=value", help="over the file")
    run.add_argument("--state", help="the records' folder (default: $ABYSSAL_HOME/pipelines/NAME)")
    run.set_defaults(handler=cmd_pipeline_run)
    show = psub.add_parser("show", help="how a pipeline run ended, step by step")
    show.add_argument(
        "name", help="a pipeline's name (its last run), a pipeline run's id, or a state folder"
    )
    show.set_defaults(handler=cmd_pipeline_show)
    upd = psub.add_parser(
        "update",
        help="continual update: fine-tune the deployed version on new labelled rows (with "
        "replay of its older data), gated before the alias moves",
    )
    upd.add_argument("file", help="the pipeline YAML")
    upd.add_argument("--new", required=True, help="the new labelled rows (CSV or Parquet)")
    upd.add_argument("--replay", type=float, default=0.25,
                     help="share of the deployed version's training rows (or groups) replayed "
                     "beside the new ones (default 0.25; 0: none)")  # fmt: skip
    upd.add_argument(
        "--replay-by",
        metavar="COLUMN",
        help="replay whole groups of this column (e.g. user_id), not single rows",
    )
    upd.add_argument(
        "--labels-from-feedback",
        action="store_true",
        help="label the new rows from `abyssal feedback` (pending rows left out)",
    )
    upd.add_argument(
        "--window",
        default="30d",
        help="with --labels-from-feedback: the label window (30d, 12h, seconds)",
    )
    upd.add_argument("--id-column", help="the id the feedback joins on (default: validate.keys)")
    upd.add_argument("--set", action="append", default=[], metavar="key=value",
                     help="training overrides for the update (e.g. train.epochs=10)")  # fmt: skip
    upd.add_argument("--seed", type=int, default=0, help="seed of the replay sample")
    upd.set_defaults(handler=cmd_pipeline_update)
    _add_webhook(psub)
    p.set_defaults(handler=lambda args: p.print_help() or 2)


def _progress(k: int, n: int, result: Any) -> None:
    """One line per step as a pipeline runs."""
    if result.status == "running":
        print(f"[{k}/{n}] {result.name} ...", flush=True)
    elif result.status == "skipped":
        print(f"[{k}/{n}] {result.name}: unchanged since the last run, skipped", flush=True)
    else:
        took = f" in {result.seconds:.1f} s" if result.status == "done" else ""
        why = f": {result.reason}" if result.reason else ""
        print(f"[{k}/{n}] {result.name}: {result.status}{took}{why}", flush=True)


def cmd_pipeline_run(args: argparse.Namespace) -> int:
    from abyssal.pipeline.run import run_pipeline
    from abyssal.pipeline.spec import load_pipeline

    cfg = load_pipeline(args.file, args.overrides)
    out = run_pipeline(cfg, state=args.state, progress=_progress)
    print(f"\n{cfg.name}: {out.status}: {out.reason}")
    print(f"records: {out.state} (run {out.run_id})")
    print(f"report: {out.report}")
    return 0 if out.status == "deployed" else 1


def cmd_pipeline_update(args: argparse.Namespace) -> int:
    from abyssal.decide.feedback import parse_duration
    from abyssal.pipeline.spec import load_pipeline
    from abyssal.pipeline.update import update_production

    cfg = load_pipeline(args.file)
    out = update_production(
        cfg,
        args.new,
        replay=args.replay,
        replay_by=args.replay_by,
        overrides=args.set,
        labels_from_feedback=args.labels_from_feedback,
        window_s=parse_duration(args.window),
        id_column=args.id_column,
        seed=args.seed,
        progress=_progress,
    )
    print(f"\n{cfg.name}: {out.status}: {out.reason}")
    moved = out.production_after != out.production_before
    print(f"{cfg.deploy.alias}: {out.production_before}"
          + (f" -> {out.production_after}" if moved else " (unchanged)"))  # fmt: skip
    print(f"trained on {out.new_rows} new + {out.replay_rows} replayed rows: {out.table}")
    print(f"record: {out.record}")
    return 0 if out.status == "deployed" else 1


def cmd_pipeline_show(args: argparse.Namespace) -> int:
    from abyssal.core.errors import AbyssalError
    from abyssal.core.home import abyssal_home

    folder = Path(args.name)
    for place in (abyssal_home() / "pipelines" / args.name, abyssal_home() / "runs" / args.name):
        if not (folder / "summary.json").is_file() and "/" not in args.name:
            folder = place
    path = folder / "summary.json"
    if not path.is_file():
        raise AbyssalError(
            f"no pipeline run {args.name!r}: not a state folder, a pipeline's name or a pipeline "
            f"run's id (looked for {path}); `abyssal runs list` lists the runs"
        )
    record = json.loads(path.read_text())
    print(f"{record['pipeline']}: {record['status']}: {record['reason']}")
    for k, attempt in enumerate(record["attempts"]):
        print(f"attempt {k}: {attempt['status']}")
        for step in attempt["steps"]:
            why = f": {step['reason']}" if step["reason"] else ""
            print(f"  {step['name']}: {step['status']}{why}")
            for line in _details(step["name"], step.get("outputs") or {}):
                print(f"      {line}")
    run = f" (run {record['run']})" if record.get("run") else ""
    print(f"records: {folder}{run}")
    if (folder / "report.html").is_file():
        print(f"report: {folder / 'report.html'}")
    return 0


def _details(name: str, outputs: dict) -> list[str]:
    """The facts a person looks for in a step's outputs (an added step's: its plain values)."""
    from abyssal.pipeline.report import BUILTIN_KINDS, step_kind

    kind = step_kind(name)
    if kind not in BUILTIN_KINDS:
        plain = [f"{k}={v}" for k, v in outputs.items() if isinstance(v, str | int | float | bool)]
        return ["  ".join(plain[:6])] if plain else []
    if kind == "validate" and outputs.get("checked"):
        drift = outputs.get("drifted")
        line = f"{outputs['rows']} rows, {outputs['errors']} errors, {outputs['warnings']} warnings"
        if drift is not None:
            line += f"; drifted from {outputs['reference']}: {', '.join(drift) or 'none'}"
        return [line]
    if kind == "train" and outputs:
        metrics = outputs.get("metrics", {})
        shown = [f"{k}={v:.4g}" for k, v in metrics.items() if k.startswith("test_")][:4]
        extra = f" with {' '.join(outputs['overrides'])}" if outputs.get("overrides") else ""
        return [f"{outputs['ref']}{extra}: {'  '.join(shown)}"]
    if kind == "perf" and outputs:
        return [
            f"batch {outputs['batch']}: p50 {outputs['p50_ms']:.3g} ms, p99 {outputs['p99_ms']:.3g}"
            f" ms, {outputs['throughput']:.4g} items/s, {outputs['size_mb']:.3g} MB, "
            f"{outputs['cost_per_1000']:.3g} per 1,000"
        ]
    if kind == "gate" and outputs:
        return [
            f"{'pass' if c['passed'] else 'FAIL'} {c['metric']} = {c['value']}"
            + (f" (production {c['production']})" if "production" in c else "")
            for c in outputs.get("checks", [])
        ]
    return []


def _add_webhook(psub: argparse._SubParsersAction) -> None:
    hook = psub.add_parser(
        "webhook",
        help="start a pipeline run when a Prometheus Alertmanager alert fires (its webhook)",
    )
    hook.add_argument("file", help="the pipeline YAML")
    hook.add_argument("overrides", nargs="*", metavar="key=value", help="over the file")
    hook.add_argument("--host", default="127.0.0.1", help="address to listen on (default: local)")
    hook.add_argument("--port", type=_port, default=9095, help="0: any free port (default 9095)")
    hook.add_argument("--state", help="the records' folder (default: $ABYSSAL_HOME/pipelines/NAME)")
    hook.add_argument(
        "--alerts",
        metavar="NAME,NAME",
        help="the alert names that may start a run (default: any firing alert)",
    )
    hook.add_argument(
        "--cooldown-s",
        type=float,
        default=600.0,
        help="no new run within this many seconds of the last start (default 600)",
    )
    hook.add_argument(
        "--token-env",
        metavar="VAR",
        help="the environment variable holding the token Alertmanager must send "
        "(Authorization: Bearer TOKEN); without it, no token",
    )
    hook.set_defaults(handler=cmd_pipeline_webhook)


def _port(text: str) -> int:
    """An argparse type: a TCP port, 0 to 65535."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0 to 65535, got {value}")
    return value


def cmd_pipeline_webhook(args: argparse.Namespace) -> int:
    import logging

    from abyssal.core.errors import AbyssalError
    from abyssal.pipeline.webhook import AlertTrigger, serve_webhook

    trigger = AlertTrigger(
        args.file,
        args.overrides,
        state=args.state,
        alerts=_alert_names(args.alerts),
        cooldown_s=args.cooldown_s,
        token=_webhook_token(args.token_env),
    )
    try:
        server = serve_webhook(trigger, args.host, args.port)
    except OSError as exc:
        raise AbyssalError(f"cannot listen on {args.host}:{args.port}: {exc.strerror}") from None
    host, port = server.server_address[:2]
    print(f"listening on http://{host}:{port} (POST /alerts, GET /healthz)")
    print(f"pipeline {trigger.pipeline}: records in {trigger.state}")
    print("the Alertmanager receiver (alertmanager.yml):")
    print(_receiver_snippet(trigger.pipeline, host, port, args.token_env))
    print("Ctrl-C stops it.", flush=True)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    logging.getLogger("abyssal.pipeline.webhook").setLevel(logging.INFO)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("stopped")
    finally:
        server.server_close()
    return 0


def _receiver_snippet(name: str, host: str, port: int, token_env: str | None) -> str:
    """The ``receivers:`` entry that points Alertmanager at the webhook."""
    import socket

    if host in ("", "0.0.0.0"):  # listening everywhere: Alertmanager needs a real name
        host = socket.gethostname()
    lines = [
        "receivers:",
        f"  - name: abyssal-{name}",
        "    webhook_configs:",
        f"      - url: http://{host}:{port}/alerts",
    ]
    if token_env:
        lines += [
            "        http_config:",
            "          authorization:",
            "            type: Bearer",
            f"            credentials: <the value of ${token_env}>",
        ]
    return "\n".join(f"  {line}" for line in lines)


def _alert_names(text: str | None) -> set[str] | None:
    """``--alerts A,B`` as a set of names; ``None`` when not given."""
    from abyssal.core.errors import ConfigError

    if text is None:
        return None
    names = {name.strip() for name in text.split(",") if name.strip()}
    if not names:
        raise ConfigError(f"--alerts names no alert ({text!r}); leave it out for any alert")
    return names


def _webhook_token(var: str | None) -> str | None:
    """The token in the environment variable ``var`` (``--token-env``); ``None`` without one."""
    import os

    from abyssal.core.errors import ConfigError

    if var is None:
        return None
    token = os.environ.get(var, "")
    if not token.strip():
        state = "is not set" if var not in os.environ else "is empty"
        raise ConfigError(f"--token-env {var}: the environment variable {state}")
    return token.strip()
