"""``abyssal serve``: registered model versions over HTTP (:mod:`abyssal.serve`); ``abyssal keys
new``: an API key for it."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from abyssal.serve.cache import FeatureCache
    from abyssal.serve.monitor import MonitorSettings


def add_serve(sub: argparse._SubParsersAction) -> None:
    from abyssal.cli.commands import _positive

    p = sub.add_parser(
        "serve",
        help="serve registered model versions over HTTP with dynamic batching (FastAPI)",
    )
    p.add_argument(
        "models",
        nargs="+",
        metavar="MODEL",
        help="versions to serve: NAME, NAME:ALIAS, NAME:N; REF@PERCENT (text:8@10) serves REF "
        "beside its name's main version as a canary answering that share of the requests",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: local)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-batch-size", type=_positive, default=32, help="requests per batch")
    p.add_argument(
        "--max-wait-ms",
        type=float,
        default=0.0,
        help="longest a request waits for others to join its batch (default 0, as Triton's: a "
        "request to an idle model runs at once, and batches form from what arrives while the "
        "model is busy; a few ms can help under steady load)",
    )
    p.add_argument("--max-queue", type=_positive, default=1024, help="waiting requests before 503")
    p.add_argument("--timeout-s", type=float, default=30.0, help="per-request timeout (504)")
    p.add_argument(
        "--max-body-bytes", type=_positive, default=8 << 20, help="larger bodies get 413"
    )
    p.add_argument(
        "--allow-paths",
        action="store_true",
        help="let JSON requests name files on this machine (trusted clients only); by default "
        "files come as multipart uploads",
    )
    p.add_argument("--device", help="where the models run (default: the best there is)")
    p.add_argument(
        "--keys", metavar="FILE", help="API keys file (`abyssal keys new`); without it, no key"
    )
    p.add_argument(
        "--cache-entries",
        type=int,
        default=10_000,
        help="feature vectors (e.g. text embeddings) kept in memory by content and version; "
        "0: no cache",
    )
    p.add_argument("--cache-ttl-s", type=float, default=3600.0, help="a cached vector's life")
    where = p.add_mutually_exclusive_group()
    where.add_argument(
        "--cache",
        metavar="URL",
        help="keep feature vectors in the backend the URL's scheme names: memory:// (the "
        "default), redis://host:6379/0, or one an installed plugin adds (abyssal.caches)",
    )
    where.add_argument(
        "--redis",
        metavar="URL",
        help="keep feature vectors in this Redis server instead (redis://host:6379/0), shared "
        "by every replica pointed at it (as --cache with a redis:// URL)",
    )
    p.add_argument(
        "--state-dir",
        metavar="DIR",
        help="where stateful models (fraud) journal what they ingest, fsynced before each "
        "answer and replayed on restart; without it, their state lives in memory only",
    )
    p.add_argument(
        "--snapshot-every",
        type=int,
        default=1000,
        help="with --state-dir, snapshot a stateful model's state after this many requests so "
        "that a restart replays only the journal after it (0: never)",
    )
    p.add_argument(
        "--follow-s",
        type=float,
        default=5.0,
        help="seconds between checks of the aliases served (e.g. text:production), swapping "
        "in the version an alias moves to; 0: never",
    )
    p.add_argument(
        "--switch-ms",
        type=float,
        default=1.0,
        help="the interpreter's thread switch interval while serving: how long the model's "
        "thread may keep the interpreter before the HTTP thread gets it back (Python's "
        "default is 5 ms, which a request then waits at every turn)",
    )
    m = p.add_argument_group(
        "monitoring", "watch inputs, outputs, latency and errors (GET /v1/monitor, /metrics)"
    )
    m.add_argument(
        "--monitor",
        action="store_true",
        help="compare each model's recent requests with the table it was trained on (or its "
        "first requests) and its predictions with its first ones; alert on drift, latency and "
        "errors",
    )
    _monitor_options(m)
    m.add_argument(
        "--alert-webhook",
        metavar="URL",
        help="POST alerts here as Alertmanager does (e.g. `abyssal pipeline webhook`'s "
        "http://127.0.0.1:9095/alerts, which can start the pipeline)",
    )
    m.add_argument("--alert-every-s", type=float, default=15.0, help="seconds between checks")
    m.add_argument(
        "--monitor-window", type=_positive, default=1000, help="recent requests compared"
    )
    m.add_argument(
        "--monitor-reference",
        type=_positive,
        default=500,
        help="first requests (and answers) that make the reference when there is no training table",
    )
    m.add_argument(
        "--monitor-ignore",
        default="",
        metavar="FIELDS",
        help="request and prediction fields left out of drift, comma-separated (e.g. "
        "timestamp,latency_ms)",
    )
    p.set_defaults(handler=cmd_serve)


def _monitor_options(group: argparse._ArgumentGroup) -> None:
    """The alert limits, shared by ``serve`` and ``alert-rules``."""
    group.add_argument(
        "--alert-psi", type=float, default=0.25, help="PSI from which a field drifted (0.25)"
    )
    group.add_argument(
        "--alert-p99-ms", type=float, default=1000.0, help="latency alert: p99 over this"
    )
    group.add_argument(
        "--alert-error-rate", type=float, default=0.05, help="error alert: failed share over this"
    )


def monitor_settings(args: argparse.Namespace) -> MonitorSettings:
    """The monitor's settings from ``serve`` / ``alert-rules`` arguments."""
    from abyssal.serve.monitor import MonitorSettings

    window = getattr(args, "monitor_window", 1000)
    return MonitorSettings(
        window=window,
        reference_size=getattr(args, "monitor_reference", 500),
        min_samples=min(200, window),
        psi=args.alert_psi,
        prediction_psi=args.alert_psi,
        p99_ms=args.alert_p99_ms,
        error_rate=args.alert_error_rate,
        interval_s=getattr(args, "alert_every_s", 15.0),
        webhook=getattr(args, "alert_webhook", None),
        ignore=tuple(f for f in getattr(args, "monitor_ignore", "").split(",") if f),
    )


def add_alert_rules(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "alert-rules", help="Prometheus alerting rules for a monitored service (YAML)"
    )
    _monitor_options(p)
    p.add_argument("--for", dest="for_", default="5m", help="how long a condition holds first")
    p.add_argument("--out", metavar="FILE", help="write here (default: print)")
    p.set_defaults(handler=cmd_alert_rules)


def cmd_alert_rules(args: argparse.Namespace) -> int:
    from abyssal.core.atomic import write_text_atomic
    from abyssal.serve.monitor import alert_rules

    text = alert_rules(monitor_settings(args), for_=args.for_)
    if args.out:
        write_text_atomic(args.out, text)
        print(f"wrote {args.out}")
    else:
        print(text, end="")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from abyssal.core.errors import ConfigError
    from abyssal.core.optional import require
    from abyssal.serve.app import ServeSettings, create_app
    from abyssal.serve.auth import KeyRing
    from abyssal.serve.batcher import BatchPolicy
    from abyssal.serve.models import AliasFollower, load_served

    uvicorn = require("uvicorn", extra="serve", purpose="abyssal serve")
    policy = BatchPolicy(
        max_batch_size=args.max_batch_size,
        max_wait_ms=args.max_wait_ms,
        max_queue=args.max_queue,
        timeout_s=args.timeout_s,
    )
    keys = KeyRing.from_file(args.keys) if args.keys else None
    cache = feature_cache(args)
    settings = ServeSettings(
        policy,
        max_body_bytes=args.max_body_bytes,
        keys=keys,
        allow_paths=args.allow_paths,
        cache=cache,
        monitor=monitor_settings(args) if args.monitor or args.alert_webhook else None,
    )
    if args.snapshot_every < 0:
        raise ConfigError(f"--snapshot-every must be >= 0, got {args.snapshot_every}")
    if not 0 < args.switch_ms <= 100:
        raise ConfigError(f"--switch-ms must be in (0, 100], got {args.switch_ms}")
    served = load_served(
        args.models,
        device=args.device,
        state_dir=args.state_dir,
        snapshot_every=args.snapshot_every,
    )
    if keys is None:
        print("no --keys: every client may call every model (serve only on a trusted network)")
    follower = AliasFollower(args.follow_s, device=args.device) if args.follow_s > 0 else None
    app = create_app(served, settings, follower=follower)
    for model in served:
        print(f"{model.ref}: POST http://{args.host}:{args.port}/v1/models/{model.name}/predict")
        for canary in model.canaries:
            print(f"  {canary.ref}: canary, {canary.share:.0%} of {model.name}'s requests")
    if settings.monitor is not None:
        where = settings.monitor.webhook or "the log only (no --alert-webhook)"
        print(f"monitor: GET http://{args.host}:{args.port}/v1/monitor; alerts to {where}")
    _json_logs()
    sys.setswitchinterval(args.switch_ms / 1000)
    # our JSON line per request names what uvicorn's access line would, and more
    uvicorn.run(app, host=args.host, port=args.port, log_level="info", access_log=False)
    return 0


def feature_cache(args: argparse.Namespace) -> FeatureCache | None:
    """The feature cache ``serve``'s arguments ask for: ``--cache URL`` (the backend its scheme
    names), ``--redis URL``, else one in memory unless ``--cache-entries`` is 0."""
    from abyssal.serve.cache import open_cache

    entries, ttl_s = args.cache_entries, args.cache_ttl_s
    if getattr(args, "cache", None):
        return open_cache(args.cache, entries=entries, ttl_s=ttl_s)
    if args.redis:
        return open_cache(args.redis, entries=entries, ttl_s=ttl_s, backend="redis")
    if entries > 0:
        return open_cache("memory://", entries=entries, ttl_s=ttl_s)
    return None


def _json_logs() -> None:
    """The service's own log lines (loading, replays, swaps, each request) as JSON on stderr."""
    import json
    import logging
    import sys

    class JsonLines(logging.Formatter):
        def format(self, record: logging.LogRecord) -> str:
            message = record.getMessage()
            try:
                fields = json.loads(message)  # request lines are JSON already
            except ValueError:
                fields = None
            line = {
                "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
                "level": record.levelname.lower(),
                "logger": record.name,
                **(fields if isinstance(fields, dict) else {"message": message}),
            }
            if record.exc_info:
                line["error"] = self.formatException(record.exc_info)
            return json.dumps(line)

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLines())
    root = logging.getLogger("abyssal")
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    root.propagate = False


def add_keys(sub: argparse._SubParsersAction) -> None:
    from abyssal.cli.commands import _positive

    p = sub.add_parser("keys", help="make API keys for `abyssal serve --keys FILE`")
    verbs = p.add_subparsers(dest="verb", required=True, metavar="VERB")
    new = verbs.add_parser("new", help="add a key to a keys file and print it (shown once)")
    new.add_argument("name", help="who holds the key (shown in logs instead of the key)")
    new.add_argument("--file", required=True, help="the keys file (created if missing)")
    new.add_argument("--models", default="*", help="models it may call, comma-separated (*: all)")
    new.add_argument("--rate", type=float, help="requests per second it may make (default: any)")
    new.add_argument("--burst", type=_positive, help="requests it may make at once (default: rate)")
    new.set_defaults(handler=cmd_keys_new)


def cmd_keys_new(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from abyssal.core.atomic import write_text_atomic
    from abyssal.core.errors import ConfigError
    from abyssal.serve.auth import KeyRing, new_key

    path = Path(args.file)
    entries: list = []
    if path.exists():
        KeyRing.from_file(path)  # refuse to add to a broken file
        entries = list(json.loads(path.read_text())["keys"])
    if any(e.get("name") == args.name for e in entries):
        raise ConfigError(f"{path} already has a key named {args.name!r}")
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    key, entry = new_key(args.name, models=models, rate_per_s=args.rate, burst=args.burst)
    KeyRing([*entries, entry])  # the new entry checked with the others
    write_text_atomic(path, json.dumps({"keys": [*entries, entry]}, indent=2) + "\n")
    print(f"{args.name}: {key}")
    print(f"(shown once; {path} stores only its SHA-256 digest)")
    return 0
