"""``abyssal decide``: operating points of a classifier (``points``: chosen on its validation
split, checked on its test split, kept beside the version) and what they are (``show``): a
binary classifier's approve, review or block; a multi-class classifier's accept or review."""

from __future__ import annotations

import argparse
import json
from typing import Any

from abyssal.core.display import table


def add_decide(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("decide", help="operating points: approve, review or block from a score")
    dsub = p.add_subparsers(title="actions", metavar="ACTION")
    pts = dsub.add_parser(
        "points", help="choose operating points on a version's validation split and keep them"
    )
    pts.add_argument("model", help="model ref (fraud:3, fraud:production)")
    pts.add_argument("--precision", type=float, action="append", default=[],
                     help="block where validation precision reaches this (repeatable)")  # fmt: skip
    pts.add_argument("--recall", type=float, action="append", default=[],
                     help="block from the highest threshold reaching this recall")  # fmt: skip
    pts.add_argument("--review-budget", type=float, action="append", default=[],
                     help="review at most this share of items: the highest-scored (binary) or "
                     "the least confident (multi-class)")  # fmt: skip
    pts.add_argument("--accuracy", type=float, action="append", default=[],
                     help="multi-class: accept a prediction from the lowest confidence whose "
                     "accepted items reach this validation accuracy, review the rest "
                     "(repeatable)")  # fmt: skip
    pts.add_argument("--cost", action="append", default=[], metavar="COSTS",
                     help="missed=A,review=B,false_block=C: the two thresholds of least "
                     "expected cost (repeatable)")  # fmt: skip
    pts.add_argument("--default", help="the point decisions use (default: the first)")
    pts.add_argument("--json", action="store_true", help="print the points as JSON")
    pts.set_defaults(handler=cmd_decide_points)
    show = dsub.add_parser("show", help="a version's kept operating points")
    show.add_argument("model", help="model ref")
    show.add_argument("--json", action="store_true")
    show.set_defaults(handler=cmd_decide_show)
    p.set_defaults(handler=lambda _args: p.print_help() or 2)


def _costs(text: str) -> dict[str, float]:
    from abyssal.core.errors import ConfigError

    out = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        try:
            out[key.strip()] = float(value)
        except ValueError:
            raise ConfigError(f"--cost '{text}': write missed=A,review=B,false_block=C") from None
        if not sep:
            raise ConfigError(f"--cost '{text}': write missed=A,review=B,false_block=C")
    return out


def _num(v: Any) -> str:
    return "-" if v is None else f"{v:.4f}"


def _rows(points: list[Any], test: dict[str, Any] | None) -> list[list[Any]]:
    rows = []
    for p in points:
        t = (test or {}).get(p.name, {})
        a = p.achieved
        rows.append([p.name, _num(p.review_at), _num(p.block_at), _num(a.get("precision")),
                     _num(a.get("recall")), _num(a.get("review_share")),
                     _num(t.get("precision")), _num(t.get("recall")), _num(t.get("review_share")),
                     _num(t.get("expected_cost"))])  # fmt: skip
    return rows


HEADERS = ["point", "review at", "block at", "val precision", "val recall", "val review",
           "test precision", "test recall", "test review", "test cost/item"]  # fmt: skip
MULTICLASS_HEADERS = ["point", "accept at", "val coverage", "val accepted acc", "val review",
                      "test coverage", "test accepted acc", "test review",
                      "test accuracy"]  # fmt: skip
"""A multi-class point's columns: coverage is the share accepted automatically."""


def _multiclass_rows(points: list[Any], test: dict[str, Any] | None) -> list[list[Any]]:
    rows = []
    for p in points:
        t = (test or {}).get(p.name, {})
        a = p.achieved
        rows.append([p.name, _num(p.accept_at), _num(a.get("accept_share")),
                     _num(a.get("accepted_accuracy")), _num(a.get("review_share")),
                     _num(t.get("accept_share")), _num(t.get("accepted_accuracy")),
                     _num(t.get("review_share")), _num(t.get("accuracy"))])  # fmt: skip
    return rows


def _table(points: list[Any], test: dict[str, Any] | None) -> str:
    """The points as a table (the test columns only with ``test``), multi-class points in
    their own, and a line for each accuracy target no threshold reached."""
    binary = [p for p in points if not p.multiclass]
    multi = [p for p in points if p.multiclass]
    parts = []
    kinds = [(binary, HEADERS, _rows, 6), (multi, MULTICLASS_HEADERS, _multiclass_rows, 5)]
    for chosen, headers, rows_of, val_width in kinds:
        if chosen:
            width = None if test is not None else val_width  # without test: validation only
            parts.append(table(headers[:width], [r[:width] for r in rows_of(chosen, test)]))
    for p in multi:
        if p.achieved.get("target_reached") is False:
            parts.append(f"{p.name}: no confidence threshold reaches accepted accuracy "
                         f"{p.spec.get('target'):g} on validation (best "
                         f"{_num(p.achieved.get('best_accepted_accuracy'))}): every item is "
                         "reviewed")  # fmt: skip
    return "\n".join(parts)


def cmd_decide_points(args: argparse.Namespace) -> int:
    from abyssal.core.errors import ConfigError
    from abyssal.decide.points import PointSpec
    from abyssal.decide.version import choose_for_version

    specs = [PointSpec("accuracy", t) for t in args.accuracy]
    specs += [PointSpec("precision", t) for t in args.precision]
    specs += [PointSpec("recall", t) for t in args.recall]
    specs += [PointSpec("review_budget", t) for t in args.review_budget]
    specs += [
        PointSpec("cost", costs=_costs(c), name="cost" if len(args.cost) == 1 else f"cost-{k}")
        for k, c in enumerate(args.cost, 1)
    ]
    if not specs:
        raise ConfigError(
            "name at least one point: --precision, --recall, --review-budget, --cost (binary); "
            "--accuracy, --review-budget (multi-class)"
        )
    out = choose_for_version(args.model, specs, default=args.default)
    if args.json:
        print(json.dumps({**out, "points": [p.as_dict() for p in out["points"]]}, indent=2))
        return 0
    print(f"{out['version']}: operating points chosen on validation, checked on test "
          f"(default: {out['default']})")  # fmt: skip
    print(_table(out["points"], out["test"]))
    return 0


def cmd_decide_show(args: argparse.Namespace) -> int:
    from abyssal.core.store import ModelStore
    from abyssal.decide.store import load_points

    ref = ModelStore().resolve(args.model).ref
    record = load_points(ref)
    if args.json:
        print(json.dumps({**record, "points": [p.as_dict() for p in record["points"]]}, indent=2))
        return 0
    print(f"{ref}: default {record['default']}; chosen on the {record['chosen_on']}")
    print(_table(record["points"], None))
    return 0
