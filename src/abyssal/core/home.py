"""Where abyssal keeps its state: the model store and the run records.

``$ABYSSAL_HOME`` when set, else ``~/.abyssal``; an explicit folder always wins.
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_HOME = "~/.abyssal"
"""The home folder when neither an explicit folder nor ``$ABYSSAL_HOME`` is given."""


def abyssal_home(root: str | os.PathLike[str] | None = None) -> Path:
    """The abyssal home folder: ``root`` if given, else ``$ABYSSAL_HOME``, else ``~/.abyssal``.

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
    return Path(os.environ.get("ABYSSAL_HOME") or DEFAULT_HOME).expanduser()
