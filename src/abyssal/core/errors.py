"""The project's exception types.

Every error a user can cause derives from :class:`AbyssalError`; the CLI prints its message and
exits non-zero without a traceback. Messages name the file, row, column or field and what was
expected.
"""

from __future__ import annotations

from pathlib import Path


class AbyssalError(Exception):
    """Base class for errors caused by input, configuration or state the user controls."""


class ConfigError(AbyssalError):
    """A configuration key, value or file is wrong."""


class RegistryError(AbyssalError):
    """A registry lookup or registration failed (unknown or duplicate name)."""


class StoreError(AbyssalError):
    """The model store could not resolve or write a model version."""


class MissingDependencyError(AbyssalError, ImportError):
    """An optional library is needed for this feature and is not installed."""


class DataError(AbyssalError):
    """Input data is malformed.

    Args:
        message: what was wrong and what was expected.
        path: the file the data came from, if any.
        row: 1-based data row (header excluded) where the problem is, if known.
        column: the column or field concerned, if known.

    Attributes:
        reason: ``message`` without the location prefix (to re-raise with more location).
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | Path | None = None,
        row: int | None = None,
        column: str | None = None,
    ) -> None:
        self.reason = message
        self.path = None if path is None else str(path)
        self.row = row
        self.column = column
        where = []
        if self.path is not None:
            where.append(self.path)
        if row is not None:
            where.append(f"row {row}")
        if column is not None:
            where.append(f"column '{column}'")
        prefix = ", ".join(where)
        super().__init__(f"{prefix}: {message}" if prefix else message)
