"""The model store's SQLite schema, its migrations (``PRAGMA user_version``), and connections.

Schema 1 (abyssal 0.1.0): ``versions`` with one ``weights_sha256`` per version, ``aliases``,
``alias_history``. Schema 2 adds the ``artifacts`` table (typed files per version) and the
``versions.base`` column. A new store runs every step from 1, so new and migrated stores have the
same schema. Migration happens once, on first open, in one ``BEGIN IMMEDIATE`` transaction that
re-reads the version inside the lock: of two processes opening an old store at once, one migrates
and the other finds the work done.

``versions`` and ``artifacts`` are immutable (triggers refuse UPDATE and DELETE); ``versions`` is
extended with ``ALTER TABLE ... ADD COLUMN`` only, never rebuilt, since ``aliases`` refers to it.

Reading never writes: :func:`connect_reader` gives a connection that cannot write (``PRAGMA
query_only`` where this process may write the store, so SQLite still tidies its WAL files on
close; a ``mode=ro`` URI where it may not). A WAL database in a folder nobody can write, with no
``-shm`` file (no connection open anywhere), can only be read as ``immutable``; that is the last
resort. A store that does not exist yet reads as an empty one, without creating anything.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from abyssal.core.artifacts import WEIGHTS_NAME
from abyssal.core.errors import AbyssalError, StoreError
from abyssal.core.home import make_folder

SCHEMA_VERSION = 2
"""Stored in ``PRAGMA user_version``; a store written by a newer abyssal is refused."""

SizeOf = Callable[[str], "int | None"]
"""Maps a schema-1 weights sha256 to the size of its file, or ``None`` if the file is missing."""

_V1 = (
    """CREATE TABLE IF NOT EXISTS versions (name TEXT NOT NULL, version INTEGER NOT NULL,
        solution TEXT NOT NULL, created_at TEXT NOT NULL, weights_sha256 TEXT NOT NULL,
        config TEXT NOT NULL, metrics TEXT NOT NULL, lineage TEXT NOT NULL, run_id TEXT,
        PRIMARY KEY (name, version))""",
    """CREATE TABLE IF NOT EXISTS aliases (name TEXT NOT NULL, alias TEXT NOT NULL,
        version INTEGER NOT NULL, PRIMARY KEY (name, alias),
        FOREIGN KEY (name, version) REFERENCES versions (name, version))""",
    """CREATE TABLE IF NOT EXISTS alias_history (id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL, alias TEXT NOT NULL, old_version INTEGER, new_version INTEGER,
        changed_at TEXT NOT NULL, changed_by TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS versions_by_sha ON versions (weights_sha256)",
    """CREATE TRIGGER IF NOT EXISTS versions_no_update BEFORE UPDATE ON versions
        BEGIN SELECT RAISE(ABORT, 'model versions are immutable'); END""",
    """CREATE TRIGGER IF NOT EXISTS versions_no_delete BEFORE DELETE ON versions
        BEGIN SELECT RAISE(ABORT, 'model versions are immutable'); END""",
)

_V2 = (
    "ALTER TABLE versions ADD COLUMN base TEXT",
    """CREATE TABLE artifacts (name TEXT NOT NULL, version INTEGER NOT NULL,
        artifact TEXT NOT NULL, role TEXT NOT NULL, format TEXT NOT NULL,
        sha256 TEXT NOT NULL, size INTEGER, meta TEXT NOT NULL,
        PRIMARY KEY (name, version, artifact),
        FOREIGN KEY (name, version) REFERENCES versions (name, version))""",
    "CREATE INDEX artifacts_by_sha ON artifacts (sha256)",
    """CREATE TRIGGER artifacts_no_update BEFORE UPDATE ON artifacts
        BEGIN SELECT RAISE(ABORT, 'model artifacts are immutable'); END""",
    """CREATE TRIGGER artifacts_no_delete BEFORE DELETE ON artifacts
        BEGIN SELECT RAISE(ABORT, 'model artifacts are immutable'); END""",
)


class StoreDatabase:
    """The store's SQLite file: short-lived connections, one transaction each, the schema in place.

    Args:
        db_path: the database file (``store.db``).
        size_of: file size of a schema-1 weights blob, for a migration.
        timeout_s: how long to wait for another process's lock.

    Example:
        >>> db = StoreDatabase(Path("/tmp/s/store.db"), lambda sha: None, 30.0)  # doctest: +SKIP
        >>> with db.reading() as conn:  # doctest: +SKIP
        ...     conn.execute("SELECT COUNT(*) FROM versions").fetchone()
        (0,)
    """

    def __init__(self, db_path: Path, size_of: SizeOf, timeout_s: float) -> None:
        self.db_path = db_path
        self.size_of = size_of
        self.timeout_s = timeout_s
        self._schema_ready = False

    def writing(self) -> AbstractContextManager[sqlite3.Connection]:
        """A write transaction: ``BEGIN IMMEDIATE`` takes the write lock up front.

        Raises:
            StoreError: the store cannot be opened or written (read-only, damaged, locked).
        """
        return self._session(write=True)

    def reading(self) -> AbstractContextManager[sqlite3.Connection]:
        """A read transaction, on a connection that cannot write (see :func:`connect_reader`).

        Raises:
            StoreError: the store cannot be opened, is damaged, or needs a migration that this
                process cannot write.
        """
        return self._session(write=False)

    @contextmanager
    def _session(self, *, write: bool) -> Iterator[sqlite3.Connection]:
        conn = None
        try:
            conn = self._writer() if write else self._reader()
            conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            yield conn
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if write and ("readonly" in str(exc) or not can_write(self.db_path)):
                raise read_only_error(self.db_path, exc) from exc
            raise StoreError(f"model store '{self.db_path}': {exc}") from exc
        finally:
            if conn is not None:
                if conn.in_transaction:
                    conn.rollback()
                conn.close()

    def _writer(self) -> sqlite3.Connection:
        conn = connect_writer(self.db_path, self.timeout_s)
        try:
            if not self._schema_ready:
                prepare_schema(conn, self.db_path, self.size_of)
                self._schema_ready = True
        except BaseException:
            conn.close()
            raise
        return conn

    def _reader(self) -> sqlite3.Connection:
        """A connection that cannot write; an older store is migrated first (that writes)."""
        if not self._schema_ready and self.db_path.exists():
            self._check_schema()
        return connect_reader(self.db_path, self.timeout_s)

    def _check_schema(self) -> None:
        conn = connect_reader(self.db_path, self.timeout_s)
        try:
            found = schema_version(conn, self.db_path)
        finally:
            conn.close()
        if found < SCHEMA_VERSION:
            if not can_write(self.db_path):
                raise read_only_migration_error(self.db_path, found)
            self._writer().close()  # migrates, inside the write lock
        self._schema_ready = True


def prepare_schema(conn: sqlite3.Connection, db_path: Path, size_of: SizeOf) -> None:
    """Create or migrate the schema to :data:`SCHEMA_VERSION`; refuse a newer one.

    Args:
        conn: an autocommit connection (``isolation_level=None``) to the store database.
        db_path: the database file, for messages.
        size_of: file size of a schema-1 weights blob, to fill ``artifacts.size``.

    Raises:
        StoreError: the store was written by a newer abyssal, or migrating it failed (nothing
            was changed then).
    """
    if schema_version(conn, db_path) == SCHEMA_VERSION:
        return
    _use_wal(conn)
    conn.execute("BEGIN IMMEDIATE")
    try:
        found = schema_version(conn, db_path)  # another process may have migrated meanwhile
        for step in range(found + 1, SCHEMA_VERSION + 1):
            _STEPS[step](conn, size_of)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except sqlite3.Error as exc:
        conn.rollback()
        raise StoreError(
            f"cannot bring model store '{db_path}' to schema version {SCHEMA_VERSION}: {exc}"
        ) from exc
    except BaseException:
        conn.rollback()
        raise


def connect_writer(db_path: Path, timeout_s: float) -> sqlite3.Connection:
    """An autocommit read-write connection, creating the folder and the file when missing.

    Args:
        db_path: the database file (``store.db``).
        timeout_s: how long to wait for another process's write lock.

    Raises:
        StoreError: the folder is a file or cannot be created, or SQLite cannot open the file.

    Example:
        >>> conn = connect_writer(Path("/tmp/store/store.db"), 30.0)  # doctest: +SKIP
    """
    try:
        make_folder(db_path.parent, "model store folder")
    except AbyssalError as exc:
        raise StoreError(str(exc)) from None
    if not os.access(db_path.parent, os.W_OK) or (db_path.exists() and not can_write(db_path)):
        raise read_only_error(db_path, "permission denied")
    try:
        conn = sqlite3.connect(db_path, timeout=timeout_s, isolation_level=None)
        _configure(conn, timeout_s)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open model store '{db_path}': {exc}") from exc
    return conn


def connect_reader(db_path: Path, timeout_s: float) -> sqlite3.Connection:
    """An autocommit connection that cannot write, whatever the store's permissions.

    Args:
        db_path: the database file (``store.db``); when missing, an empty in-memory store with the
            current schema stands in (nothing is created on disk).
        timeout_s: how long to wait for another process's lock.

    Raises:
        StoreError: the store folder is a file, or SQLite cannot open the file.

    Example:
        >>> conn = connect_reader(Path("/srv/shared/abyssal/store.db"), 30.0)  # doctest: +SKIP
        >>> conn.execute("PRAGMA query_only").fetchone()  # doctest: +SKIP
        (1,)
    """
    if db_path.parent.exists() and not db_path.parent.is_dir():
        raise StoreError(f"model store folder '{db_path.parent}' is a file, not a folder")
    try:
        if not db_path.exists():
            return _empty_store()
        if can_write(db_path):
            conn = sqlite3.connect(db_path, timeout=timeout_s, isolation_level=None)
        else:
            conn = _read_only_connection(db_path, timeout_s)
        _configure(conn, timeout_s)
        conn.execute("PRAGMA query_only = ON")
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open model store '{db_path}' for reading: {exc}") from exc
    return conn


def can_write(db_path: Path) -> bool:
    """Whether this process may write the database file and create files beside it (journal)."""
    return os.access(db_path, os.W_OK) and os.access(db_path.parent, os.W_OK)


def read_only_error(db_path: Path, reason: object) -> StoreError:
    """The error for a write to a store that this process may only read."""
    return StoreError(
        f"model store '{db_path}' cannot be written here ({reason}); reading works, but "
        "training, registering, aliases and gc need write access: set ABYSSAL_HOME to a folder "
        "you can write"
    )


def read_only_migration_error(db_path: Path, found: int) -> StoreError:
    """The error for a store that needs migrating but that this process cannot write."""
    return StoreError(
        f"model store '{db_path}' has schema version {found} and must be brought to version "
        f"{SCHEMA_VERSION} before this abyssal can read it, but it is read-only here; open it "
        "once as a user who can write it (e.g. `abyssal models list`)"
    )


def _configure(conn: sqlite3.Connection, timeout_s: float) -> None:
    conn.execute(f"PRAGMA busy_timeout = {int(timeout_s * 1000)}")
    conn.execute("PRAGMA foreign_keys = ON")


def _read_only_connection(db_path: Path, timeout_s: float) -> sqlite3.Connection:
    """``mode=ro``; ``immutable`` when WAL needs a ``-shm`` file that no one can create here."""
    uri = f"file:{urllib.parse.quote(str(db_path.absolute()))}?mode=ro"
    conn = None
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=timeout_s, isolation_level=None)
        conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
        return conn
    except sqlite3.OperationalError:  # "attempt to write a readonly database": no -shm
        if conn is not None:
            conn.close()
    return sqlite3.connect(f"{uri}&immutable=1", uri=True, isolation_level=None)


def _empty_store() -> sqlite3.Connection:
    """An in-memory database with the current schema: what a store not yet created reads as."""
    conn = sqlite3.connect(":memory:", isolation_level=None)
    for step in range(1, SCHEMA_VERSION + 1):
        _STEPS[step](conn, lambda sha256: None)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    conn.execute("PRAGMA query_only = ON")
    return conn


def _use_wal(conn: sqlite3.Connection, timeout_s: float = 30.0) -> None:
    """Switch to WAL. Changing the journal mode does not wait for another process's lock (the
    busy timeout does not apply), so retry until that process (often one creating the same
    store) is done; once any process has switched, the mode is stored in the file."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def schema_version(conn: sqlite3.Connection, db_path: Path) -> int:
    """The store's schema version (``PRAGMA user_version``); a newer one than the code's is refused.

    Raises:
        StoreError: the store was written by a newer abyssal.
    """
    found = conn.execute("PRAGMA user_version").fetchone()[0]
    if found > SCHEMA_VERSION:
        raise StoreError(
            f"model store '{db_path}' has schema version {found}, newer than this "
            f"abyssal understands ({SCHEMA_VERSION}); upgrade abyssal"
        )
    return found


def _to_v1(conn: sqlite3.Connection, size_of: SizeOf) -> None:
    for statement in _V1:
        conn.execute(statement)


def _to_v2(conn: sqlite3.Connection, size_of: SizeOf) -> None:
    """Artifacts table, ``base`` column, and one ``weights`` artifact per existing version."""
    for statement in _V2:
        conn.execute(statement)
    rows = conn.execute("SELECT name, version, weights_sha256 FROM versions").fetchall()
    conn.executemany(
        "INSERT INTO artifacts (name, version, artifact, role, format, sha256, size, meta) "
        "VALUES (?, ?, ?, 'weights', 'safetensors', ?, ?, ?)",
        [
            (name, version, WEIGHTS_NAME, sha, size_of(sha), json.dumps({}))
            for name, version, sha in rows
        ],
    )


_STEPS = {1: _to_v1, 2: _to_v2}
