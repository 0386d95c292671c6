"""Content fingerprints of data: the ``data`` field of a model version's lineage.

A fingerprint is ``"sha256:<hex>"``. :func:`fingerprint_file` hashes a file's bytes;
:func:`fingerprint_frame` hashes a canonical text form of a normalised frame, so the same table
gives the same fingerprint whether it came from CSV or Parquet, on any machine and in any run.
:func:`combine_fingerprints` makes one fingerprint of data read from several inputs (an edge list,
its labels, its node attributes), so that changing, adding or dropping any of them changes it.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from abyssal.core.errors import DataError

_CHUNK_BYTES = 1 << 20
_CHUNK_ROWS = 100_000


def fingerprint_frame(frame: pd.DataFrame) -> str:
    """Hash a frame's column names, value kinds and values, in order.

    The canonical form is one header line ``name:kind,...`` (kind is ``int``, ``float``, ``bool``,
    ``datetime`` or ``str``) followed by the rows as CSV, ``\\n``-terminated, floats written in
    their shortest round-trip form, missing values empty. The index is not part of it.

    Args:
        frame: a normalised frame (e.g. from :func:`abyssal.data.tables.validate_columns`).

    Returns:
        ``"sha256:"`` followed by 64 hex digits.

    Example:
        >>> fingerprint_frame(pd.DataFrame({"a": [1, 2]}))[:7]
        'sha256:'
    """
    digest = hashlib.sha256()
    header = ",".join(f"{name}:{_kind(frame[name])}" for name in frame.columns)
    digest.update(header.encode() + b"\n")
    for start in range(0, len(frame), _CHUNK_ROWS):
        chunk = frame.iloc[start : start + _CHUNK_ROWS]
        digest.update(chunk.to_csv(index=False, header=False, lineterminator="\n").encode())
    return f"sha256:{digest.hexdigest()}"


def _kind(column: pd.Series) -> str:
    """A dtype's family, stable across pandas versions (``object`` and ``str`` are both text)."""
    if pd.api.types.is_bool_dtype(column):
        return "bool"
    if pd.api.types.is_integer_dtype(column):
        return "int"
    if pd.api.types.is_float_dtype(column):
        return "float"
    if pd.api.types.is_datetime64_any_dtype(column):
        return "datetime"
    return "str"


def fingerprint_file(path: str | os.PathLike[str]) -> str:
    """Hash a file's bytes.

    Args:
        path: any file.

    Returns:
        ``"sha256:"`` followed by 64 hex digits.

    Raises:
        DataError: the file does not exist or is a folder.

    Example:
        >>> fingerprint_file("transactions.csv")  # doctest: +SKIP
        'sha256:9f86d0...'
    """
    path = Path(path)
    if not path.is_file():
        raise DataError("file not found" if not path.exists() else "not a file", path=path)
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(_CHUNK_BYTES):
            digest.update(block)
    return f"sha256:{digest.hexdigest()}"


def combine_fingerprints(parts: Mapping[str, str | None]) -> str:
    """One fingerprint of several named inputs; an input that is absent (``None``) counts too.

    Args:
        parts: role -> that input's fingerprint (``{"edges": ..., "labels": ..., "nodes": None}``).

    Returns:
        ``"sha256:"`` followed by 64 hex digits, over the sorted ``role=fingerprint`` lines.

    Example:
        >>> a = combine_fingerprints({"edges": "sha256:1", "nodes": None})
        >>> a == combine_fingerprints({"edges": "sha256:1", "nodes": "sha256:2"})
        False
    """
    lines = "".join(f"{role}={parts[role] or '-'}\n" for role in sorted(parts))
    return f"sha256:{hashlib.sha256(lines.encode()).hexdigest()}"


__all__ = ["combine_fingerprints", "fingerprint_file", "fingerprint_frame"]
