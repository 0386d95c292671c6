"""Lineage: what a model version was made from (code, data, parent version).

The model store records :func:`version_lineage` with every version: :func:`code_lineage` (package
release and, in a git checkout, the commit) under the caller's own keys (``data_fingerprint``,
``parent``, ...), so any registered model can be traced back to what produced it.

Example:
    >>> info = code_lineage()
    >>> sorted(info)
    ['git_commit', 'git_dirty', 'package_version']
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import abyssal
from abyssal.core.errors import StoreError

GIT_TIMEOUT_S = 5.0
"""Seconds any one git command may take before lineage gives up on git."""

# Variables that would point git at another repository than the one holding the source.
_GIT_REDIRECTS = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_COMMON_DIR")


def code_lineage() -> dict[str, Any]:
    """The package version and, when the source is a git checkout, its commit and dirty flag.

    ``git_commit`` and ``git_dirty`` are ``None`` when git is missing, times out, or the abyssal
    source is not tracked by a git repository (an installed wheel inside some other repository does
    not borrow that repository's commit). ``git_dirty`` ignores untracked files.

    Returns:
        ``{"package_version": str, "git_commit": str | None, "git_dirty": bool | None}``.

    Example:
        >>> code_lineage()["package_version"] == abyssal.__version__
        True
    """
    source = Path(abyssal.__file__).resolve().parent
    commit: str | None = None
    dirty: bool | None = None
    if _git(source, "ls-files", "--error-unmatch", "__init__.py") is not None:
        commit = _git(source, "rev-parse", "HEAD") or None
        status = _git(source, "status", "--porcelain", "--untracked-files=no")
        dirty = None if commit is None or status is None else bool(status)
    return {"package_version": abyssal.__version__, "git_commit": commit, "git_dirty": dirty}


def version_lineage(
    caller: dict[str, Any] | None, resolve_parent: Callable[[str], str]
) -> dict[str, Any]:
    """:func:`code_lineage` overlaid with the caller's lineage, ``parent`` made a version ref.

    Args:
        caller: the caller's lineage (its keys win), or ``None``.
        resolve_parent: maps a ref (``"base:production"``) to the ``"name:version"`` it means today
            (an alias may move later), raising :class:`StoreError` for an unknown one.

    Returns:
        The merged lineage.

    Example:
        >>> version_lineage({"parent": "base:production"}, lambda ref: "base:3")["parent"]
        'base:3'
    """
    if caller is not None and not isinstance(caller, dict):
        raise StoreError(f"lineage must be a dict, got {type(caller).__name__}")
    merged = {**code_lineage(), **(caller or {})}
    parent = merged.get("parent")
    if parent is None:
        return merged
    if not isinstance(parent, str):
        raise StoreError(f"lineage 'parent' must be a ref like 'name:3', got {parent!r}")
    try:
        merged["parent"] = resolve_parent(parent)
    except StoreError as exc:
        raise StoreError(f"lineage 'parent' does not exist: {exc}") from None
    return merged


def _git(cwd: Path, *args: str) -> str | None:
    """Stripped stdout of ``git *args`` run in ``cwd``, or ``None`` if git failed or is missing."""
    env = {k: v for k, v in os.environ.items() if k not in _GIT_REDIRECTS}
    env["GIT_OPTIONAL_LOCKS"] = "0"  # `git status` must not take index.lock from a user's git
    try:
        done = subprocess.run(
            ["git", *args],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None
