"""The one way abyssal stamps records with the time: ISO-8601 in UTC."""

from __future__ import annotations

from datetime import UTC, datetime


def utc_now(timespec: str = "microseconds") -> str:
    """The current UTC time as ISO-8601 with an explicit ``+00:00`` offset.

    Args:
        timespec: precision, as for :meth:`datetime.isoformat` (``"milliseconds"``, ...).

    Returns:
        E.g. ``"2026-11-28T10:15:02.123456+00:00"``.

    Example:
        >>> utc_now().endswith("+00:00")
        True
    """
    return datetime.now(UTC).isoformat(timespec=timespec)
