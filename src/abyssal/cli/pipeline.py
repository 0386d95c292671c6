"""``abyssal pipeline``: run a pipeline file (validate, train, performance test, gate, deploy or
retrain) and show how its last run ended."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


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
    show = psub.add_parser("show", help="how a pipeline's last run ended, step by step")
    show.add_argument("name", help="the pipeline's name, or its state folder")
    show.set_defaults(handler=cmd_pipeline_show)
    p.set_defaults(handler=lambda args: p.print_help() or 2)


def cmd_pipeline_run(args: argparse.Namespace) -> int:
    from abyssal.pipeline.dag import StepResult
    from abyssal.pipeline.run import run_pipeline
    from abyssal.pipeline.spec import load_pipeline

    cfg = load_pipeline(args.file, args.overrides)

    def progress(k: int, n: int, result: StepResult) -> None:
        if result.status == "running":
            print(f"[{k}/{n}] {result.name} ...", flush=True)
        elif result.status == "skipped":
            print(f"[{k}/{n}] {result.name}: unchanged since the last run, skipped", flush=True)
        else:
            took = f" in {result.seconds:.1f} s" if result.status == "done" else ""
            why = f": {result.reason}" if result.reason else ""
            print(f"[{k}/{n}] {result.name}: {result.status}{took}{why}", flush=True)

    out = run_pipeline(cfg, state=args.state, progress=progress)
    print(f"\n{cfg.name}: {out.status}: {out.reason}")
    print(f"records: {out.state}")
    print(f"report: {out.report}")
    return 0 if out.status == "deployed" else 1


def cmd_pipeline_show(args: argparse.Namespace) -> int:
    from abyssal.core.errors import AbyssalError
    from abyssal.core.home import abyssal_home

    folder = Path(args.name)
    if not (folder / "summary.json").is_file():
        folder = abyssal_home() / "pipelines" / args.name
    path = folder / "summary.json"
    if not path.is_file():
        raise AbyssalError(f"no pipeline run named {args.name!r} (looked for {path})")
    record = json.loads(path.read_text())
    print(f"{record['pipeline']}: {record['status']}: {record['reason']}")
    for k, attempt in enumerate(record["attempts"]):
        print(f"attempt {k}: {attempt['status']}")
        for step in attempt["steps"]:
            why = f": {step['reason']}" if step["reason"] else ""
            print(f"  {step['name']}: {step['status']}{why}")
            for line in _details(step["name"], step.get("outputs") or {}):
                print(f"      {line}")
    print(f"records: {folder}")
    if (folder / "report.html").is_file():
        print(f"report: {folder / 'report.html'}")
    return 0


def _details(name: str, outputs: dict) -> list[str]:
    """The facts a person looks for in a step's outputs."""
    kind = name.split("-")[0]
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
