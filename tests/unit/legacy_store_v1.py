"""A store as abyssal 0.1.0 wrote it (schema version 1), for the migration tests.

The DDL and the INSERT statements are copied from ``src/abyssal/core/store.py`` at the 0.1.0
release, so that the tests do not depend on git or on the current code: a version row with one
``weights_sha256``, blobs at ``blobs/<sha[:2]>/<sha256>.safetensors``, aliases with history.
"""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import torch
from safetensors.torch import save

V1_SCHEMA = (
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


class V1Store:
    """Writes a schema-1 store the way abyssal 0.1.0 did.

    Args:
        root: the store folder.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(root / "store.db", isolation_level=None)
        self.conn.execute("PRAGMA journal_mode = WAL")
        self.conn.execute("BEGIN IMMEDIATE")
        for statement in V1_SCHEMA:
            self.conn.execute(statement)
        self.conn.execute("PRAGMA user_version = 1")
        self.conn.execute("COMMIT")

    def register(self, name: str, weights: dict[str, torch.Tensor], created_at: str) -> str:
        """Write the weights blob and the row; returns the weights sha256."""
        data = save({k: v.contiguous() for k, v in weights.items()})
        sha = hashlib.sha256(data).hexdigest()
        blob = self.root / "blobs" / sha[:2] / f"{sha}.safetensors"
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        (latest,) = self.conn.execute(
            "SELECT COALESCE(MAX(version), 0) FROM versions WHERE name = ?", (name,)
        ).fetchone()
        row = {
            "name": name,
            "version": latest + 1,
            "solution": "fraud",
            "created_at": created_at,
            "weights_sha256": sha,
            "config": '{"lr": 0.1}',
            "metrics": '{"auc": 0.5}',
            "lineage": '{"package_version": "0.1.0"}',
            "run_id": "run-1",
        }
        self.conn.execute(
            f"INSERT INTO versions ({_VERSION_COLUMNS}) VALUES "
            "(:name, :version, :solution, :created_at, :weights_sha256, :config, :metrics, "
            ":lineage, :run_id)",
            row,
        )
        return sha

    def set_alias(self, name: str, alias: str, old: int | None, new: int, at: str) -> None:
        """Point ``name:alias`` at ``new`` and record the move."""
        self.conn.execute(
            "INSERT INTO aliases (name, alias, version) VALUES (?, ?, ?) "
            "ON CONFLICT (name, alias) DO UPDATE SET version = excluded.version",
            (name, alias, new),
        )
        self.conn.execute(
            "INSERT INTO alias_history (name, alias, old_version, new_version, changed_at, "
            "changed_by) VALUES (?, ?, ?, ?, ?, ?)",
            (name, alias, old, new, at, "ann@host"),
        )

    def close(self) -> None:
        self.conn.close()
