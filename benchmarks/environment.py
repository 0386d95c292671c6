"""The machine, versions and date a benchmark result was measured with."""

from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path


def environment(
    packages: tuple[str, ...] = ("torch", "torch_geometric", "scikit-learn", "numpy"),
) -> dict:
    """A JSON-able record of where and when the benchmark ran."""
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpu": _cpu_model(),
            "cores": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "gpu": _gpu(),
        },
        "versions": {p: _version(p) for p in ("abyssal", *packages)},
        "git_commit": _git_commit(),
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _gpu() -> str | None:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).parent,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def provenance(result: dict) -> str:
    """One markdown line: when, where, with which versions and command a result was measured."""
    env, v = result["environment"], result["environment"]["versions"]
    return (
        f"Measured {env['date']} on {env['machine']['cpu']} ({env['machine']['cores']} cores), "
        f"torch {v['torch']}, torch_geometric {v['torch_geometric']}, scikit-learn "
        f"{v['scikit-learn']}, abyssal commit {env['git_commit']}. Command: `{result['command']}`"
    )
