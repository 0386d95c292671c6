"""The model store's queries, each over one open connection inside the caller's transaction.

:class:`~abyssal.core.store.ModelStore` owns connections, transactions and files; this module holds
the SQL: allocating and inserting a version with its artifacts, resolving a selector, reading
versions back, and the errors that list what exists.
"""

from __future__ import annotations

import getpass
import socket
import sqlite3
from typing import Any

from abyssal.core.artifacts import ArtifactRecord
from abyssal.core.clock import utc_now
from abyssal.core.errors import StoreError
from abyssal.core.versions import (
    LATEST,
    ModelVersion,
    artifact_from_row,
    to_json,
    version_from_row,
)

VERSION_COLUMNS = (
    "name, version, solution, created_at, weights_sha256, config, metrics, lineage, run_id, base"
)
READ_COLUMNS = "name, version, solution, created_at, config, metrics, lineage, run_id, base"
ARTIFACT_COLUMNS = "name, version, artifact, role, format, sha256, size, meta"


def insert_version(conn: sqlite3.Connection, record: dict[str, Any]) -> int:
    """Insert ``record`` as version max+1 of its name, with its artifacts.

    Call inside ``BEGIN IMMEDIATE``, so that no other writer allocates the same number.

    Args:
        conn: the connection holding the write lock.
        record: the ``versions`` columns (without ``version``) plus ``artifacts``, a list of
            :class:`ArtifactRecord`.

    Returns:
        The new version number.
    """
    (latest,) = conn.execute(
        "SELECT COALESCE(MAX(version), 0) FROM versions WHERE name = ?", (record["name"],)
    ).fetchone()
    row = {**record, "version": latest + 1}
    conn.execute(
        f"INSERT INTO versions ({VERSION_COLUMNS}) VALUES "
        "(:name, :version, :solution, :created_at, :weights_sha256, :config, :metrics, "
        ":lineage, :run_id, :base)",
        row,
    )
    conn.executemany(
        f"INSERT INTO artifacts ({ARTIFACT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [_artifact_row(row["name"], row["version"], a) for a in record["artifacts"]],
    )
    return row["version"]


def select_version(conn: sqlite3.Connection, root: object, name: str, selector: str | None) -> int:
    """The version number ``selector`` (None, "latest", "3" or an alias) means for ``name``.

    Raises:
        StoreError: an unknown name or selector; the message lists the choices (``root`` is the
            store folder, for the message).
    """
    versions = versions_of(conn, root, name)
    if selector is None or selector == LATEST:
        return versions[-1]
    if selector.isdecimal() and int(selector) in versions:
        return int(selector)
    target = alias_target(conn, name, selector)
    if target is None:
        raise unknown_ref(conn, root, name, selector)
    return target


def versions_of(conn: sqlite3.Connection, root: object, name: str) -> list[int]:
    """The versions of ``name``, ascending; an unknown name raises listing the known ones."""
    require_name(conn, root, name)
    rows = conn.execute("SELECT version FROM versions WHERE name = ? ORDER BY version", (name,))
    return [row[0] for row in rows]


def require_name(conn: sqlite3.Connection, root: object, name: str) -> None:
    """Raise :class:`StoreError` listing the known models unless ``name`` has a version."""
    found = conn.execute("SELECT 1 FROM versions WHERE name = ? LIMIT 1", (name,)).fetchone()
    if found is None:
        known = ", ".join(known_names(conn)) or "(none: the store is empty)"
        raise StoreError(f"unknown model '{name}' in '{root}'; known models: {known}")


def alias_target(conn: sqlite3.Connection, name: str, alias: str) -> int | None:
    """The version ``name:alias`` points at, or ``None``."""
    row = conn.execute(
        "SELECT version FROM aliases WHERE name = ? AND alias = ?", (name, alias)
    ).fetchone()
    return None if row is None else row[0]


def unknown_ref(conn: sqlite3.Connection, root: object, name: str, selector: str) -> StoreError:
    """An error for ``name:selector`` that lists the model's versions and aliases."""
    require_name(conn, root, name)
    rows = conn.execute("SELECT version FROM versions WHERE name = ? ORDER BY version", (name,))
    versions = ", ".join(str(row[0]) for row in rows)
    aliases = ", ".join(f"{a} -> {v}" for a, v in alias_map(conn, name).items()) or "(none)"
    return StoreError(
        f"model '{name}' has no version or alias '{selector}'; "
        f"versions: {versions}; aliases: {aliases}"
    )


def fetch_versions(conn: sqlite3.Connection, where: str, params: tuple) -> list[ModelVersion]:
    """Versions matching ``where`` (trusted SQL over name and version), by name then version."""
    rows = conn.execute(
        f"SELECT {READ_COLUMNS} FROM versions WHERE {where} ORDER BY name, version", params
    ).fetchall()
    artifacts: dict[tuple[str, int], list[ArtifactRecord]] = {}
    for row in conn.execute(f"SELECT {ARTIFACT_COLUMNS} FROM artifacts WHERE {where}", params):
        artifacts.setdefault((row[0], row[1]), []).append(artifact_from_row(row[2:]))
    pointed: dict[tuple[str, int], list[str]] = {}
    for name, alias, version in conn.execute(
        "SELECT name, alias, version FROM aliases ORDER BY alias"
    ):
        pointed.setdefault((name, version), []).append(alias)
    return [
        version_from_row(row, artifacts.get(row[:2], []), pointed.get(row[:2], [])) for row in rows
    ]


def known_names(conn: sqlite3.Connection) -> list[str]:
    """Every model name with a version, sorted."""
    return [row[0] for row in conn.execute("SELECT DISTINCT name FROM versions ORDER BY name")]


def alias_map(conn: sqlite3.Connection, name: str) -> dict[str, int]:
    """Alias -> version for ``name``, sorted by alias."""
    rows = conn.execute("SELECT alias, version FROM aliases WHERE name = ? ORDER BY alias", (name,))
    return dict(rows.fetchall())


def record_move(
    conn: sqlite3.Connection, name: str, alias: str, old: int | None, new: int | None
) -> None:
    """Append an alias change (set, moved or removed) to ``alias_history``, with time and actor."""
    conn.execute(
        "INSERT INTO alias_history (name, alias, old_version, new_version, changed_at, changed_by) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (name, alias, old, new, utc_now(), _actor()),
    )


def _artifact_row(name: str, version: int, artifact: ArtifactRecord) -> tuple:
    meta = to_json(artifact.meta, f"artifact '{artifact.name}' meta")
    a = artifact
    return (name, version, a.name, a.role, a.format, a.sha256, a.size, meta)


def _actor() -> str:
    try:
        user = getpass.getuser()
    except Exception:  # no USER variable and no passwd entry, e.g. in some containers
        user = "unknown"
    return f"{user}@{socket.gethostname()}"
