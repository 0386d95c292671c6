"""The machine, versions and date a benchmark result was measured with."""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any


def environment(
    packages: tuple[str, ...] = ("torch", "torch_geometric", "scikit-learn", "numpy"),
) -> dict:
    """A JSON-able record of where and when the benchmark ran (``abyssal.bench.environment``)."""
    from abyssal.bench.environment import environment as record

    return record(packages)


def provenance(result: dict) -> str:
    """One markdown line: when, where, with which versions and command a result was measured."""
    env, v = result["environment"], result["environment"]["versions"]
    return (
        f"Measured {env['date']} on {env['machine']['cpu']} ({env['machine']['cores']} cores), "
        f"torch {v['torch']}, torch_geometric {v['torch_geometric']}, scikit-learn "
        f"{v['scikit-learn']}, abyssal commit {env['git_commit']}. Command: `{result['command']}`"
    )


def write_result(
    result: dict, out: str | Path, markdown: Callable[[dict], str], *, indent: int | None = 2
) -> None:
    """Write ``<out>.json`` (everything; ``indent=None``: on one line, for results that hold
    per-case arrays) and ``<out>.md`` (the report), and print the report."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=indent))
    text = markdown(result)
    out.with_suffix(".md").write_text(text)
    print(text)


def parse_numbers(text: str) -> list[int]:
    """``"0-9"`` -> 0..9 inclusive; ``"0,3"`` -> [0, 3] (seeds or split numbers)."""
    if "-" in text:
        a, b = text.split("-")
        return list(range(int(a), int(b) + 1))
    return [int(s) for s in text.split(",")]


def interval_cell(rows: list[dict], key: str, digits: int = 3) -> str:
    """``[low, high]``: the median over ``rows`` of each row's 95% bootstrap bounds of ``key``
    (``<key>_low`` / ``<key>_high``, from the solution's evaluation); ``n/a`` if none has them."""
    lows = [r[f"{key}_low"] for r in rows if f"{key}_low" in r]
    highs = [r[f"{key}_high"] for r in rows if f"{key}_high" in r]
    if not lows or not highs:
        return "n/a"
    return f"[{statistics.median(lows):.{digits}f}, {statistics.median(highs):.{digits}f}]"


def target_row(name: str, measured: str, met: bool | None) -> dict:
    """One row of a results' Targets table: met, not met, or not measured (``None``)."""
    status = {True: "met", False: "not met", None: "not measured"}[met]
    return {"target": name, "measured": measured, "status": status}


def number_cell(value: Any, digits: int = 4) -> str:
    """``value`` with ``digits`` decimals; ``-`` for missing or NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


def md_table(headers: list[str], rows: list[list[str]]) -> list[str]:
    """A markdown table's lines (a ``|`` inside a cell becomes ``/``)."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    return lines + ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in rows]


def env_line(env: dict, command: str, packages: tuple[str, ...]) -> str:
    """One markdown line: when, on which machine (and GPU), with which ``packages``' versions,
    at which commit and with which command a result was measured."""
    m, v = env["machine"], env["versions"]
    gpu = f", GPU {m['gpu']}" if m.get("gpu") else ", no GPU"
    versions = ", ".join(f"{p} {v.get(p)}" for p in packages)
    return (
        f"Measured {env['date']} on {m.get('platform', '?')}, {m['cpu']} ({m['cores']} "
        f"cores){gpu}; {versions}; abyssal commit {env['git_commit']}. Command: `{command}`"
    )
