"""Where abyssal keeps its state: the model store and the run records.

``$ABYSSAL_HOME`` when set, else ``~/.abyssal``; an explicit folder always wins.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

from abyssal.core.atomic import pid_temp_file
from abyssal.core.errors import AbyssalError

DEFAULT_HOME = "~/.abyssal"
"""The home folder when neither an explicit folder nor ``$ABYSSAL_HOME`` is given."""

_IN_USE: ContextVar[Path | None] = ContextVar("abyssal_home_in_use", default=None)


@contextmanager
def using_home(root: str | os.PathLike[str] | None) -> Iterator[None]:
    """Within the block, :func:`abyssal_home` without an explicit folder means ``root`` (when
    given): what ``train(..., home=H)`` wraps itself in, so that everything it reaches (a
    ``model.pretrained`` ref loaded from the store) reads the same home.

    Example:
        >>> with using_home("/tmp/h"):
        ...     abyssal_home()
        PosixPath('/tmp/h')
    """
    token = _IN_USE.set(Path(root).expanduser() if root is not None else _IN_USE.get())
    try:
        yield
    finally:
        _IN_USE.reset(token)


def abyssal_home(root: str | os.PathLike[str] | None = None) -> Path:
    """The abyssal home folder: ``root`` if given, else the one a :func:`using_home` block
    names, else ``$ABYSSAL_HOME``, else ``~/.abyssal``.

    Args:
        root: an explicit home folder, overriding the environment.

    Returns:
        The folder, with ``~`` expanded (not created).

    Example:
        >>> abyssal_home("/tmp/x")
        PosixPath('/tmp/x')
    """
    if root is not None:
        return Path(root).expanduser()
    in_use = _IN_USE.get()
    if in_use is not None:
        return in_use
    return Path(os.environ.get("ABYSSAL_HOME") or DEFAULT_HOME).expanduser()


def make_folder(path: Path, what: str) -> Path:
    """Create the folder ``path`` (and its parents) unless it exists; say clearly why it cannot be.

    Args:
        path: the folder, e.g. the abyssal home or its ``runs/``.
        what: what it is, for messages (``"abyssal home"``).

    Returns:
        ``path``.

    Raises:
        AbyssalError: ``path`` or a folder above it is a file, or it cannot be created (no
            permission, a read-only file system).

    Example:
        >>> make_folder(Path("/tmp/h/runs"), "runs folder")
        PosixPath('/tmp/h/runs')
    """
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        file = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), path)
        raise AbyssalError(
            f"{what} '{path}': '{file}' is a file, not a folder; set ABYSSAL_HOME to a folder"
        ) from None
    except OSError as exc:
        raise AbyssalError(f"cannot create {what} '{path}': {exc.strerror or exc}") from None
    return path


def check_writable(path: Path, what: str) -> None:
    """Make sure this process can create files in the folder ``path`` (created if missing).

    A real file is created and removed, so permissions, read-only mounts and full disks all show.

    Raises:
        AbyssalError: the folder cannot be created or written; the message names it.

    Example:
        >>> check_writable(abyssal_home(), "abyssal home")
    """
    make_folder(path, what)
    try:
        with pid_temp_file(path, "probe"):
            pass
    except OSError as exc:
        raise AbyssalError(
            f"{what} '{path}' is not writable here ({exc.strerror or exc}); training writes "
            "runs and model versions there: set ABYSSAL_HOME to a folder you can write"
        ) from None
