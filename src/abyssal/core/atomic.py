"""Atomic file writes: a reader sees the old file or the new one, never half of either.

Everything abyssal writes (configs, run records, checkpoints, model store blobs, tables) goes
through a temporary file in the destination folder that is renamed over the destination
(``os.replace``) only once it is complete and fsync'ed; on any error the temporary file is removed.

Every file placed by :func:`move_into_place` gets mode ``0o666`` less the process umask, as
``open()`` would create it (``tempfile.mkstemp`` and safetensors make ``0o600`` files), so a shared
``$ABYSSAL_HOME`` stays readable to the users the umask lets in.

Temporary files are named ``.<label>.pid<pid>.<random>.tmp``: whoever cleans up after a crash
(:meth:`abyssal.core.store.ModelStore.gc`, a checkpoint writer) can tell a live writer's file from a
dead one's with :func:`temp_writer_pid` and :func:`pid_alive`. Appends that must not rewrite a file
(log lines, metric rows) use :func:`append_atomic`: one ``O_APPEND`` write that lands whole.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

TEMP_NAME_RE = re.compile(r"^\..*\.pid(\d+)\.[^.]+\.tmp$")
"""Matches the names of :func:`pid_temp_file`; group 1 is the writer's process id."""

FILE_MODE = 0o666
"""The mode files are created with, before the process umask takes its bits away."""

KEEP_MODE = -1
"""``move_into_place(..., mode=KEEP_MODE)`` leaves the file's mode as it is (a hard link)."""


def umask() -> int:
    """The process umask, read without changing it where Linux tells it (``/proc/self/status``).

    Example:
        >>> umask() == 0o022  # doctest: +SKIP
        True
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    current = os.umask(0o022)  # elsewhere: set and restore (not thread-safe, but brief)
    os.umask(current)
    return current


def new_file_mode() -> int:
    """The mode ``open()`` gives a new file here: ``0o666`` less the umask (``0o644`` usually)."""
    return FILE_MODE & ~umask()


@contextmanager
def pid_temp_file(folder: str | os.PathLike[str], label: str = "") -> Iterator[Path]:
    """A new, empty temporary file in ``folder``, named after ``label`` and this process's id.

    The file is removed when the block ends, unless the block moved it away (e.g. with
    :func:`move_into_place`).

    Args:
        folder: where to create it (created if missing); use the destination's folder (or one on
            the same file system) so that the final rename is atomic.
        label: a readable part of the name, e.g. the destination's file name.

    Example:
        >>> with pid_temp_file(blob_dir, "blob") as tmp:  # doctest: +SKIP
        ...     tmp.write_bytes(b"data")
        ...     move_into_place(tmp, blob_dir / "ab" / "ab12.bin")
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = _create_new_file(folder, f".{label}.pid{os.getpid()}.")
    try:
        yield tmp
    finally:
        tmp.unlink(missing_ok=True)


def _create_new_file(folder: Path, prefix: str) -> Path:
    """A new empty file ``<prefix><random>.tmp`` in ``folder``, with the umask's mode."""
    for _ in range(100):
        path = folder / f"{prefix}{secrets.token_hex(4)}.tmp"
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))
            return path
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary file name '{prefix}*.tmp' in {folder}")


def move_into_place(
    tmp: str | os.PathLike[str], path: str | os.PathLike[str], mode: int | None = None
) -> Path:
    """Rename a complete, fsync'ed temporary file onto ``path`` and make the rename durable.

    Args:
        tmp: the temporary file.
        path: the destination.
        mode: the file's permission bits; ``None`` gives :func:`new_file_mode` (the umask's);
            :data:`KEEP_MODE` leaves them (for a hard link to a file that is not ours to change).

    Returns:
        ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode != KEEP_MODE:
        os.chmod(tmp, new_file_mode() if mode is None else mode)
    os.replace(tmp, path)
    fsync_dir(path.parent)
    return path


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary path beside ``path``, renamed onto it when the block ends without error.

    Example:
        >>> with atomic_path("scores.csv") as tmp:  # doctest: +SKIP
        ...     frame.to_csv(tmp, index=False)
    """
    path = Path(path)
    with pid_temp_file(path.parent, path.name) as tmp:
        yield tmp
        move_into_place(tmp, path)


def write_stream_atomic(path: str | os.PathLike[str], chunks: Iterable[bytes]) -> Path:
    """Write ``chunks`` one after another to ``path`` atomically and durably.

    Only one chunk is held at a time, so a large file costs no more memory than its largest chunk.

    Args:
        path: the destination.
        chunks: the content, in order.

    Returns:
        ``path``.

    Example:
        >>> write_stream_atomic("big.bin", iter(lambda: src.read(1 << 20), b""))  # doctest: +SKIP
        PosixPath('big.bin')
    """
    with atomic_path(path) as tmp, tmp.open("wb") as fh:
        for chunk in chunks:
            fh.write(chunk)
        fh.flush()
        os.fsync(fh.fileno())
    return Path(path)


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically and durably (file and folder fsync'ed)."""
    return write_stream_atomic(path, (data,))


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically and durably."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def link_or_copy_atomic(src: str | os.PathLike[str], path: str | os.PathLike[str]) -> str:
    """Place ``src``'s content at ``path`` atomically: a hard link where possible, else a copy.

    Args:
        src: an existing file.
        path: the destination; an existing file there is replaced.

    Returns:
        ``"link"`` or ``"copy"``: what was done.

    Example:
        >>> link_or_copy_atomic("blobs/ab/ab12.bin", "out/model.bin")  # doctest: +SKIP
        'link'
    """
    path = Path(path)
    with pid_temp_file(path.parent, path.name) as tmp:
        tmp.unlink()
        try:
            os.link(src, tmp)
            how = "link"
        except OSError:  # another file system, or links not supported
            shutil.copyfile(src, tmp)
            with tmp.open("rb+") as fh:
                os.fsync(fh.fileno())
            how = "copy"
        move_into_place(tmp, path, mode=KEEP_MODE if how == "link" else None)
    return how


def append_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Append ``data`` to ``path`` (created if missing) with one ``O_APPEND`` write.

    The write lands whole at the end of the file, also when other processes append at once; a
    process killed mid-call leaves at most a torn last line, never a rewritten file.

    Example:
        >>> append_atomic("log.txt", b"one line\\n")  # doctest: +SKIP
    """
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, FILE_MODE)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def temp_writer_pid(path: str | os.PathLike[str]) -> int | None:
    """The process id in a :func:`pid_temp_file` name, or ``None`` for any other name.

    Example:
        >>> temp_writer_pid(".model.safetensors.pid4242.k3j9x_ab.tmp")
        4242
    """
    found = TEMP_NAME_RE.match(Path(path).name)
    return None if found is None else int(found.group(1))


def pid_alive(pid: int) -> bool:
    """Whether a process with id ``pid`` exists on this machine (it may belong to another user).

    Example:
        >>> pid_alive(os.getpid())
        True
    """
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, but belongs to someone else
        return True
    except OSError:
        return False
    return True


def fsync_dir(folder: Path) -> None:
    """Make a rename durable where the platform allows opening a folder (not on Windows)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
