"""The machine, versions and date a measurement was made with, recorded beside every result."""

from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = ("torch", "numpy", "scikit-learn")


def environment(packages: tuple[str, ...] = PACKAGES) -> dict[str, Any]:
    """A JSON-able record of where and when a measurement ran: date, CPU, cores, platform,
    Python, the GPU (``None`` without CUDA), the versions of abyssal and ``packages``, and the
    git commit of the abyssal checkout when it is one."""
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpu": cpu_model(),
            "cores": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "gpu": gpu_name(),
        },
        "versions": {p: package_version(p) for p in ("abyssal", *packages)},
        **source_commit(),
    }


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def gpu_name() -> str | None:
    """The first CUDA device's name, ``None`` without one (torch is imported only if loaded
    already or installed)."""
    try:
        import torch
    except ImportError:
        return None
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def package_version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


SOURCE_COMMIT_ENV = "ABYSSAL_SOURCE_COMMIT"
"""Names the commit of a copied tree whose own git folder is absent or stale (a GPU machine
that receives the working tree): recorded as given, with no dirty check."""


def source_commit() -> dict[str, Any]:
    """``git_commit`` and ``git_dirty`` of the code that runs: ``$ABYSSAL_SOURCE_COMMIT`` when
    set, else the checkout's own."""
    given = os.environ.get(SOURCE_COMMIT_ENV, "").strip()
    if given:
        return {"git_commit": given, "git_dirty": None, "commit_from": SOURCE_COMMIT_ENV}
    return {"git_commit": git_commit(), "git_dirty": git_dirty()}


def _git(*args: str) -> str | None:
    """``git ARGS`` in the folder abyssal is imported from: its output, or ``None`` outside a
    checkout (or without git)."""
    try:
        out = subprocess.run(
            ["git", *args], capture_output=True, text=True, timeout=5, cwd=Path(__file__).parent
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout if out.returncode == 0 else None


def git_commit() -> str | None:
    """The commit of the checkout abyssal is imported from, if it is a git checkout."""
    out = _git("rev-parse", "HEAD")
    return out.strip() or None if out else None


def git_dirty() -> bool | None:
    """Whether the checkout has changes to tracked files (``None`` outside a checkout): a
    result measured on a dirty tree says so instead of naming a commit it did not run."""
    out = _git("status", "--porcelain", "--untracked-files=no")
    return None if out is None else bool(out.strip())
