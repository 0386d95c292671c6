"""``abyssal deploy``: a hybrid deployment (edge, private and public tiers behind a router) run
locally (``up``, ``status``, ``down``), routed to replicas that run elsewhere (``route``), packed
into container images and Kubernetes manifests (``build``, ``manifests``), and priced on a load
trace by the simulator (``simulate``)."""

from __future__ import annotations

import argparse
import json
import os
import signal
import time
from pathlib import Path
from typing import Any


def add_deploy(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "deploy", help="edge / private / public tiers behind a router, autoscaled, priced"
    )
    dsub = p.add_subparsers(title="actions", metavar="ACTION")
    up = dsub.add_parser(
        "up", help="start every tier as local processes behind a router (Ctrl-C stops all)"
    )
    _file_args(up)
    up.add_argument("--port", type=int, help="the router's port (default: the file's local.port)")
    up.set_defaults(handler=cmd_deploy_up)
    route = dsub.add_parser(
        "route", help="run only the router, over tiers whose replicas run elsewhere (urls)"
    )
    _file_args(route)
    route.add_argument("--port", type=int, help="the router's port (default: local.port)")
    route.add_argument("--host", help="where it listens (default: local.host)")
    route.add_argument("--log", metavar="FILE", help="one JSON line per request (a load trace)")
    route.set_defaults(handler=cmd_deploy_route)
    status = dsub.add_parser(
        "status", help="tiers, replicas, load and cost of a running deployment"
    )
    status.add_argument("name", nargs="?", help="the deployment (default: the only one up)")
    status.add_argument("--watch", type=float, metavar="S", help="refresh every S seconds")
    status.add_argument("--json", action="store_true", help="print the raw status as JSON")
    status.set_defaults(handler=cmd_deploy_status)
    down = dsub.add_parser("down", help="stop a deployment started with `deploy up`")
    down.add_argument("name", help="the deployment")
    down.set_defaults(handler=cmd_deploy_down)
    p.set_defaults(handler=lambda args: p.print_help() or 2)
    _add_packaging(dsub)


def _file_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", help="the deployment YAML (e.g. deployments/tabular.yaml)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="over the file")


def _load(args: argparse.Namespace) -> Any:
    from abyssal.deploy.spec import load_deployment

    return load_deployment(args.file, args.overrides)


def cmd_deploy_up(args: argparse.Namespace) -> int:
    from abyssal.cli.serve import _json_logs
    from abyssal.deploy.local import LocalDeployment

    cfg = _load(args)
    if args.port is not None:
        cfg.local.port = args.port
    _check_models(cfg)
    local = LocalDeployment(cfg)
    print(f"{cfg.name}: router on {local.router_url} (POST /v1/models/NAME/predict)")
    for tier in cfg.ordered:
        where = ", ".join(tier.urls) if tier.urls else f"{tier.replicas.initial} local replica(s)"
        trust = "sensitive allowed" if tier.trusted else "no sensitive data"
        span = f"{tier.replicas.min}..{tier.replicas.max}"
        models = ", ".join(tier.models)
        print(f"  {tier.name} ({tier.kind}, {trust}): {models} on {tier.device}, {where}, "
              f"{span}, {tier.price_per_hour}/h")  # fmt: skip
    print(f"status: abyssal deploy status {cfg.name}   stop: Ctrl-C or abyssal deploy down "
          f"{cfg.name}")  # fmt: skip
    _json_logs()
    local.run()
    return 0


def _check_models(cfg: Any) -> None:
    """Every served ref resolves in the store before any process starts."""
    from abyssal.core.errors import ConfigError, StoreError
    from abyssal.core.store import ModelStore

    store = ModelStore()
    for tier in cfg.tiers:
        if tier.urls:
            continue
        for ref in tier.models:
            try:
                store.resolve(ref)
            except StoreError as e:
                raise ConfigError(f"tier {tier.name}: {e}") from None


def cmd_deploy_route(args: argparse.Namespace) -> int:
    from abyssal.cli.serve import _json_logs
    from abyssal.core.errors import ConfigError
    from abyssal.core.optional import require
    from abyssal.deploy.local import KEEP_ALIVE_S
    from abyssal.deploy.pool import Pool
    from abyssal.deploy.router import create_router

    uvicorn = require("uvicorn", extra="serve", purpose="abyssal deploy route")
    cfg = _load(args)
    local = [t.name for t in cfg.tiers if not t.urls]
    if local:
        raise ConfigError(
            f"abyssal deploy route needs urls for every tier; {local} have none "
            "(`abyssal deploy up` starts local replicas)"
        )
    pool = Pool(cfg)
    for tier in cfg.tiers:
        for url in tier.urls:
            pool.add(tier.name, url)
    app = create_router(pool, request_log=Path(args.log) if args.log else None)
    host, port = args.host or cfg.local.host, args.port or cfg.local.port
    print(f"{cfg.name}: router on http://{host}:{port} over "
          f"{sum(len(t.urls) for t in cfg.tiers)} replica URL(s)")  # fmt: skip
    _json_logs()
    uvicorn.run(app, host=host, port=port, log_level="warning", timeout_keep_alive=KEEP_ALIVE_S)
    return 0


def _supervisor(name: str | None) -> tuple[str, dict[str, Any]]:
    from abyssal.core.errors import ConfigError
    from abyssal.deploy.local import deployment_folder

    root = deployment_folder("x").parent
    if name is None:
        up = sorted(p.parent.name for p in root.glob("*/supervisor.json"))
        if len(up) != 1:
            raise ConfigError(f"{len(up)} deployments are up ({', '.join(up) or 'none'}); name one")
        name = up[0]
    marker = deployment_folder(name) / "supervisor.json"
    if not marker.is_file():
        known = sorted(p.name for p in root.iterdir()) if root.is_dir() else []
        raise ConfigError(f"deployment {name!r} is not up (known: {', '.join(known) or 'none'})")
    return name, json.loads(marker.read_text())


def cmd_deploy_status(args: argparse.Namespace) -> int:
    from abyssal.core.errors import ConfigError
    from abyssal.deploy.local import deployment_folder

    name, marker = _supervisor(args.name)
    while True:
        try:
            body = _get_json(f"{marker['router']}/v1/deploy/status")
            stale = ""
        except OSError as e:
            saved = deployment_folder(name) / "status.json"
            if not saved.is_file():
                raise ConfigError(
                    f"{name}: the router at {marker['router']} does not answer ({e})"
                ) from None
            body = json.loads(saved.read_text())
            stale = f"(the router does not answer: {e}; last saved status)\n"
        if args.json:
            print(json.dumps(body, indent=1))
        else:
            if args.watch:
                print("\033[2J\033[H", end="")
            print(stale + render_status(body), flush=True)
        if not args.watch:
            return 0
        time.sleep(args.watch)


def _get_json(url: str) -> dict[str, Any]:
    import urllib.request

    with urllib.request.urlopen(url, timeout=5) as answer:
        return json.loads(answer.read())


def render_status(body: dict[str, Any]) -> str:
    """The status as text: one row per tier, then one per replica, then the last events."""
    from abyssal.core.display import table

    def num(value: Any, fmt: str = "{:.2f}") -> str:
        return "-" if value is None else fmt.format(value)

    rows = []
    for t in body["tiers"]:
        ready = sum(1 for r in t["replicas"] if r["state"] == "ready")
        rows.append([
            t["name"], t["kind"], "yes" if t["trusted"] else "no",
            f"{ready}/{t.get('target', '-')} ({t.get('min', '-')}..{t.get('max', '-')})",
            t["routed"], t["sensitive"], t["overflowed"], t["refused"],
            num(t.get("arrival_rps"), "{:.1f}"), num(t.get("utilization")),
            num(t["p99_ms"], "{:.0f}"), num(t.get("cost"), "{:.4f}"),
        ])  # fmt: skip
    heads = ["tier", "kind", "sensitive ok", "ready/target", "answered", "sensitive", "overflowed",
             "refused", "req/s", "util", "p99 ms", "cost"]  # fmt: skip
    lines = [
        f"{body['deployment']}: router {body.get('router', '-')}, up {body.get('up_s', '-')} s, "
        f"{body.get('answered', 0)} answered, cost {num(body.get('cost'), '{:.4f}')}, "
        f"{num(body.get('cost_per_1000'), '{:.4f}')} per 1,000",
        table(heads, rows),
        "",
    ]
    replicas = [
        [r["name"], r["state"], r["url"], r["pid"] or "-", r["inflight"], r["answered"],
         num(r["utilization"]), r["queue"], f"{r['for_s']:.0f}"]
        for t in body["tiers"] for r in t["replicas"]
    ]  # fmt: skip
    heads = ["replica", "state", "url", "pid", "in flight", "answered", "util", "queue", "for s"]
    lines.append(table(heads, replicas) if replicas else "(no replicas)")
    packed = [t for t in body["tiers"] if t.get("model_shares")]
    if packed:
        lines += ["", "models' busy share of one device, and the devices they need packed:"]
        for t in packed:
            shares = ", ".join(f"{m} {v:.2f}" for m, v in sorted(t["model_shares"].items()))
            groups = " | ".join(" + ".join(g) for g in t["packing"])
            lines.append(f"  {t['name']}: {shares} -> {len(t['packing'])} device(s): {groups}")
    events = body.get("events") or []
    if events:
        lines += ["", "recent events:"]
        for e in events[-8:]:
            who = e.get("replica") or e.get("tier") or ""
            lines.append(f"  {e['time']}  {e['event']:<8} {who:<12} {e['why']}")
    return "\n".join(lines)


def cmd_deploy_down(args: argparse.Namespace) -> int:
    from abyssal.core.errors import ConfigError
    from abyssal.deploy.local import alive

    name, marker = _supervisor(args.name)
    pid = int(marker["pid"])
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        raise ConfigError(f"{name}: its supervisor (pid {pid}) is not running") from None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if not alive(pid):
            print(f"{name}: stopped")
            return 0
        time.sleep(0.2)
    raise ConfigError(f"{name}: pid {pid} is still running after 60 s")


def _add_packaging(dsub: argparse._SubParsersAction) -> None:
    """``build``, ``manifests``, ``measure`` and ``simulate``."""
    measure = dsub.add_parser(
        "measure", help="a running replica's service profile (capacity, service times) as JSON"
    )
    measure.add_argument("url", help="the replica (`abyssal serve`), http://host:port")
    measure.add_argument("model", help="the model's name in /v1/models/NAME/predict")
    measure.add_argument("--body", required=True, help="a JSON file: the request to send")
    measure.add_argument("--seconds", type=float, default=10.0, help="time at saturation")
    measure.add_argument("--concurrency", type=int, default=8, help="clients at saturation")
    measure.add_argument("--out", required=True, help="the profile's JSON file")
    measure.set_defaults(handler=cmd_deploy_measure)
    sim = dsub.add_parser(
        "simulate",
        help="replay a load trace against a static allocation and the autoscaler: "
        "utilization, p99, objective violations, cost per 1,000 queries",
    )
    _file_args(sim)
    source = sim.add_mutually_exclusive_group(required=True)
    source.add_argument("--profile", help="a replica's profile (`abyssal deploy measure`)")
    source.add_argument(
        "--capacity", type=float, help="or: a replica's requests a second (made-up service times)"
    )
    sim.add_argument(
        "--trace",
        help="a CSV (time_s,rps[,sensitive_share]) or the requests.jsonl of `deploy up` "
        "(default: a generated business day)",
    )
    sim.add_argument("--base-rps", type=float, default=5.0, help="generated day: night rate")
    sim.add_argument("--peak-rps", type=float, default=100.0, help="generated day: peak rate")
    sim.add_argument(
        "--step-s",
        type=float,
        help="seconds per step: of the generated day and of a request log (default 60); a "
        "CSV's own step is used",
    )
    sim.add_argument("--seed", type=int, default=0)
    sim.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    sim.set_defaults(handler=cmd_deploy_simulate)
    build = dsub.add_parser(
        "build",
        help="a container build context: CPU and CUDA images with the served models, and "
        "Kubernetes manifests per tier",
    )
    _file_args(build)
    build.add_argument("--out", required=True, help="a new or empty folder")
    build.add_argument("--cuda", help="the CUDA image's CUDA release (default: torch's here)")
    build.set_defaults(handler=cmd_deploy_build)
    kube = dsub.add_parser(
        "manifests",
        help="Kubernetes manifests per tier (Deployment, Service, HPA, PDB) and the router",
    )
    _file_args(kube)
    kube.add_argument("--out", required=True, help="where the YAML files go")
    kube.set_defaults(handler=cmd_deploy_manifests)


def cmd_deploy_build(args: argparse.Namespace) -> int:
    from abyssal.deploy.containers import build_context

    cfg = _load(args)
    ctx = build_context(cfg, Path(args.out), cuda=args.cuda)
    print(f"{cfg.name}: build context in {ctx.root}")
    for source, exported in sorted(ctx.refs.items()):
        print(f"  model {source} -> {exported} in the image's store")
    print("build and run:")
    for line in ctx.build_commands():
        print(f"  {line}")
    print(f"  kubectl create namespace {cfg.namespace}")
    print(f"  kubectl apply -f {ctx.root / 'k8s'}")
    return 0


def cmd_deploy_manifests(args: argparse.Namespace) -> int:
    from abyssal.deploy.kube import write_manifests

    cfg = _load(args)
    for path in write_manifests(cfg, Path(args.out)):
        print(f"wrote {path}")
    return 0


def cmd_deploy_measure(args: argparse.Namespace) -> int:
    from abyssal.core.errors import ConfigError
    from abyssal.deploy.profile import measure_service

    try:
        body = json.loads(Path(args.body).read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"--body {args.body}: not a readable JSON file ({e})") from None
    print(f"measuring {args.url} ({args.model}) for about {args.seconds * 4 / 3 + 1:.0f} s ...")
    profile = measure_service(
        args.url, args.model, body, seconds=args.seconds, concurrency=args.concurrency
    )
    profile.save(args.out)
    p50, p99 = (profile.latency_ms.get(k, float("nan")) for k in ("c1_p50", "c1_p99"))
    print(f"capacity {profile.capacity_rps:.1f} requests/s; one client p50 {p50:.1f} ms, "
          f"p99 {p99:.1f} ms")  # fmt: skip
    print(f"wrote {args.out}")
    return 0


def cmd_deploy_simulate(args: argparse.Namespace) -> int:
    from abyssal.core.atomic import write_text_atomic
    from abyssal.core.display import table
    from abyssal.deploy.profile import ServiceProfile
    from abyssal.deploy.simulate import simulate, static_for_peak
    from abyssal.deploy.trace import diurnal, read_trace

    cfg = _load(args)
    if args.profile:
        profile = ServiceProfile.load(args.profile)
    else:
        profile = ServiceProfile.synthetic(args.capacity, model=cfg.model_names[0])
    if args.trace:
        trace = read_trace(args.trace, step_s=args.step_s)
    else:
        trace = diurnal(
            base_rps=args.base_rps, peak_rps=args.peak_rps, step_s=args.step_s or 60.0,
            seed=args.seed,
        )  # fmt: skip
    print(f"{cfg.name}: {trace.name}, {len(trace.rates) * trace.step_s / 3600:.1f} h, peak "
          f"{trace.peak_rps:.1f} rps; replica capacity {profile.capacity_rps:.1f} rps")  # fmt: skip
    peak = static_for_peak(cfg, trace, profile)
    print("simulating request by request: static for the peak, then autoscaled ...", flush=True)
    runs = [
        simulate(cfg, trace, profile, autoscale=False, static_replicas=peak, seed=args.seed,
                 label="static-for-peak"),
        simulate(cfg, trace, profile, autoscale=True, seed=args.seed, label="autoscaled"),
    ]  # fmt: skip
    base = runs[0].cost_per_1k
    rows = [
        [r.label, f"{r.utilization:.1%}", f"{r.p99_ms:.0f}", f"{r.violation_share:.2%}",
         r.refused, r.sensitive_on_untrusted, f"{r.cost:.2f}", f"{r.cost_per_1k:.4f}",
         f"{(r.cost_per_1k / base - 1):+.1%}" if base else "-"]
        for r in runs
    ]  # fmt: skip
    heads = ["allocation", "utilization", "p99 ms", "over objective", "refused",
             "sensitive on public", "cost", "per 1,000", "vs static"]  # fmt: skip
    print(table(heads, rows))
    print(f"static-for-peak replicas: {peak}")
    if args.json:
        write_text_atomic(args.json, json.dumps([r.to_dict() for r in runs], indent=1))
        print(f"wrote {args.json}")
    return 0
