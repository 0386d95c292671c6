"""``abyssal new solution NAME``: a ready plugin package for a solution of one's own.

The package has a ``pyproject.toml`` whose ``abyssal.solutions`` entry point names the solution,
the solution (a working classifier of table rows on a generated sample, implementing the
protocol of :class:`abyssal.contracts.solution.Solution`), a config file, tests that train,
register, evaluate, predict and serve it through the command line, and a README. Installed
beside abyssal (``pip install -e DIR``), its tests pass as generated.

Example:
    >>> new_solution("claims", tmp_path / "abyssal-claims")  # doctest: +SKIP
    [PosixPath('.../pyproject.toml'), ...]
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from importlib import resources
from pathlib import Path

from abyssal import __version__
from abyssal.core.errors import ConfigError

NAME = re.compile(r"[a-z][a-z0-9_]{1,39}")
"""A solution name: lowercase letters, digits and underscores, starting with a letter."""

FILES = {
    "pyproject.toml.tmpl": "pyproject.toml",
    "README.md.tmpl": "README.md",
    "config.yaml.tmpl": "configs/{name}.yaml",
    "__init__.py.tmpl": "src/{package}/__init__.py",
    "solution.py.tmpl": "src/{package}/solution.py",
    "test_solution.py.tmpl": "tests/test_{name}.py",
}
"""Template file -> where it goes in the new package."""


def new_solution(name: str, dest: str | Path | None = None) -> list[Path]:
    """Write a plugin package for the solution ``name`` into ``dest``.

    Args:
        name: the solution's name (``abyssal train NAME``), e.g. ``claims``.
        dest: the package folder (default ``./abyssal-NAME``); it must not exist or be empty.

    Returns:
        The files written, in order.

    Raises:
        ConfigError: a name that is not lowercase letters, digits and underscores, a name a
            solution already has (abyssal's own or an installed plugin's), or a folder that
            holds files. Nothing is written then, and a failure while writing leaves nothing.
    """
    from abyssal.solutions import SOLUTIONS

    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise ConfigError(
            f"solution name {name!r}: use 2 to 40 lowercase letters, digits and underscores, "
            "starting with a letter (e.g. claims, steel_coils)"
        )
    if name in SOLUTIONS or name in SOLUTIONS.conflicts():
        origin = SOLUTIONS.origin(name)
        owner = f"the plugin {origin.package}" if origin else "abyssal"
        raise ConfigError(f"solution '{name}' exists already ({owner}); choose another name")
    dist = f"abyssal-{name.replace('_', '-')}"
    folder = Path(dest) if dest is not None else Path.cwd() / dist
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise ConfigError(f"{folder} exists and is not an empty folder; choose another --dir")
    words = {
        "__NAME__": name,
        "__CLASS__": "".join(part.capitalize() for part in name.split("_")),
        "__PACKAGE__": f"abyssal_{name}",
        "__DIST__": dist,
        "__ABYSSAL_VERSION__": __version__,
    }
    templates = resources.files("abyssal.scaffold") / "templates" / "solution"
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    os.chmod(staging, 0o755)  # mkdtemp's folder is private; a package folder is not
    try:
        written = []
        for template, target in FILES.items():
            text = (templates / template).read_text(encoding="utf-8")
            for word, value in words.items():
                text = text.replace(word, value)
            relative = target.format(name=name, package=words["__PACKAGE__"])
            path = staging / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            written.append(folder / relative)
        if folder.exists():
            folder.rmdir()  # empty, checked above
        staging.rename(folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return written
