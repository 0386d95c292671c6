"""Content-addressed artifact files of the model store, and their garbage collection.

Layout under the store's ``blobs/`` folder::

    <sha[:2]>/<sha256>.<format>      one file per distinct content and format (read-only)
    .blob.pid<pid>.<random>.tmp      a file being written; renamed to its address once hashed

Files are streamed: a state dict goes from ``safetensors.torch.save_file`` straight into a
temporary file, a file artifact is copied in 1 MiB chunks while it is hashed, so no artifact is ever
held in memory as one ``bytes`` object. Only then is the file fsync'ed and renamed to its content
address. Blobs are made read-only (the mode the umask gives a new file, ``0o666 & ~umask``, less
every write bit: ``0o444`` under the usual umask ``022``), so a hard link handed out by
``materialize`` cannot be used to change them in place, while the umask still decides who may
read them.

Example:
    >>> folder = BlobFolder(Path("store/blobs"))  # doctest: +SKIP
    >>> record = folder.write(ArtifactSource.json("config.json", "aux", {"r": 8}))  # doctest: +SKIP
    >>> folder.path(record.sha256, record.format).is_file()  # doctest: +SKIP
    True
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from abyssal.core.artifacts import (
    WEIGHTS_NAME,
    ArtifactRecord,
    ArtifactSource,
    ExternalBase,
    check_artifact_set,
)
from abyssal.core.atomic import (
    move_into_place,
    new_file_mode,
    pid_alive,
    pid_temp_file,
    temp_writer_pid,
)
from abyssal.core.digest import sha256_file
from abyssal.core.errors import StoreError

STALE_TEMP_S = 3600.0
"""Seconds after which ``gc`` removes a temporary file whose name does not give its writer's pid."""

BLOB_NAME_RE = re.compile(r"^([0-9a-f]{64})\.([a-z0-9_-]+)$")
WRITE_BITS = 0o222


@dataclasses.dataclass(frozen=True)
class GcItem:
    """One file that garbage collection removes (or, in a dry run, would remove).

    Args:
        path: the file.
        bytes: its size.
        reason: why it may go, e.g. ``"no version references it"``.
    """

    path: Path
    bytes: int
    reason: str


@dataclasses.dataclass(frozen=True)
class GcReport:
    """What :meth:`abyssal.core.store.ModelStore.gc` found and did.

    Args:
        items: every file found removable, in path order.
        dry_run: whether nothing was deleted.
        removed: how many files were deleted (0 in a dry run; a file that vanished meanwhile, say
            a temporary file its writer renamed, is not counted).

    Example:
        >>> report = store.gc(dry_run=True)  # doctest: +SKIP
        >>> report.count, report.total_bytes, report.removed  # doctest: +SKIP
        (2, 5120, 0)
    """

    items: tuple[GcItem, ...]
    dry_run: bool
    removed: int

    @property
    def count(self) -> int:
        """How many files were found removable."""
        return len(self.items)

    @property
    def total_bytes(self) -> int:
        """Their size together."""
        return sum(item.bytes for item in self.items)


class BlobFolder:
    """The content-addressed files of one store.

    Args:
        root: the ``blobs`` folder (created on first write).
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, sha256: str, format: str) -> Path:
        """Where content ``sha256`` in ``format`` lives: ``<root>/<sha[:2]>/<sha256>.<format>``."""
        return self.root / sha256[:2] / f"{sha256}.{format}"

    def write(self, source: ArtifactSource) -> ArtifactRecord:
        """Stream ``source`` into a temporary file, hash it, and rename it to its address.

        An intact file already at the address (same content written before) is kept.

        Raises:
            StoreError: the file cannot be written, or safetensors refuses the tensors.
        """
        try:
            with pid_temp_file(self.root, "blob") as tmp:
                sha256 = _fill(source, tmp)
                size = tmp.stat().st_size
                self._place(tmp, self.path(sha256, source.format), size)
        except OSError as exc:
            raise StoreError(
                f"cannot write artifact '{source.name}' to '{self.root}': {exc}"
            ) from exc
        return ArtifactRecord(source.name, source.role, source.format, sha256, size, source.meta)

    def ensure(self, source: ArtifactSource, record: ArtifactRecord) -> None:
        """Write ``source`` again if its file went missing (a ``gc`` ran after :meth:`write`).

        Raises:
            StoreError: the content is no longer what was first written (a file source changed).
        """
        path = self.path(record.sha256, record.format)
        if path.is_file() and path.stat().st_size == record.size:
            return
        again = self.write(source)
        if again.sha256 != record.sha256:
            raise StoreError(
                f"artifact '{source.name}' changed while it was being registered "
                f"(sha256 {again.sha256}, first written as {record.sha256})"
            )

    def verified(self, record: ArtifactRecord, owner: str) -> Path:
        """The file of ``record`` after checking its SHA-256.

        Args:
            record: the artifact.
            owner: the version ref, for messages.

        Raises:
            StoreError: the file is missing or corrupted; the message names ``owner``, the
                artifact and the path.
        """
        path = self.path(record.sha256, record.format)
        where = f"{owner}: {record.role} file '{path}' (artifact '{record.name}')"
        if not path.is_file():
            raise StoreError(f"{where} is missing")
        found = sha256_file(path)
        if found != record.sha256:
            raise StoreError(f"{where} is corrupted (sha256 {found}, expected {record.sha256})")
        return path

    def check_writable(self) -> None:
        """Write and remove a temporary file here (the folder is created if missing).

        Raises:
            OSError: the folder cannot be created or written.
        """
        with pid_temp_file(self.root, "probe"):
            pass

    def sweep(self, referenced: set[str], *, dry_run: bool) -> GcReport:
        """Find, and unless ``dry_run`` delete, unreferenced blobs and dead writers' temp files.

        Call with the store's write lock held, so that no registration commits meanwhile.

        Args:
            referenced: file names (``<sha256>.<format>``) that some version's artifact uses.
            dry_run: list only.
        """
        items = sorted([*self._orphans(referenced), *self._dead_temps()], key=lambda e: e.path)
        removed = 0
        if not dry_run:
            for item in items:
                with contextlib.suppress(FileNotFoundError):
                    item.path.unlink()
                    removed += 1
        return GcReport(tuple(items), dry_run, removed)

    def _place(self, tmp: Path, dest: Path, size: int) -> None:
        if dest.is_file() and dest.stat().st_size == size:
            return  # same content (same sha256) written before; the temp file is dropped
        move_into_place(tmp, dest, mode=new_file_mode() & ~WRITE_BITS)  # read-only

    def _orphans(self, referenced: set[str]) -> list[GcItem]:
        out = []
        for path in self.root.glob("*/*"):
            found = BLOB_NAME_RE.match(path.name)
            if found and path.parent.name == found.group(1)[:2] and path.name not in referenced:
                out.append(_item(path, "no version references it"))
        return [e for e in out if e is not None]

    def _dead_temps(self) -> list[GcItem]:
        cutoff = time.time() - STALE_TEMP_S
        out = []
        for path in [*self.root.glob(".*.tmp"), *self.root.glob("*/.*.tmp")]:
            pid = temp_writer_pid(path)
            if pid is not None and not pid_alive(pid):
                out.append(_item(path, f"temporary file of a writer no longer running (pid {pid})"))
            elif pid is None and _modified_before(path, cutoff):
                out.append(_item(path, f"temporary file older than {STALE_TEMP_S:.0f} s"))
        return [e for e in out if e is not None]


def sources_to_write(
    state_dict: dict[str, Any] | None,
    artifacts: Sequence[ArtifactSource],
    base: str | ExternalBase | None,
) -> list[ArtifactSource]:
    """The artifacts to write: ``state_dict`` as ``model.safetensors`` first, then the others.

    Raises:
        StoreError: ``artifacts`` is not a sequence of :class:`ArtifactSource`, there is nothing
            to write and no base, or the set breaks a rule (see ``check_artifact_set``).

    Example:
        >>> [s.name for s in sources_to_write({"w": torch.ones(1)}, [], None)]  # doctest: +SKIP
        ['model.safetensors']
    """
    if isinstance(artifacts, ArtifactSource) or not all(
        isinstance(a, ArtifactSource) for a in artifacts
    ):
        raise StoreError("artifacts must be a sequence of ArtifactSource (ArtifactSource.file ...)")
    sources = list(artifacts)
    if state_dict is not None:
        sources.insert(0, ArtifactSource.tensors(WEIGHTS_NAME, "weights", state_dict))
    if not sources and base is None:
        raise StoreError("a version needs a state_dict, at least one artifact, or a base")
    check_artifact_set(sources)
    return sources


def _fill(source: ArtifactSource, tmp: Path) -> str:
    """Write ``source`` into ``tmp``, fsync it, and return its SHA-256."""
    if source.kind == "tensors":
        _save_tensors(source, tmp)
        return sha256_file(tmp, fsync=True)
    digest = hashlib.sha256()
    with tmp.open("wb") as fh:
        for chunk in source.chunks():
            digest.update(chunk)
            fh.write(chunk)
        fh.flush()
        os.fsync(fh.fileno())
    return digest.hexdigest()


def _save_tensors(source: ArtifactSource, tmp: Path) -> None:
    from safetensors.torch import save_file

    from abyssal.core.state_flatten import storable_tensors

    # One metadata key at most: safetensors writes several in a random order, and the same tensors
    # must give the same file (and sha256) every time. "format": "pt" is what transformers expects.
    state = source.meta.get("state")
    header = {"abyssal.state": json.dumps(state, sort_keys=True)} if state else {"format": "pt"}
    try:
        save_file(storable_tensors(source.content), tmp, metadata=header)
    except (ValueError, RuntimeError, TypeError, KeyError) as exc:
        raise StoreError(f"cannot save artifact '{source.name}' as safetensors: {exc}") from exc


def _item(path: Path, reason: str) -> GcItem | None:
    try:
        return GcItem(path, path.stat().st_size, reason)
    except FileNotFoundError:  # renamed or removed by its writer meanwhile
        return None


def _modified_before(path: Path, cutoff: float) -> bool:
    """Whether ``path`` was last written before ``cutoff``; False if it has gone meanwhile."""
    try:
        return path.stat().st_mtime < cutoff
    except FileNotFoundError:
        return False
