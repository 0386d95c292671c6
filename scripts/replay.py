"""Replay the rows of a CSV against a running abyssal service, then print its monitor's reading.

Each row becomes one request (its columns as JSON fields; empty cells left out), sent in
batches (``{"instances": [...]}``). ``--scale COLUMN=FACTOR`` multiplies a number column first,
to see what the monitor makes of drifted traffic.

    python3 scripts/replay.py demo/new_transactions.csv --model fraud --rows 0:500
    python3 scripts/replay.py demo/new_transactions.csv --model fraud --rows 500: --scale amount=40
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
import urllib.error
import urllib.request
from typing import Any


def post(url: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def get(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=60) as answer:
        return json.loads(answer.read())


def rows_of(path: str, span: str, scale: dict[str, float]) -> list[dict[str, Any]]:
    with open(path, newline="", encoding="utf-8-sig") as fh:
        rows = [{k: v for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(fh)]
    start, _, stop = span.partition(":")
    rows = rows[int(start or 0) : int(stop) if stop else None]
    for row in rows:
        for column, factor in scale.items():
            if column not in row:
                sys.exit(f"--scale: no column {column!r} in {path}")
            row[column] = round(float(row[column]) * factor, 2)
    return rows


def show(reading: dict[str, Any]) -> None:
    for model in reading["models"]:
        print(f"{model['model']} ({model['version']}): {model['samples']} requests in the window, "
              f"reference: {model['reference']}")  # fmt: skip
        p99, errors = model["p99_ms"], model["error_rate"]
        if p99 is not None:
            print(f"  latency p99 {p99:.1f} ms, error rate {errors:.1%}")
        for name, psi in sorted(model["feature_psi"].items(), key=lambda kv: -kv[1]):
            mark = "  DRIFTED" if name in model["drifted"] else ""
            print(f"  input  {name:<24} PSI {psi:7.3f}{mark}")
        for name, psi in sorted(model["prediction_psi"].items(), key=lambda kv: -kv[1]):
            print(f"  output {name:<24} PSI {psi:7.3f}")
        if model["problem"]:
            print(f"  not compared: {model['problem']}")
        print(f"  alerts firing: {', '.join(model['firing']) or 'none'}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv", help="rows to send")
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="the service")
    parser.add_argument("--model", required=True, help="the served model's name")
    parser.add_argument("--rows", default=":", help="START:STOP of the rows to send")
    parser.add_argument("--batch", type=int, default=50, help="requests per call")
    parser.add_argument("--scale", action="append", default=[], metavar="COLUMN=FACTOR")
    args = parser.parse_args()
    scale = {}
    for item in args.scale:
        column, _, factor = item.partition("=")
        scale[column] = float(factor)
    rows = rows_of(args.csv, args.rows, scale)
    endpoint = f"{args.url}/v1/models/{args.model}/predict"
    started, statuses = time.perf_counter(), {}
    for k in range(0, len(rows), args.batch):
        status, answer = post(endpoint, {"instances": rows[k : k + args.batch]})
        statuses[status] = statuses.get(status, 0) + 1
        if status != 200:
            print(f"  rows {k}..: {status} {answer.get('error', '')}")
    took = time.perf_counter() - started
    print(f"sent {len(rows)} rows in {took:.1f} s; answers by status: {statuses}")
    show(get(f"{args.url}/v1/monitor"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
