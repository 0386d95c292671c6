"""``abyssal ui``: the web dashboard over the abyssal home (:mod:`abyssal.ui`)."""

from __future__ import annotations

import argparse


def add_ui(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ui",
        help="a web dashboard: model versions and lineage, runs and their curves, pipeline "
        "runs and gates, benchmark leaderboards, audits, live services (read only without "
        "--keys)",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: local)")
    p.add_argument("--port", type=int, default=8600, help="port (default 8600)")
    p.add_argument("--home", metavar="DIR", help="the abyssal home (default: $ABYSSAL_HOME)")
    p.add_argument(
        "--keys",
        metavar="FILE",
        help="API keys file (`abyssal keys new`): a key of it that may use a model can move "
        "that model's aliases here; without it, the dashboard is read only",
    )
    p.add_argument(
        "--service",
        action="append",
        default=[],
        metavar="URL",
        help="a running `abyssal serve` to watch live (its /v1/models, /v1/load and /metrics); "
        "repeat for several",
    )
    p.set_defaults(handler=cmd_ui)


def cmd_ui(args: argparse.Namespace) -> int:
    from abyssal.core.optional import require
    from abyssal.serve.auth import KeyRing
    from abyssal.ui.app import create_dashboard

    uvicorn = require("uvicorn", extra="serve", purpose="abyssal ui")
    keys = KeyRing.from_file(args.keys) if args.keys else None
    app = create_dashboard(args.home, keys=keys, services=args.service)
    mode = f"aliases movable with a key of {args.keys}" if keys else "read only"
    print(f"abyssal ui: {app.state.data.home} on http://{args.host}:{args.port} ({mode})",
          flush=True)  # fmt: skip
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
