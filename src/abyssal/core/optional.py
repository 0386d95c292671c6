"""One way to import heavy optional libraries.

``require("torch_geometric", extra="fraud")`` returns the module or raises
:class:`~abyssal.core.errors.MissingDependencyError` naming the extra to install.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from abyssal.core.errors import MissingDependencyError


def require(module: str, *, extra: str, purpose: str | None = None) -> ModuleType:
    """Import ``module`` or explain which extra provides it.

    Args:
        module: dotted module name, e.g. ``"torch_geometric.nn"``.
        extra: the abyssal extra that installs it, e.g. ``"fraud"``.
        purpose: optional words on what needs it, for the message.

    Returns:
        The imported module.

    Example:
        >>> np = require("numpy", extra="base")
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        need = f" for {purpose}" if purpose else ""
        raise MissingDependencyError(
            f"'{module}' is needed{need} but is not installed: "
            f"pip install 'abyssal[{extra}]' ({exc})"
        ) from exc
