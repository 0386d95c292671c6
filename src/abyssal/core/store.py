"""The model store: immutable model versions in SQLite plus content-addressed artifact files.

Layout under the root (``$ABYSSAL_HOME``, default ``~/.abyssal``)::

    store.db                               SQLite (WAL): versions, artifacts, aliases, history
    blobs/<sha[:2]>/<sha256>.<format>      artifact files, named by the SHA-256 of their content

A version holds typed artifacts (:mod:`abyssal.core.artifacts`): its weights, an adapter over a
``base`` version, ONNX, quantized weights, a tokenizer, ... It is written in two steps: the files
first (streamed to a temporary file, hashed, fsync'ed, renamed to their address), then the version
row and its artifact rows in one ``BEGIN IMMEDIATE`` transaction that also allocates the version
number. A crash between the steps leaves at most unreferenced files, which :meth:`ModelStore.gc`
removes; never a half-registered version. Every public method opens its own short-lived
connection, so several threads or processes may use one store at once. Methods that only read
(resolve, list, show, load) open a connection that cannot write and create nothing, so a store
this process may not write (a shared, read-only ``$ABYSSAL_HOME``) can still be read; only a store
that must first be migrated needs write access. Loading never unpickles.

Example:
    >>> import torch
    >>> store = ModelStore(tmp_path)
    >>> mv = store.register("fraud-gnn", {"w": torch.ones(2)}, solution="fraud", config={},
    ...                     metrics={"auc": 0.91})
    >>> mv.ref, mv.artifacts[0].name
    ('fraud-gnn:1', 'model.safetensors')
    >>> store.set_alias("fraud-gnn", "production", 1)
    >>> store.load_weights("fraud-gnn:production")["w"]
    tensor([1., 1.])
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from abyssal.core import store_sql as sql
from abyssal.core.artifacts import ArtifactRecord, ArtifactSource, ExternalBase
from abyssal.core.atomic import link_or_copy_atomic
from abyssal.core.blobs import STALE_TEMP_S, BlobFolder, GcItem, GcReport, sources_to_write
from abyssal.core.clock import utc_now
from abyssal.core.errors import StoreError
from abyssal.core.home import abyssal_home
from abyssal.core.lineage import version_lineage
from abyssal.core.store_schema import SCHEMA_VERSION, StoreDatabase
from abyssal.core.versions import (
    AliasMove,
    ModelVersion,
    check_alias,
    check_metrics,
    check_name,
    config_changes,
    encode_base,
    metric_deltas,
    parse_ref,
    to_json,
)

if TYPE_CHECKING:
    import torch

__all__ = [
    "BUSY_TIMEOUT_S",
    "MAX_CHAIN",
    "SCHEMA_VERSION",
    "STALE_TEMP_S",
    "ArtifactRecord",
    "ArtifactSource",
    "ExternalBase",
    "GcItem",
    "GcReport",
    "ModelStore",
    "ModelVersion",
]

BUSY_TIMEOUT_S = 30.0
"""How long a connection waits for another process's write lock before giving up."""

MAX_CHAIN = 32
"""The most versions a chain of bases may hold (a version, its base, its base's base, ...)."""


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
        self.root = abyssal_home(root).absolute()
        self.db_path = self.root / "store.db"
        self.blob_dir = self.root / "blobs"
        self.blobs = BlobFolder(self.blob_dir)
        self.database = StoreDatabase(
            self.db_path, lambda sha256: self._legacy_weights_size(sha256), BUSY_TIMEOUT_S
        )

    def __repr__(self) -> str:
        return f"ModelStore('{self.root}')"

    def register(
        self,
        name: str,
        state_dict: dict[str, Any] | None = None,
        *,
        artifacts: Sequence[ArtifactSource] = (),
        base: str | ExternalBase | None = None,
        solution: str,
        config: dict[str, Any],
        metrics: dict[str, Any],
        lineage: dict[str, Any] | None = None,
        run_id: str | None = None,
    ) -> ModelVersion:
        """Store artifacts and metadata as the next version of ``name``.

        Everything is validated before anything is written; the files are written first, then
        the version and its artifacts in one transaction.

        Args:
            name: model name, ``[A-Za-z0-9][A-Za-z0-9_.-]*``, at most 64 characters.
            state_dict: shorthand for ``ArtifactSource.tensors("model.safetensors", "weights",
                state_dict)``; tied weights, views, quantized tensors, tuples, dtypes and scalars
                are fine (see :func:`~abyssal.core.state_flatten.flatten_state`).
            artifacts: further artifacts; names unique, at most one with role ``weights``.
            base: what the version builds on: a ref to a stored version of the same solution
                (pinned to ``"name:version"``), or an :class:`ExternalBase`. A version base also
                becomes ``lineage["parent"]`` unless the caller gives one.
            solution: the solution that built the model.
            config: the resolved config; must be JSON-serialisable.
            metrics: metric name -> finite number (or bool, str, None).
            lineage: caller lineage (``data_fingerprint``, ``parent`` ref, ...), merged over
                :func:`~abyssal.core.lineage.code_lineage`; ``parent`` must be a stored version.
            run_id: the run that produced the model, if any.

        Returns:
            The new version.

        Raises:
            StoreError: a bad name, artifact, state dict, metric, config, lineage or base; no
                artifact and no base; an unknown parent or base.

        Example:
            >>> store.register("mlp", model.state_dict(), solution="fraud", config=cfg,
            ...                metrics={"auc": 0.93}, lineage={"parent": "mlp:production"}).ref
            'mlp:4'
            >>> adapter = ArtifactSource.tensors("adapter_model.safetensors", "adapter", lora)
            >>> store.register("mlp-lora", artifacts=[adapter], base="mlp:4", solution="fraud",
            ...                config=cfg, metrics={}).base
            'mlp:4'
        """
        check_name(name)
        if not isinstance(solution, str) or not solution:
            raise StoreError(f"solution must be a non-empty string, got {solution!r}")
        sources = sources_to_write(state_dict, artifacts, base)
        pinned = self._pinned_base(base, solution)
        record = {
            "name": name,
            "solution": solution,
            "config": to_json(config, "config"),
            "metrics": to_json(check_metrics(metrics), "metrics"),
            "lineage": to_json(self._lineage(lineage, pinned), "lineage"),
            "run_id": None if run_id is None else str(run_id),
            "base": encode_base(pinned),
        }
        written = [(source, self.blobs.write(source)) for source in sources]
        record["artifacts"] = [artifact for _, artifact in written]
        weights = [a.sha256 for a in record["artifacts"] if a.role == "weights"]
        record["weights_sha256"] = weights[0] if weights else ""
        record["created_at"] = utc_now()
        version = self._commit_version(record, written)
        return self.get(name, version)

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
            if version not in sql.versions_of(conn, self.root, name):
                raise sql.unknown_ref(conn, self.root, name, str(version))
            old = sql.alias_target(conn, name, alias)
            conn.execute(
                "INSERT INTO aliases (name, alias, version) VALUES (?, ?, ?) "
                "ON CONFLICT (name, alias) DO UPDATE SET version = excluded.version",
                (name, alias, version),
            )
            sql.record_move(conn, name, alias, old, version)

    def remove_alias(self, name: str, alias: str) -> None:
        """Delete ``name:alias``; the removal is recorded in :meth:`alias_history`.

        Example:
            >>> store.remove_alias("fraud-gnn", "candidate")
        """
        with self._transaction() as conn:
            sql.require_name(conn, self.root, name)
            old = sql.alias_target(conn, name, alias)
            if old is None:
                raise sql.unknown_ref(conn, self.root, name, alias)
            conn.execute("DELETE FROM aliases WHERE name = ? AND alias = ?", (name, alias))
            sql.record_move(conn, name, alias, old, None)

    def gc(self, dry_run: bool = False) -> GcReport:
        """Delete files no artifact references and temporary files of writers that are gone.

        A temporary file named with its writer's pid is removed once that process is no longer
        running; one without (left by older abyssal) once it is older than :data:`STALE_TEMP_S`.
        Holds the write lock while it deletes, so a concurrent :meth:`register` either commits
        first (its files are kept) or writes its files again after (see :meth:`_commit_version`).

        Args:
            dry_run: only list what would be deleted.

        Returns:
            The files found (path, bytes, reason), their totals, and how many were deleted.

        Example:
            >>> report = store.gc(dry_run=True)
            >>> [(e.path.name, e.reason) for e in report.items]
            [('ab12...ef.safetensors', 'no version references it')]
            >>> store.gc().removed
            1
        """
        with self._reading() if dry_run else self._transaction() as conn:
            rows = conn.execute("SELECT DISTINCT sha256, format FROM artifacts")
            referenced = {f"{sha}.{fmt}" for sha, fmt in rows}
            return self.blobs.sweep(referenced, dry_run=dry_run)

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
            version = sql.select_version(conn, self.root, name, selector)
            return sql.fetch_versions(conn, "name = ? AND version = ?", (name, version))[0]

    def get(self, name: str, version: int) -> ModelVersion:
        """Version ``version`` of ``name``; an unknown one raises :class:`StoreError` with choices.

        Example:
            >>> store.get("fraud-gnn", 1).ref
            'fraud-gnn:1'
        """
        with self._reading() as conn:
            found = sql.fetch_versions(conn, "name = ? AND version = ?", (name, version))
            if not found:
                raise sql.unknown_ref(conn, self.root, name, str(version))
            return found[0]

    def list_versions(self, name: str | None = None) -> list[ModelVersion]:
        """All versions, or those of ``name``, sorted by name then version.

        Example:
            >>> [mv.ref for mv in store.list_versions()]
            ['a:1', 'a:2', 'b:1']
        """
        with self._reading() as conn:
            if name is None:
                return sql.fetch_versions(conn, "1", ())
            sql.require_name(conn, self.root, name)
            return sql.fetch_versions(conn, "name = ?", (name,))

    def versions_of_run(self, run_id: str) -> list[ModelVersion]:
        """The versions a run registered, by name then version (none for most runs).

        Example:
            >>> [mv.ref for mv in store.versions_of_run("20261128-101502-fraud-3f9a")]
            ['fraud:4']
        """
        with self._reading() as conn:
            where = "(name, version) IN (SELECT name, version FROM versions WHERE run_id = ?)"
            return sql.fetch_versions(conn, where, (str(run_id),))

    def check_writable(self) -> None:
        """Make sure versions can be registered here, before a long job that ends by registering.

        Takes the write lock once, runs SQLite's ``PRAGMA quick_check`` over the database, and
        writes and removes a file in ``blobs/``; nothing is changed.

        Raises:
            StoreError: the store folder is a file or read-only, the database is damaged (what
                SQLite found is quoted), or ``blobs/`` cannot be written.

        Example:
            >>> ModelStore("/mnt/read-only").check_writable()
            Traceback (most recent call last):
            StoreError: model store '/mnt/read-only/store.db' cannot be written here (permission...
        """
        with self._transaction() as conn:
            problems = [row[0] for row in conn.execute("PRAGMA quick_check(5)")]
        if problems != ["ok"]:
            raise StoreError(f"model store '{self.db_path}' is damaged: {'; '.join(problems)}")
        try:
            self.blobs.check_writable()
        except OSError as exc:
            raise StoreError(
                f"model store files '{self.blob_dir}' cannot be written here: {exc}"
            ) from exc

    def names(self) -> list[str]:
        """The names of all stored models, sorted.

        Example:
            >>> store.names()
            ['a', 'b']
        """
        with self._reading() as conn:
            return sql.known_names(conn)

    def aliases(self, name: str) -> dict[str, int]:
        """Alias -> version for ``name``.

        Example:
            >>> store.aliases("fraud-gnn")
            {'candidate': 4, 'production': 3}
        """
        with self._reading() as conn:
            sql.require_name(conn, self.root, name)
            return sql.alias_map(conn, name)

    def alias_history(self, name: str) -> list[AliasMove]:
        """Every alias change of ``name``, oldest first.

        Example:
            >>> [(m.alias, m.old_version, m.new_version) for m in store.alias_history("fraud-gnn")]
            [('production', None, 1), ('production', 1, 3)]
        """
        with self._reading() as conn:
            sql.require_name(conn, self.root, name)
            rows = conn.execute(
                "SELECT name, alias, old_version, new_version, changed_at, changed_by "
                "FROM alias_history WHERE name = ? ORDER BY id",
                (name,),
            ).fetchall()
        return [AliasMove(*row) for row in rows]

    def chain(self, ref: str | ModelVersion) -> list[ModelVersion | ExternalBase]:
        """The version, its base, its base's base, ... ending with a root version or external base.

        Raises:
            StoreError: a cycle, or more than :data:`MAX_CHAIN` links.

        Example:
            >>> [str(link if isinstance(link, ExternalBase) else link.ref)
            ...  for link in store.chain("text-lora:2")]
            ['text-lora:2', 'text:3', 'huggingface:/models/bert-base']
        """
        links: list[ModelVersion | ExternalBase] = [self.resolve(ref)]
        seen = {links[0].ref}
        while isinstance(links[-1], ModelVersion) and links[-1].base is not None:
            base = links[-1].base
            if isinstance(base, ExternalBase):
                links.append(base)
                break
            if base in seen or len(links) >= MAX_CHAIN:
                path = " -> ".join(link.ref for link in links if isinstance(link, ModelVersion))
                why = "a cycle" if base in seen else f"more than {MAX_CHAIN} links"
                raise StoreError(
                    f"the chain of bases of {links[0].ref} has {why}: {path} -> {base}"
                )
            seen.add(base)
            links.append(self.resolve(base))
        return links

    def artifact_path(self, ref: str | ModelVersion, name: str) -> Path:
        """The file of artifact ``name`` of a version, after checking its SHA-256.

        Raises:
            StoreError: no such artifact (the version's are listed), or the file is missing or
                corrupted (the message names the version, the artifact and the path).

        Example:
            >>> store.artifact_path("text:3", "tokenizer.json").name
            '9f86d08...15b0f00a08.json'
        """
        mv = self.resolve(ref)
        return self.blobs.verified(mv.artifact(name), mv.ref)

    def load_tensors(self, ref: str | ModelVersion, name: str | None = None) -> dict[str, Any]:
        """A safetensors artifact as a state dict (non-dense values rebuilt), after its SHA-256.

        Args:
            ref: a ref string or a :class:`ModelVersion`.
            name: the artifact; the version's ``weights`` artifact when ``None``.

        Returns:
            Name -> CPU tensor (or quantized tensor, tuple, dtype, scalar), as registered.

        Raises:
            StoreError: no such artifact, not safetensors, or a missing or corrupted file.

        Example:
            >>> store.load_tensors("text-lora:1", "adapter_model.safetensors").keys()
            dict_keys(['lora_a', 'lora_b'])
        """
        from safetensors.torch import load_file

        from abyssal.core.state_flatten import unflatten_state

        mv = self.resolve(ref)
        record = self._weights_of(mv) if name is None else mv.artifact(name)
        if record.format != "safetensors":
            raise StoreError(
                f"{mv.ref}: artifact '{record.name}' is {record.format}, not safetensors"
            )
        path = self.blobs.verified(record, mv.ref)
        return unflatten_state(load_file(path, device="cpu"), record.meta.get("state", {}))

    def load_weights(self, ref: str | ModelVersion) -> dict[str, torch.Tensor]:
        """The state dict of a version's own ``weights`` artifact (no unpickling).

        Args:
            ref: a ref string or a :class:`ModelVersion`.

        Returns:
            Parameter name -> CPU tensor, with the dtypes that were registered.

        Raises:
            StoreError: the version has no weights, or the file is missing or corrupted.

        Example:
            >>> model.load_state_dict(store.load_weights("fraud-gnn:production"))
        """
        return self.load_tensors(ref)

    def materialize(self, ref: str | ModelVersion, folder: str | Path) -> Path:
        """Every artifact of a version as ``folder/<artifact name>``, e.g. for ``from_pretrained``.

        Files are hard links to the (read-only) blobs where the file system allows, else copies;
        each is checked against its SHA-256 first and placed atomically.

        Returns:
            ``folder`` (created if missing).

        Raises:
            StoreError: an artifact's file is missing or corrupted.

        Example:
            >>> sorted(p.name for p in store.materialize("text-lora:1", "out").iterdir())
            ['adapter_config.json', 'adapter_model.safetensors']
        """
        mv = self.resolve(ref)
        folder = Path(folder)
        for record in mv.artifacts:
            source = self.blobs.verified(record, mv.ref)
            try:
                link_or_copy_atomic(source, folder / record.name)
            except OSError as exc:
                raise StoreError(f"{mv.ref}: cannot write '{folder / record.name}': {exc}") from exc
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def compare(self, ref_a: str, ref_b: str) -> dict[str, Any]:
        """Metrics, config and lineage of two versions side by side.

        Returns:
            ``{"a": ref, "b": ref, "metrics": {key: {"a", "b", "delta"}}, "config_changes":
            {dotted.key: (a, b)}, "lineage": {"a", "b"}, "same_weights": bool}``; ``delta`` is
            ``b - a`` when both are numbers, else ``None``; a missing value is ``None``;
            ``same_weights`` is true only when both have weights and they are identical.

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
            "same_weights": a.weights_sha256 is not None and a.weights_sha256 == b.weights_sha256,
        }

    def _pinned_ref(self, ref: str) -> str:
        """``"name:version"`` for ``ref``: it keeps meaning this version when aliases move."""
        return self.resolve(ref).ref

    def _pinned_base(
        self, base: str | ExternalBase | None, solution: str
    ) -> str | ExternalBase | None:
        """A base ref pinned to ``"name:version"`` and checked; other bases as they are."""
        if base is None or isinstance(base, ExternalBase):
            return base
        if not isinstance(base, str):
            raise StoreError(
                f"base must be a ref like 'name:3', an ExternalBase or None, got {base!r}"
            )
        try:
            mv = self.resolve(base)
        except StoreError as exc:
            raise StoreError(f"base '{base}' does not exist: {exc}") from None
        if mv.solution != solution:
            raise StoreError(f"base {mv.ref} belongs to solution '{mv.solution}', not '{solution}'")
        return mv.ref

    def _lineage(
        self, caller: dict[str, Any] | None, base: str | ExternalBase | None
    ) -> dict[str, Any]:
        """Code lineage under the caller's; a version base is the parent unless one is given."""
        if isinstance(base, str) and (caller is None or isinstance(caller, dict)):
            caller = {"parent": base, **(caller or {})}
        return version_lineage(caller, self._pinned_ref)

    def _weights_of(self, mv: ModelVersion) -> ArtifactRecord:
        if mv.weights is None:
            names = ", ".join(f"{a.name} ({a.role})" for a in mv.artifacts) or "(none)"
            raise StoreError(
                f"{mv.ref} has no weights artifact; its artifacts: {names}; "
                "name one, or load the whole chain with abyssal.solutions.loading.load_model"
            )
        return mv.weights

    def _commit_version(
        self, record: dict[str, Any], written: list[tuple[ArtifactSource, ArtifactRecord]]
    ) -> int:
        """Allocate the next version number and insert the rows, in one write transaction."""
        with self._transaction() as conn:
            # A gc() between writing the files and taking the lock may have removed them.
            for source, artifact in written:
                self.blobs.ensure(source, artifact)
            return self._insert_version(conn, record)

    def _insert_version(self, conn: sqlite3.Connection, record: dict[str, Any]) -> int:
        """Insert the version and its artifacts (a seam for tests that crash mid-transaction)."""
        return sql.insert_version(conn, record)

    def _legacy_weights_size(self, sha256: str) -> int | None:
        """Size of a schema-1 weights file, for the migration; ``None`` if it is missing."""
        try:
            return self.blobs.path(sha256, "safetensors").stat().st_size
        except OSError:
            return None

    def _transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        """A write transaction: ``BEGIN IMMEDIATE`` takes the write lock up front."""
        return self.database.writing()

    def _reading(self) -> AbstractContextManager[sqlite3.Connection]:
        """A read transaction (one snapshot) on a connection that cannot write."""
        return self.database.reading()
