"""The model store: immutable model versions in SQLite plus content-addressed safetensors files.

Layout under the root (``$ABYSSAL_HOME``, default ``~/.abyssal``)::

    store.db                                   SQLite (WAL): versions, aliases, alias history
    blobs/<sha[:2]>/<sha256>.safetensors       weights, named by the SHA-256 of the file

A version is written in two steps: the weights file first (atomically: temporary file, fsync,
``os.replace``), then the row, in one ``BEGIN IMMEDIATE`` transaction that also allocates the
version number. A crash between the steps leaves at most an unreferenced file, which
:meth:`ModelStore.gc` removes; never a half-registered version. Every public method opens its own
short-lived connection, so several threads or processes may use one store at once. Loading never
unpickles.

Example:
    >>> import torch
    >>> store = ModelStore(tmp_path)
    >>> mv = store.register("fraud-gnn", {"w": torch.ones(2)}, solution="fraud", config={},
    ...                     metrics={"auc": 0.91})
    >>> mv.ref
    'fraud-gnn:1'
    >>> store.set_alias("fraud-gnn", "production", 1)
    >>> store.load_weights("fraud-gnn:production")["w"]
    tensor([1., 1.])
"""

from __future__ import annotations

import contextlib
import getpass
import hashlib
import os
import socket
import sqlite3
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from abyssal.core.atomic import write_bytes_atomic
from abyssal.core.errors import StoreError
from abyssal.core.lineage import version_lineage
from abyssal.core.versions import (
    LATEST,
    AliasMove,
    ModelVersion,
    check_alias,
    check_metrics,
    check_name,
    config_changes,
    contiguous_cpu,
    metric_deltas,
    parse_ref,
    serialise,
    to_json,
    version_from_row,
)

if TYPE_CHECKING:
    import torch

SCHEMA_VERSION = 1
"""Stored in ``PRAGMA user_version``; a store written by a newer abyssal is refused."""

BUSY_TIMEOUT_S = 30.0
"""How long a connection waits for another process's write lock before giving up."""

STALE_TEMP_S = 3600.0
"""Temporary weight files older than this were left by a crash; ``gc()`` removes them."""

_SCHEMA = (
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

_VERSION_COLUMNS = (
    "name, version, solution, created_at, weights_sha256, config, metrics, lineage, run_id"
)


class ModelStore:
    """Register, resolve and load immutable model versions.

    Refs are ``"name:3"`` (a version), ``"name:production"`` (an alias), ``"name:latest"`` or
    ``"name"`` (the newest version). Nothing is created on disk until first use.

    Args:
        root: the store folder; ``None`` uses ``$ABYSSAL_HOME`` or ``~/.abyssal``.

    Example:
        >>> store = ModelStore("/tmp/store")
        >>> [mv.ref for mv in store.list_versions("fraud-gnn")]
        ['fraud-gnn:1', 'fraud-gnn:2']
    """

    def __init__(self, root: str | Path | None = None) -> None:
        if root is None:
            root = os.environ.get("ABYSSAL_HOME") or "~/.abyssal"
        self.root = Path(root).expanduser().absolute()
        self.db_path = self.root / "store.db"
        self.blob_dir = self.root / "blobs"
        self._schema_ready = False

    def __repr__(self) -> str:
        return f"ModelStore('{self.root}')"

    def register(
        self,
        name: str,
        state_dict: dict[str, torch.Tensor],
        *,
        solution: str,
        config: dict[str, Any],
        metrics: dict[str, Any],
        lineage: dict[str, Any] | None = None,
        run_id: str | None = None,
    ) -> ModelVersion:
        """Save weights and metadata as the next version of ``name``.

        Everything is validated before anything is written.

        Args:
            name: model name, ``[A-Za-z0-9][A-Za-z0-9_.-]*``, at most 64 characters.
            state_dict: parameter name -> tensor; each is copied to its own contiguous CPU memory,
                so tied weights and views are fine.
            solution: the solution that built the model.
            config: the resolved config; must be JSON-serialisable.
            metrics: metric name -> finite number (or bool, str, None).
            lineage: caller lineage (``data_fingerprint``, ``parent`` ref, ...), merged over
                :func:`~abyssal.core.lineage.code_lineage`; ``parent`` must be a stored version.
            run_id: the run that produced the model, if any.

        Returns:
            The new version.

        Raises:
            StoreError: a bad name, state dict, metric, config or lineage, or an unknown parent.

        Example:
            >>> store.register("mlp", model.state_dict(), solution="fraud", config=cfg,
            ...                metrics={"auc": 0.93}, lineage={"parent": "mlp:production"}).ref
            'mlp:4'
        """
        check_name(name)
        if not isinstance(solution, str) or not solution:
            raise StoreError(f"solution must be a non-empty string, got {solution!r}")
        tensors = contiguous_cpu(state_dict)
        record = {
            "name": name,
            "solution": solution,
            "config": to_json(config, "config"),
            "metrics": to_json(check_metrics(metrics), "metrics"),
            "lineage": to_json(version_lineage(lineage, self._pinned_ref), "lineage"),
            "run_id": None if run_id is None else str(run_id),
        }
        data = serialise(tensors)
        record["weights_sha256"] = hashlib.sha256(data).hexdigest()
        self._write_blob(record["weights_sha256"], data)
        record["created_at"] = _now()
        record["version"] = self._commit_version(record, data)
        return self.get(name, record["version"])

    def set_alias(self, name: str, alias: str, version: int) -> None:
        """Point ``name:alias`` at ``version``, creating or moving the alias; the move is recorded.

        Args:
            name: the model name.
            alias: ``[A-Za-z][A-Za-z0-9_-]*``, not ``latest``.
            version: an existing version of ``name``.

        Example:
            >>> store.set_alias("fraud-gnn", "production", 3)
        """
        check_alias(alias)
        if isinstance(version, bool) or not isinstance(version, int):
            raise StoreError(f"alias version must be an integer, got {version!r}")
        with self._transaction() as conn:
            if version not in self._versions_of(conn, name):
                raise self._unknown_ref(conn, name, str(version))
            old = self._alias_target(conn, name, alias)
            conn.execute(
                "INSERT INTO aliases (name, alias, version) VALUES (?, ?, ?) "
                "ON CONFLICT (name, alias) DO UPDATE SET version = excluded.version",
                (name, alias, version),
            )
            _record_move(conn, name, alias, old, version)

    def remove_alias(self, name: str, alias: str) -> None:
        """Delete ``name:alias``; the removal is recorded in :meth:`alias_history`.

        Example:
            >>> store.remove_alias("fraud-gnn", "candidate")
        """
        with self._transaction() as conn:
            self._require_name(conn, name)
            old = self._alias_target(conn, name, alias)
            if old is None:
                raise self._unknown_ref(conn, name, alias)
            conn.execute("DELETE FROM aliases WHERE name = ? AND alias = ?", (name, alias))
            _record_move(conn, name, alias, old, None)

    def gc(self) -> int:
        """Delete weight files no version references and temporary files older than an hour.

        Holds the write lock while it runs, so a concurrent :meth:`register` either commits first
        (its file is kept) or re-writes its file after (see :meth:`_commit_version`).

        Returns:
            The number of files deleted.

        Example:
            >>> store.gc()
            0
        """
        removed = 0
        with self._transaction() as conn:
            used = {row[0] for row in conn.execute("SELECT DISTINCT weights_sha256 FROM versions")}
            orphans = [p for p in self.blob_dir.glob("*/*.safetensors") if p.stem not in used]
            cutoff = time.time() - STALE_TEMP_S
            stale = [p for p in self.blob_dir.glob("*/.*.tmp") if _modified_before(p, cutoff)]
            for path in orphans + stale:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                    removed += 1
        return removed

    def resolve(self, ref: str | ModelVersion) -> ModelVersion:
        """The version a ref means: ``"name:3"``, ``"name:alias"``, ``"name:latest"``, ``"name"``.

        Raises:
            StoreError: an unknown name (known names are listed) or an unknown version or alias (the
                model's versions and aliases are listed).

        Example:
            >>> store.resolve("fraud-gnn").version
            3
        """
        if isinstance(ref, ModelVersion):
            ref = ref.ref  # re-read: checks it belongs to this store and refreshes its aliases
        name, selector = parse_ref(ref)
        with self._reading() as conn:
            version = self._select_version(conn, name, selector)
            return self._fetch(conn, "name = ? AND version = ?", (name, version))[0]

    def get(self, name: str, version: int) -> ModelVersion:
        """Version ``version`` of ``name``; an unknown one raises :class:`StoreError` with choices.

        Example:
            >>> store.get("fraud-gnn", 1).ref
            'fraud-gnn:1'
        """
        with self._reading() as conn:
            found = self._fetch(conn, "name = ? AND version = ?", (name, version))
            if not found:
                raise self._unknown_ref(conn, name, str(version))
            return found[0]

    def list_versions(self, name: str | None = None) -> list[ModelVersion]:
        """All versions, or those of ``name``, sorted by name then version.

        Example:
            >>> [mv.ref for mv in store.list_versions()]
            ['a:1', 'a:2', 'b:1']
        """
        with self._reading() as conn:
            if name is None:
                return self._fetch(conn, "1", ())
            self._require_name(conn, name)
            return self._fetch(conn, "name = ?", (name,))

    def names(self) -> list[str]:
        """The names of all stored models, sorted.

        Example:
            >>> store.names()
            ['a', 'b']
        """
        with self._reading() as conn:
            return _known_names(conn)

    def aliases(self, name: str) -> dict[str, int]:
        """Alias -> version for ``name``.

        Example:
            >>> store.aliases("fraud-gnn")
            {'candidate': 4, 'production': 3}
        """
        with self._reading() as conn:
            self._require_name(conn, name)
            return _alias_map(conn, name)

    def alias_history(self, name: str) -> list[AliasMove]:
        """Every alias change of ``name``, oldest first.

        Example:
            >>> [(m.alias, m.old_version, m.new_version) for m in store.alias_history("fraud-gnn")]
            [('production', None, 1), ('production', 1, 3)]
        """
        with self._reading() as conn:
            self._require_name(conn, name)
            rows = conn.execute(
                "SELECT name, alias, old_version, new_version, changed_at, changed_by "
                "FROM alias_history WHERE name = ? ORDER BY id",
                (name,),
            ).fetchall()
        return [AliasMove(*row) for row in rows]

    def load_weights(self, ref: str | ModelVersion) -> dict[str, torch.Tensor]:
        """The state dict of a version, after checking the file's SHA-256 (no unpickling).

        Args:
            ref: a ref string or a :class:`ModelVersion`.

        Returns:
            Parameter name -> CPU tensor, with the dtypes that were registered.

        Raises:
            StoreError: the weights file is missing or corrupted.

        Example:
            >>> model.load_state_dict(store.load_weights("fraud-gnn:production"))
        """
        from safetensors.torch import load_file

        mv = self.resolve(ref)
        path = self._blob_path(mv.weights_sha256)
        if not path.is_file():
            raise StoreError(f"{mv.ref}: weights file '{path}' is missing")
        found = _file_sha256(path)
        if found != mv.weights_sha256:
            raise StoreError(
                f"{mv.ref}: weights file '{path}' is corrupted "
                f"(sha256 {found}, expected {mv.weights_sha256})"
            )
        return load_file(path, device="cpu")

    def compare(self, ref_a: str, ref_b: str) -> dict[str, Any]:
        """Metrics, config and lineage of two versions side by side.

        Returns:
            ``{"a": ref, "b": ref, "metrics": {key: {"a", "b", "delta"}}, "config_changes":
            {dotted.key: (a, b)}, "lineage": {"a", "b"}, "same_weights": bool}``; ``delta`` is
            ``b - a`` when both are numbers, else ``None``; a missing value is ``None``.

        Example:
            >>> store.compare("fraud-gnn:1", "fraud-gnn:2")["metrics"]["auc"]
            {'a': 0.9, 'b': 0.93, 'delta': 0.03...}
        """
        a, b = self.resolve(ref_a), self.resolve(ref_b)
        return {
            "a": a.ref,
            "b": b.ref,
            "metrics": metric_deltas(a.metrics, b.metrics),
            "config_changes": config_changes(a.config, b.config),
            "lineage": {"a": a.lineage, "b": b.lineage},
            "same_weights": a.weights_sha256 == b.weights_sha256,
        }

    def _pinned_ref(self, ref: str) -> str:
        """``"name:version"`` for ``ref``: it keeps meaning this version when aliases move."""
        return self.resolve(ref).ref

    def _commit_version(self, record: dict[str, Any], data: bytes) -> int:
        """Allocate the next version number and insert the row, in one write transaction."""
        with self._transaction() as conn:
            # A gc() between writing the file and taking the lock may have removed it; write again.
            self._write_blob(record["weights_sha256"], data)
            return self._insert_version(conn, record)

    def _insert_version(self, conn: sqlite3.Connection, record: dict[str, Any]) -> int:
        """Insert ``record`` as version max+1 of its name (call inside ``BEGIN IMMEDIATE``)."""
        (latest,) = conn.execute(
            "SELECT COALESCE(MAX(version), 0) FROM versions WHERE name = ?", (record["name"],)
        ).fetchone()
        row = {**record, "version": latest + 1}
        conn.execute(
            f"INSERT INTO versions ({_VERSION_COLUMNS}) VALUES "
            "(:name, :version, :solution, :created_at, :weights_sha256, :config, :metrics, "
            ":lineage, :run_id)",
            row,
        )
        return row["version"]

    def _blob_path(self, sha256: str) -> Path:
        return self.blob_dir / sha256[:2] / f"{sha256}.safetensors"

    def _write_blob(self, sha256: str, data: bytes) -> Path:
        """Write ``data`` to its content address atomically; an intact existing file is kept."""
        path = self._blob_path(sha256)
        if path.is_file() and path.stat().st_size == len(data):
            return path
        try:
            return write_bytes_atomic(path, data)
        except OSError as exc:
            raise StoreError(f"cannot write weights file '{path}': {exc}") from exc

    def _select_version(self, conn: sqlite3.Connection, name: str, selector: str | None) -> int:
        """The version number ``selector`` (None, "latest", "3" or an alias) means for ``name``."""
        versions = self._versions_of(conn, name)
        if selector is None or selector == LATEST:
            return versions[-1]
        if selector.isdecimal() and int(selector) in versions:
            return int(selector)
        target = self._alias_target(conn, name, selector)
        if target is None:
            raise self._unknown_ref(conn, name, selector)
        return target

    def _versions_of(self, conn: sqlite3.Connection, name: str) -> list[int]:
        """The versions of ``name``, ascending; an unknown name raises listing the known ones."""
        self._require_name(conn, name)
        rows = conn.execute("SELECT version FROM versions WHERE name = ? ORDER BY version", (name,))
        return [row[0] for row in rows]

    def _require_name(self, conn: sqlite3.Connection, name: str) -> None:
        found = conn.execute("SELECT 1 FROM versions WHERE name = ? LIMIT 1", (name,)).fetchone()
        if found is None:
            known = ", ".join(_known_names(conn)) or "(none: the store is empty)"
            raise StoreError(f"unknown model '{name}' in '{self.root}'; known models: {known}")

    def _alias_target(self, conn: sqlite3.Connection, name: str, alias: str) -> int | None:
        row = conn.execute(
            "SELECT version FROM aliases WHERE name = ? AND alias = ?", (name, alias)
        ).fetchone()
        return None if row is None else row[0]

    def _unknown_ref(self, conn: sqlite3.Connection, name: str, selector: str) -> StoreError:
        """An error for ``name:selector`` that lists the model's versions and aliases."""
        self._require_name(conn, name)
        rows = conn.execute("SELECT version FROM versions WHERE name = ? ORDER BY version", (name,))
        versions = ", ".join(str(row[0]) for row in rows)
        aliases = ", ".join(f"{a} -> {v}" for a, v in _alias_map(conn, name).items()) or "(none)"
        return StoreError(
            f"model '{name}' has no version or alias '{selector}'; "
            f"versions: {versions}; aliases: {aliases}"
        )

    def _fetch(self, conn: sqlite3.Connection, where: str, params: tuple) -> list[ModelVersion]:
        """Versions matching ``where`` (trusted SQL), with their aliases, by name then version."""
        rows = conn.execute(
            f"SELECT {_VERSION_COLUMNS} FROM versions WHERE {where} ORDER BY name, version", params
        ).fetchall()
        pointed: dict[tuple[str, int], list[str]] = {}
        for name, alias, version in conn.execute(
            "SELECT name, alias, version FROM aliases ORDER BY alias"
        ):
            pointed.setdefault((name, version), []).append(alias)
        return [version_from_row(row, pointed.get((row[0], row[1]), [])) for row in rows]

    def _connect(self) -> sqlite3.Connection:
        """A new autocommit connection with the busy timeout set and the schema in place."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.db_path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open model store '{self.db_path}': {exc}") from exc
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            conn.execute("PRAGMA foreign_keys = ON")
            if not self._schema_ready:
                self._create_schema(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _create_schema(self, conn: sqlite3.Connection) -> None:
        """Switch to WAL and create the tables once; refuse a store from a newer abyssal."""
        found = conn.execute("PRAGMA user_version").fetchone()[0]
        if found > SCHEMA_VERSION:
            raise StoreError(
                f"model store '{self.db_path}' has schema version {found}, newer than this "
                f"abyssal understands ({SCHEMA_VERSION}); upgrade abyssal"
            )
        if found < SCHEMA_VERSION:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("BEGIN IMMEDIATE")
            for statement in _SCHEMA:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        self._schema_ready = True

    @contextmanager
    def _session(self, begin: str) -> Iterator[sqlite3.Connection]:
        """One connection and one transaction; sqlite errors become :class:`StoreError`."""
        conn = None
        try:
            conn = self._connect()
            conn.execute(begin)
            yield conn
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StoreError(f"model store '{self.db_path}': {exc}") from exc
        finally:
            if conn is not None:
                if conn.in_transaction:
                    conn.rollback()
                conn.close()

    def _transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        """A write transaction: ``BEGIN IMMEDIATE`` takes the write lock up front."""
        return self._session("BEGIN IMMEDIATE")

    def _reading(self) -> AbstractContextManager[sqlite3.Connection]:
        """A read transaction, so that several queries see one snapshot."""
        return self._session("BEGIN")


def _known_names(conn: sqlite3.Connection) -> list[str]:
    return [row[0] for row in conn.execute("SELECT DISTINCT name FROM versions ORDER BY name")]


def _alias_map(conn: sqlite3.Connection, name: str) -> dict[str, int]:
    rows = conn.execute("SELECT alias, version FROM aliases WHERE name = ? ORDER BY alias", (name,))
    return dict(rows.fetchall())


def _record_move(
    conn: sqlite3.Connection, name: str, alias: str, old: int | None, new: int | None
) -> None:
    conn.execute(
        "INSERT INTO alias_history (name, alias, old_version, new_version, changed_at, changed_by) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (name, alias, old, new, _now(), _actor()),
    )


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _actor() -> str:
    try:
        user = getpass.getuser()
    except Exception:  # no USER variable and no passwd entry, e.g. in some containers
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _modified_before(path: Path, cutoff: float) -> bool:
    """Whether ``path`` was last written before ``cutoff``; False if it has gone meanwhile."""
    try:
        return path.stat().st_mtime < cutoff
    except FileNotFoundError:
        return False
