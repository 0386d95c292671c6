"""Fake installed packages for plugin tests: a ``NAME-VERSION.dist-info`` folder with metadata
and entry points on ``sys.path`` is what an installed package is to ``importlib.metadata``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from abyssal.core.registry import Registry

GROUP = "abyssal.test_things"


def fake_package(root: Path, name: str, version: str, entries: dict[str, str],
                 group: str = GROUP, summary: str = "") -> None:  # fmt: skip
    """Declare the package ``name`` ``version`` in ``root`` with ``entries`` in ``group``."""
    info = root / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\nSummary: {summary}\n"
    )
    lines = "\n".join(f"{k} = {v}" for k, v in entries.items())
    (info / "entry_points.txt").write_text(f"[{group}]\n{lines}\n")


@contextmanager
def rediscover(*registries: Registry[Any]) -> Iterator[None]:
    """Let module-level registries find the plugins on ``sys.path`` now; restore them after."""
    saved = [(r, dict(r._lazy), dict(r._summaries), dict(r._entries)) for r in registries]
    for registry in registries:
        registry._plugins, registry._conflicts = None, {}
    try:
        yield
    finally:
        for registry, lazy, summaries, entries in saved:
            registry._lazy, registry._summaries, registry._entries = lazy, summaries, entries
            registry._plugins, registry._conflicts = None, {}
