"""SHA-256 of files and folders, read in chunks so that size never costs memory.

:func:`sha256_file` names content-addressed blobs and checks checkpoints; :func:`fingerprint_path`
identifies an external base model (a Hugging Face folder, say) so that loading can tell whether it
changed since registration.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

CHUNK_BYTES = 1 << 20
"""Bytes read (or copied) at a time."""


def sha256_file(path: str | os.PathLike[str], *, fsync: bool = False) -> str:
    """The hex SHA-256 of a file's content.

    Args:
        path: the file.
        fsync: also flush the file to disk (for a file just written, before renaming it).

    Returns:
        64 lowercase hex digits.

    Example:
        >>> Path("a.txt").write_text("abc")  # doctest: +SKIP
        >>> sha256_file("a.txt")[:16]  # doctest: +SKIP
        'ba7816bf8f01cfea'
    """
    digest = hashlib.sha256()
    with open(path, "rb+" if fsync else "rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK_BYTES), b""):
            digest.update(chunk)
        if fsync:
            os.fsync(fh.fileno())
    return digest.hexdigest()


def fingerprint_path(path: str | os.PathLike[str]) -> str:
    """A SHA-256 that changes when a file's content, or a folder's file names or contents, change.

    A file's fingerprint is :func:`sha256_file`. A folder's is the SHA-256 over its files sorted by
    relative POSIX path, each contributing ``<relative path>\\0<sha256 of content>\\n``; names
    starting with ``.`` (``.git``, ``.cache``) are skipped, symbolic links to files are followed.

    Args:
        path: a file or a folder.

    Returns:
        64 lowercase hex digits.

    Raises:
        FileNotFoundError: ``path`` does not exist.

    Example:
        >>> fingerprint_path("models/bert-base")  # doctest: +SKIP
        '5d41402abc4b2a76b9719d911017c592...'
    """
    root = Path(path)
    if root.is_file():
        return sha256_file(root)
    if not root.is_dir():
        raise FileNotFoundError(f"'{root}' is neither a file nor a folder")
    digest = hashlib.sha256()
    for relative in sorted(_visible_files(root)):
        digest.update(f"{relative}\0{sha256_file(root / relative)}\n".encode())
    return digest.hexdigest()


def _visible_files(root: Path) -> Iterator[str]:
    """Relative POSIX paths of the files under ``root``, leaving out dot-names at any depth."""
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = [d for d in subfolders if not d.startswith(".")]
        for name in files:
            full = Path(folder) / name
            if not name.startswith(".") and full.is_file():
                yield full.relative_to(root).as_posix()


def content_digest(*parts: Any) -> str:
    """A SHA-256 hex digest of ``parts``: bytes, strings, numbers, ``None``, numpy arrays and
    torch tensors (dtype and shape included, so equal bytes of another shape differ), and
    tuples, lists or dicts of them (dict keys sorted).

    Raises:
        TypeError: a part of another type (the error names it).
    """
    digest = hashlib.sha256()
    for part in parts:
        _feed(digest, part)
    return digest.hexdigest()


def _feed(digest: Any, part: Any) -> None:
    if hasattr(part, "detach") and hasattr(part, "cpu"):  # a torch tensor
        part = part.detach().cpu().numpy()
    if isinstance(part, np.ndarray):
        head = f"nd:{part.dtype.str}:{part.shape}:"
        digest.update(head.encode())
        digest.update(np.ascontiguousarray(part).tobytes())
    elif isinstance(part, bytes | bytearray | memoryview):
        digest.update(b"b:%d:" % len(part))
        digest.update(bytes(part))
    elif isinstance(part, str):
        data = part.encode()
        digest.update(b"s:%d:" % len(data))
        digest.update(data)
    elif part is None or isinstance(part, bool | int | float):
        digest.update(f"v:{part!r};".encode())
    elif isinstance(part, tuple | list):
        digest.update(f"l:{len(part)}:".encode())
        for item in part:
            _feed(digest, item)
    elif isinstance(part, dict):
        digest.update(f"d:{len(part)}:".encode())
        for key in sorted(part, key=str):
            _feed(digest, str(key))
            _feed(digest, part[key])
    else:
        raise TypeError(f"content_digest cannot hash a {type(part).__name__}")
