"""``abyssal serve``: registered model versions over HTTP (:mod:`abyssal.serve`)."""

from __future__ import annotations

import argparse


def add_serve(sub: argparse._SubParsersAction) -> None:
    from abyssal.cli.commands import _positive

    p = sub.add_parser(
        "serve",
        help="serve registered model versions over HTTP with dynamic batching (FastAPI)",
    )
    p.add_argument(
        "models", nargs="+", metavar="MODEL", help="versions to serve: NAME, NAME:ALIAS, NAME:N"
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: local)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-batch-size", type=_positive, default=32, help="requests per batch")
    p.add_argument(
        "--max-wait-ms", type=float, default=5.0, help="longest a request waits for a batch"
    )
    p.add_argument("--max-queue", type=_positive, default=1024, help="waiting requests before 503")
    p.add_argument("--timeout-s", type=float, default=30.0, help="per-request timeout (504)")
    p.add_argument(
        "--max-body-bytes", type=_positive, default=1 << 20, help="larger bodies get 413"
    )
    p.add_argument("--device", help="where the models run (default: the best there is)")
    p.set_defaults(handler=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    from abyssal.core.optional import require
    from abyssal.serve.app import ServeSettings, create_app
    from abyssal.serve.batcher import BatchPolicy
    from abyssal.serve.models import load_served

    uvicorn = require("uvicorn", extra="serve", purpose="abyssal serve")
    policy = BatchPolicy(
        max_batch_size=args.max_batch_size,
        max_wait_ms=args.max_wait_ms,
        max_queue=args.max_queue,
        timeout_s=args.timeout_s,
    )
    settings = ServeSettings(policy, max_body_bytes=args.max_body_bytes)
    served = load_served(args.models, device=args.device)
    app = create_app(served, settings)
    for model in served:
        print(f"{model.ref}: POST http://{args.host}:{args.port}/v1/models/{model.name}/predict")
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0
