"""``abyssal feedback``: confirmed labels of a model's logged predictions (``add``: from a CSV
or JSON-lines file) and what is known of them at a time, with the label delay (``show``)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from abyssal.core.display import table

ROWS_SHOWN = 10
"""How many rows ``show`` prints (the latest events)."""


def add_feedback(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("feedback", help="confirmed labels of logged predictions, label delay")
    fsub = p.add_subparsers(title="actions", metavar="ACTION")
    add = fsub.add_parser("add", help="store confirmed labels from a CSV or JSON-lines file")
    add.add_argument("model", help="model ref (fraud, fraud:3, fraud:production)")
    add.add_argument("file", help="CSV or JSON lines: id (or transaction_id), label, timestamp "
                     "(or labelled_at)")  # fmt: skip
    add.add_argument("--source", default="cli", help="where the labels come from (chargebacks)")
    add.add_argument("--json", action="store_true", help="print the result as JSON")
    add.set_defaults(handler=cmd_feedback_add)
    show = fsub.add_parser("show", help="logged predictions and their labels at a time")
    show.add_argument("model", help="model ref")
    show.add_argument("--as-of", help="ISO-8601 time or Unix seconds (default: now)")
    show.add_argument("--window", help="label window: 30d, 12h, 3600 (default: none, so "
                      "nothing is negative by silence)")  # fmt: skip
    show.add_argument("--json", action="store_true", help="print counts and rows as JSON")
    show.set_defaults(handler=cmd_feedback_show)
    p.set_defaults(handler=lambda _args: p.print_help() or 2)


def cmd_feedback_add(args: argparse.Namespace) -> int:
    from abyssal.core.store import ModelStore
    from abyssal.decide.feedback import add_feedback as store_labels
    from abyssal.decide.feedback_files import read_feedback_file

    name = ModelStore().resolve(args.model).name
    records = read_feedback_file(args.file)
    stored = store_labels(args.model, records, source=args.source)
    if args.json:
        print(json.dumps({"model": name, "stored": stored, "source": args.source}))
    else:
        noun = "label" if stored == 1 else "labels"
        print(f"stored {stored} {noun} for {name} (source: {args.source})")
    return 0


def cmd_feedback_show(args: argparse.Namespace) -> int:
    import time

    from abyssal.core.errors import ConfigError
    from abyssal.core.store import ModelStore
    from abyssal.decide.feedback import feedback_counts, labelled_rows, parse_duration
    from abyssal.decide.feedback import to_unix_seconds as seconds

    try:
        as_of = time.time() if args.as_of is None else seconds(args.as_of)
    except ValueError as e:
        raise ConfigError(f"--as-of: {e}") from None
    window = None if args.window is None else parse_duration(args.window)
    name = ModelStore().resolve(args.model).name
    rows = labelled_rows(args.model, as_of=as_of, window_s=window)
    counts = feedback_counts(rows)
    latest = rows.sort_values("event_time", kind="stable").tail(ROWS_SHOWN)
    if args.json:
        shown = json.loads(latest.to_json(orient="records"))
        print(json.dumps({"model": name, "as_of": as_of, "window_s": window,
                          "counts": counts, "rows": shown}, indent=2))  # fmt: skip
        return 0
    when = _iso(as_of)
    rule = f"window {args.window} ({window} s)" if window is not None else "no label window"
    print(f"{name} as of {when}, {rule}")
    print(table(["logged", "confirmed positive", "confirmed negative", "negative by window",
                 "pending"], [list(counts.values())]))  # fmt: skip
    if len(latest):
        print()
        print(table(["id", "version", "score", "action", "event time", "label"], _rows(latest)))
    return 0


def _rows(frame: Any) -> list[list[Any]]:
    out = []
    for r in frame.itertuples(index=False):
        label = "pending" if r.label != r.label else str(int(r.label))
        if label == "0" and r.labelled_at != r.labelled_at:
            label = "0 (window)"
        out.append([r.id, r.version, r.score, r.action, _iso(r.event_time), label])
    return out


def _iso(seconds: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(float(seconds), UTC).isoformat(timespec="seconds")
