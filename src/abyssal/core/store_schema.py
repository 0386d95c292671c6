"""The model store's SQLite schema and its migrations (``PRAGMA user_version``).

Schema 1 (abyssal 0.1.0): ``versions`` with one ``weights_sha256`` per version, ``aliases``,
``alias_history``. Schema 2 adds the ``artifacts`` table (typed files per version) and the
``versions.base`` column. A new store runs every step from 1, so new and migrated stores have the
same schema. Migration happens once, on first open, in one ``BEGIN IMMEDIATE`` transaction that
re-reads the version inside the lock: of two processes opening an old store at once, one migrates
and the other finds the work done.

``versions`` and ``artifacts`` are immutable (triggers refuse UPDATE and DELETE); ``versions`` is
extended with ``ALTER TABLE ... ADD COLUMN`` only, never rebuilt, since ``aliases`` refers to it.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from abyssal.core.artifacts import WEIGHTS_NAME
from abyssal.core.errors import StoreError

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
    if _checked_version(conn, db_path) == SCHEMA_VERSION:
        return
    _use_wal(conn)
    conn.execute("BEGIN IMMEDIATE")
    try:
        found = _checked_version(conn, db_path)  # another process may have migrated meanwhile
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


def _checked_version(conn: sqlite3.Connection, db_path: Path) -> int:
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
