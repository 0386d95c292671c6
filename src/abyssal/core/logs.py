"""Quieting other libraries' log notes for the length of one step.

Example:
    >>> with quiet_loggers("onnx_ir"):
    ...     pass
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator


@contextlib.contextmanager
def quiet_loggers(*names: str, level: int = logging.ERROR) -> Iterator[None]:
    """Let only records of ``level`` or above through the loggers ``names`` while the block
    runs (``""`` is the root logger); their levels are restored afterwards, also on error."""
    loggers = [logging.getLogger(name) for name in names]
    before = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(level)
    try:
        yield
    finally:
        for logger, old in zip(loggers, before, strict=True):
            logger.setLevel(old)
