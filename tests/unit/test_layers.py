"""The layer map of the design notes, checked on the source: imports point down only, and the
CLI knows no solution (it reaches solutions through the registry and the protocol)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "abyssal"

RANK = {
    "core": 0,
    "data": 1,
    "contracts": 2,
    "nn": 3,
    "solutions": 4,
    "train": 5,
    "finetune": 5,
    "optimize": 5,
    "serve": 6,
    "pipeline": 7,
    "govern": 7,
    "bench": 7,
    "deploy": 7,
    "decide": 5,
    "ui": 8,
    "scaffold": 8,
    "cli": 9,
}
"""Layer of each top-level package, bottom (0) to top; a module imports only its layer or lower."""

CLI_MAY_IMPORT = {"abyssal.solutions", "abyssal.solutions.loading"}


def _imports(path: Path) -> list[str]:
    """Every ``abyssal...`` module a file imports, at module level or inside functions."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.startswith("abyssal")]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("abyssal"):
            found.append(node.module)
    return found


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in RANK else None


def _modules() -> list[Path]:
    return sorted(p for p in SRC.rglob("*.py") if _layer(_dotted(p)) is not None)


def _dotted(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    return ".".join(rel.parts).removesuffix(".__init__")


@pytest.mark.parametrize("path", _modules(), ids=lambda p: _dotted(p))
def test_imports_point_down(path: Path) -> None:
    own = _layer(_dotted(path))
    upward = [m for m in _imports(path) if (layer := _layer(m)) and RANK[layer] > RANK[own]]
    assert upward == [], f"{_dotted(path)} ({own}) imports from above: {upward}"


def test_the_cli_imports_no_solution_module() -> None:
    offending = {
        f"{path.name}: {module}"
        for path in (SRC / "cli").rglob("*.py")
        for module in _imports(path)
        if module.startswith("abyssal.solutions") and module not in CLI_MAY_IMPORT
    }
    assert offending == set()


def test_the_checker_catches_an_upward_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from abyssal.train.api import train\n")
    assert _imports(bad) == ["abyssal.train.api"]
    assert RANK[_layer("abyssal.train.api")] > RANK["solutions"]
